"""ci/module_cycles.py on small crates written here (stdlib unittest, so ci/check.sh runs it
without the venv: `python3 -m unittest discover -s ci/tests -p 'test_module_cycles.py'`)."""

import contextlib
import io
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import module_cycles  # noqa: E402


def run(files: dict[str, str]) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for name, text in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_text(text)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = module_cycles.main([str(src)])
        return rc, out.getvalue().replace(str(src), "src")


class ModuleCycles(unittest.TestCase):
    def test_layers_pass(self):
        rc, out = run({
            "lib.rs": "mod a;\nmod b;\nuse a::X;\n",
            "a.rs": "use crate::b::{self, Y as Z};\npub struct X;\n",
            "b.rs": "pub struct Y;\n",
        })
        self.assertEqual(rc, 0, out)
        self.assertIn("no import cycle", out)

    def test_a_call_through_a_full_path_is_an_edge(self):
        rc, out = run({
            "lib.rs": "mod a;\nmod b;\n",
            "a.rs": "use crate::b::Y;\npub fn f() {}\n",
            "b.rs": "pub struct Y;\nfn g() { crate::a::f() }\n",
        })
        self.assertEqual(rc, 1, out)
        self.assertIn("crate::b -> crate::a  (src/b.rs:2)", out)

    def test_a_parent_and_a_child_that_use_each_other(self):
        rc, out = run({
            "lib.rs": "mod api;\n",
            "api.rs": "mod streams;\nuse streams::Item;\npub struct Api;\n",
            "api/streams.rs": "use super::{Api};\npub struct Item;\n",
        })
        self.assertEqual(rc, 1, out)
        self.assertIn("crate::api, crate::api::streams", out)

    def test_comments_and_strings_are_not_edges(self):
        rc, out = run({
            "lib.rs": "mod a;\nmod b;\n",
            "a.rs": "use crate::b::Y;\n",
            "b.rs": "// crate::a::f\n/* use crate::a; */\nconst S: &str = \"crate::a::f\";\npub struct Y;\n",
        })
        self.assertEqual(rc, 0, out)

    def test_folders_form_layers_too(self):
        rc, out = run({
            "lib.rs": "mod send;\nmod delivery;\n",
            "send.rs": "pub mod commit;\n",
            "send/commit.rs": "use crate::delivery::recent::Tail;\npub struct Committer;\n",
            "delivery.rs": "pub mod recent;\npub mod stream;\n",
            "delivery/recent.rs": "pub struct Tail;\n",
            "delivery/stream.rs": "use crate::send::commit::Committer;\n",
        })
        self.assertEqual(rc, 1, out)
        self.assertIn("top-level modules and folders:", out)
        self.assertIn("crate::delivery -> crate::send", out)


if __name__ == "__main__":
    unittest.main()

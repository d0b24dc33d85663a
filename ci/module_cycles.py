#!/usr/bin/env python3
"""Import cycles between the modules of a Rust crate: exits 1 and names each cycle if any.

    ci/module_cycles.py chat/src group/src      one crate per source folder
    ci/module_cycles.py --edges chat/src        also print every edge (module -> module file:line)

Why a script and not a cargo tool: cargo-cycles 0.2.0 (tried) reads only `use` items, so a
call through a full path (`crate::api::message_pb(..)` in chat's wire.rs) is no edge to it; it
counts `mod` declarations as edges, so a child test module that uses its parent is a cycle; and
it checks the whole workspace at once. cargo-modules (not tried) builds on rust-analyzer's
crates, a long build on CI's two cores. Reading the source as text is enough for the question
asked: which module names which.

The modules are the files under the folder (`a.rs` and `a/mod.rs` are `a`, `a/b.rs` is `a::b`;
`lib.rs` is the crate root; `main.rs` and `bin/` are separate crates and are left out). An edge
A -> B is any path in A, in a `use` item or in code, that starts with `crate::`, `super::` or
`self::` or a child module's name, and names B or an item of B. Test code counts: a test that imports a module is a
dependency like any other. A path to the module's own items, or to the crate root's items
(re-exports in lib.rs), is no edge; the root is the wiring and may name every module.

The same check runs again on the crate's top-level modules, each folder taken as one (an edge
`send::commit -> delivery::recent` is `send -> delivery`), so that the folders form layers too.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text: str) -> str:
    """Blanks comments, string and char literals, keeping line breaks (for line numbers)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not re.match(r"\w", text[i - 1])):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + len(hashes) + 2)
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i : j + 1]))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}'), not a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_of(src: Path, file: Path) -> tuple[str, ...] | None:
    rel = file.relative_to(src)
    parts = list(rel.with_suffix("").parts)
    if parts in (["lib"],):
        return ()
    if parts == ["main"] or parts[0] == "bin":
        return None
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def use_paths(tree: str) -> list[str]:
    """Expands a use tree (`a::{b, c::{d as e}}`) into its paths (`a::b`, `a::c::d`)."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)
    paths: list[str] = []

    def expand(prefix: str, s: str) -> None:
        # Splits s at top-level commas.
        depth, start = 0, 0
        for k, ch in enumerate(s + ","):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                one(prefix, s[start:k])
                start = k + 1

    def one(prefix: str, item: str) -> None:
        if not item:
            return
        brace = item.find("{")
        if brace >= 0 and item.endswith("}"):
            expand(prefix + item[:brace], item[brace + 1 : -1])
        else:
            paths.append(prefix + item)

    expand("", tree)
    return paths


USE_RE = re.compile(r"\buse\s+([^;]*);", re.S)
PATH_RE = re.compile(r"(?<![\w:])((?:crate|super|self)(?:\s*::\s*(?:" + IDENT + r"|\*))+)")


def resolve(path: str, here: tuple[str, ...], modules: set[tuple[str, ...]]) -> tuple[str, ...] | None:
    segs = [s for s in re.split(r"\s*::\s*", path) if s]
    if not segs:
        return None
    if segs[0] == "crate":
        base: list[str] = []
    elif segs[0] in ("self", "super"):
        base = list(here)
    elif here + (segs[0],) in modules:
        base = list(here)  # a child module, named without `self::`
    else:
        return None  # an external crate or a local name
    rest = segs
    if rest[0] == "crate":
        rest = rest[1:]
    while rest and rest[0] in ("self", "super"):
        if rest[0] == "super":
            if not base:
                return None
            base.pop()
        rest = rest[1:]
    target = tuple(base)
    for seg in rest:
        if target + (seg,) in modules:
            target = target + (seg,)
        else:
            break
    return target


def crate_graph(src: Path):
    files = {}
    for f in sorted(src.rglob("*.rs")):
        m = module_of(src, f)
        if m is not None:
            files[m] = f
    modules = set(files)
    edges: dict[tuple, dict[tuple, tuple[Path, int]]] = {m: {} for m in modules}
    for here, f in files.items():
        text = strip_comments_and_strings(f.read_text())
        found: list[tuple[str, int]] = []
        spans = []
        for m in USE_RE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            for p in use_paths(m.group(1)):
                found.append((p, line))
            spans.append((m.start(), m.end()))
        children = [c[-1] for c in modules if len(c) == len(here) + 1 and c[:-1] == here]
        path_re = PATH_RE
        if children:
            heads = "|".join(["crate", "super", "self"] + [re.escape(c) for c in children])
            path_re = re.compile(
                r"(?<![\w:])((?:" + heads + r")(?:\s*::\s*(?:" + IDENT + r"|\*))+)"
            )
        for m in path_re.finditer(text):
            if any(a <= m.start() < b for a, b in spans):
                continue
            found.append((m.group(1), text.count("\n", 0, m.start()) + 1))
        for p, line in found:
            target = resolve(p, here, modules)
            if target is None or target == here or target == ():
                continue
            edges[here].setdefault(target, (f, line))
    return modules, edges


def cycles(modules, edges) -> list[list[tuple]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    out: list[list[tuple]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return out


def top_level(modules, edges):
    """The graph of the top-level modules, each with everything below it."""
    tops = {m[:1] for m in modules if m}
    out: dict[tuple, dict[tuple, tuple[Path, int]]] = {t: {} for t in tops}
    for a in sorted(edges):
        for b, where in sorted(edges[a].items()):
            if a[:1] and b[:1] and a[:1] != b[:1]:
                out[a[:1]].setdefault(b[:1], where)
    return tops, out


def report(src, what, modules, edges) -> bool:
    found = cycles(modules, edges)
    if not found:
        print(f"{src}: {len(modules)} {what}, no import cycle")
        return True
    print(f"{src}: {len(found)} import cycle(s) among {len(modules)} {what}:")
    for comp in found:
        members = set(comp)
        print("  " + ", ".join(name(m) for m in comp))
        for a in comp:
            for b, (f, line) in sorted(edges[a].items()):
                if b in members:
                    print(f"    {name(a)} -> {name(b)}  ({f}:{line})")
    return False


def name(m: tuple[str, ...]) -> str:
    return "::".join(("crate",) + m)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edges", action="store_true", help="print every edge too")
    ap.add_argument("src", nargs="+", type=Path, help="a crate's source folder, e.g. chat/src")
    args = ap.parse_args(argv)
    failed = False
    for src in args.src:
        modules, edges = crate_graph(src)
        if args.edges:
            for a in sorted(edges):
                for b, (f, line) in sorted(edges[a].items()):
                    print(f"{src}: {name(a)} -> {name(b)}  ({f}:{line})")
        if not report(src, "modules", modules, edges):
            failed = True
        if not report(src, "top-level modules and folders", *top_level(modules, edges)):
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

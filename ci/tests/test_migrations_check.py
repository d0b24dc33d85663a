"""ci/migrations_check.py: the backward-compatibility rule for new migrations, on SQL written here."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import migrations_check  # noqa: E402

NEW = "29991231000000"  # newer than any baseline


def check(tmp_path: Path, sql: str, version: str = NEW, *flags: str) -> tuple[int, str]:
    (tmp_path / f"{version}_test.sql").write_text(sql)
    return run(tmp_path, *flags)


def run(directory: Path, *flags: str) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = migrations_check.main([*flags, str(directory)])
    return rc, err.getvalue()


SAFE = """
-- Adds only: old pods never notice.
create table chat.pins (
    conversation_id uuid not null,
    pinned_at timestamptz not null default now(),
    constraint pins_pkey primary key (conversation_id)
);
alter table chat.messages add column edited_at timestamptz;
alter table chat.messages add column flags integer not null default 0;
create index messages_edited_idx on chat.messages (edited_at);
comment on column chat.messages.flags is 'do not rename or drop column; see notes';
create function chat.purge() returns void language plpgsql as $body$
begin
    drop table if exists chat.scratch; -- a function's body runs later, not here
end;
$body$;
"""


def test_a_migration_that_only_adds_passes(tmp_path):
    rc, err = check(tmp_path, SAFE)

    assert rc == 0, err


BREAKING = [
    ("drop-table", "drop table chat.pins;"),
    ("drop-column", "alter table chat.messages drop column flags;"),
    ("drop-function", "drop function chat.purge();"),
    ("rename", "alter table chat.messages rename column flags to bits;"),
    ("rename", "alter table chat.pins rename constraint pins_pkey to pins_pk;"),
    ("alter-type", "alter table chat.messages alter column flags type bigint;"),
    ("alter-type", "alter table chat.messages alter column flags set data type bigint;"),
    ("set-not-null", "alter table chat.messages alter column edited_at set not null;"),
    ("drop-default", "alter table chat.messages alter column flags drop default;"),
    ("required-column", "alter table chat.messages add column edited_by uuid not null;"),
    ("required-column", "alter table chat.messages add column a int default 0, add column b uuid not null;"),
    ("truncate", "truncate chat.pins;"),
    ("add-constraint", "alter table chat.pins add constraint pins_at_check check (pinned_at > '2020-01-01');"),
    ("add-constraint", "alter table chat.pins add unique (pinned_at);"),
    ("unique-index", "create unique index pins_at_key on chat.pins (pinned_at);"),
]


@pytest.mark.parametrize("rule,sql", BREAKING, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BREAKING)])
def test_a_breaking_statement_fails_naming_its_rule_and_line(tmp_path, rule, sql):
    rc, err = check(tmp_path, SAFE + "\n-- the change\n" + sql + "\n")

    assert rc == 1
    assert f"_test.sql:{SAFE.count(chr(10)) + 3}: {rule}:" in err, err


def test_a_reviewed_exception_names_its_rule_and_reason(tmp_path):
    sql = ("-- migration-compat: allow drop-column: nothing reads it since 0.3.0\n"
           "alter table chat.messages drop column flags;\n")

    rc, err = check(tmp_path, sql)

    assert rc == 0, err


@pytest.mark.parametrize("marker", [
    "-- migration-compat: allow rename: another rule\n",
    "-- migration-compat: allow drop-column:\n",  # no reason
    "-- migration-compat: allow drop-column: one statement only\nselect 1;\n",  # not this statement
])
def test_a_marker_for_another_rule_or_statement_or_without_a_reason_allows_nothing(tmp_path, marker):
    rc, err = check(tmp_path, marker + "alter table chat.messages drop column flags;\n")

    assert rc == 1
    assert "drop-column" in err


def test_words_in_strings_and_comments_are_not_statements(tmp_path):
    sql = ("insert into chat.notes (body) values ('we will rename and drop column x; truncate');\n"
           "/* drop table chat.pins; */\n")

    rc, err = check(tmp_path, sql)

    assert rc == 0, err


def test_migrations_up_to_the_baseline_are_not_checked_unless_asked(tmp_path):
    (tmp_path / f"{migrations_check.BASELINE}_old.sql").write_text("drop table chat.pins;\n")

    assert run(tmp_path)[0] == 0
    assert run(tmp_path, "--all")[0] == 1


def test_the_repositorys_migrations_pass():
    assert migrations_check.main([]) == 0

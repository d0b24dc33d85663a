#!/usr/bin/env python3
"""Every new migration must be backward-compatible with the version that is running.

The chart applies migrations from a Helm hook before the new pods start (charts/chat,
templates/migrate-job.yaml): for the whole rollout, the old version's pods serve on the new
schema. So a migration may only add: new tables, nullable columns or columns with a default,
indexes, functions. What it must not do, without a reviewed plan (expand, deploy, then contract
in a later release), is listed in RULES: each statement that matches one fails this check.

A reviewed exception carries, in a comment inside the statement (or on the lines just above it),
the marker `migration-compat: allow <rule>: <why>`, e.g.

    -- migration-compat: allow drop-column: nothing reads it since 0.3.0 (see migrations/README.md)
    alter table chat.messages drop column legacy_flags;

Migrations up to BASELINE predate the rule and are not checked (an applied migration is never
edited: sqlx checks their checksums). Offline, no database: the SQL is read, not run.

    ci/migrations_check.py [--all] [DIR]      DIR defaults to migrations/
"""

import re
import sys
from pathlib import Path

# The newest migration when the rule was introduced; every later one is checked.
BASELINE = "20261207120000"

MARKER = re.compile(r"migration-compat:[ \t]*allow[ \t]+([a-z-]+)[ \t]*:[ \t]*(\S[^\n]*)")

# (rule, pattern on the statement without comments or string literals, why it breaks old pods)
RULES = [
    ("drop-table", r"\bdrop\s+(table|view|materialized\s+view|schema|sequence|type)\b",
     "old pods still read and write it"),
    ("drop-column", r"\bdrop\s+column\b", "old pods still select or insert it"),
    ("drop-function", r"\bdrop\s+(function|procedure)\b", "old pods still call it"),
    ("rename", r"\brename\b",
     "old pods use the old name (tables, columns, and constraint names that code matches on)"),
    ("alter-type", r"\balter\s+column\s+\S+\s+(set\s+data\s+)?type\b",
     "old pods bind and decode the old type"),
    ("set-not-null", r"\bset\s+not\s+null\b", "old pods insert rows without a value"),
    ("drop-default", r"\bdrop\s+default\b", "old pods insert rows relying on it"),
    ("truncate", r"\btruncate\b", "deletes what old pods serve"),
    ("add-constraint", r"\badd\s+(constraint\s+\S+\s+)?(check|unique|foreign\s+key|primary\s+key|exclude)\b",
     "old pods may write rows it refuses"),
    ("unique-index", r"\bcreate\s+unique\s+index\b", "old pods may write rows it refuses"),
]


def statements(sql: str) -> list[tuple[int, str]]:
    """Splits SQL at `;` outside comments, quotes and dollar-quoted bodies: (first line, text)."""
    result, start, i, line = [], 0, 0, 1
    start_line = 1
    while i < len(sql):
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
            continue
        if sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = len(sql) if end < 0 else end + 2
            line += sql.count("\n", i, end)
            i = end
            continue
        if sql[i] == "'":
            end = i + 1
            while end < len(sql):
                if sql[end] == "'" and sql.startswith("''", end):
                    end += 2
                    continue
                if sql[end] == "'":
                    break
                end += 1
            line += sql.count("\n", i, end)
            i = end + 1
            continue
        tag = re.match(r"\$[A-Za-z_]*\$", sql[i:])
        if tag:
            end = sql.find(tag.group(0), i + len(tag.group(0)))
            end = len(sql) if end < 0 else end + len(tag.group(0))
            line += sql.count("\n", i, end)
            i = end
            continue
        if sql[i] == "\n":
            line += 1
        if sql[i] == ";":
            result.append((start_line, sql[start:i + 1]))
            start, start_line = i + 1, line
        i += 1
    if sql[start:].strip():
        result.append((start_line, sql[start:]))
    return result


def code_of(statement: str) -> str:
    """The statement in lower case without comments, string literals or dollar-quoted bodies
    (a function's body runs later, not in the migration)."""
    text = re.sub(r"--[^\n]*", " ", statement)
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"'(?:[^']|'')*'", "''", text)
    text = re.sub(r"(\$[A-Za-z_]*\$).*?\1", "$$", text, flags=re.S)
    return " ".join(text.lower().split())


def adds_required_column(code: str) -> bool:
    """`add column ... not null` without a default: old pods' inserts leave it empty."""
    for clause in re.split(r",\s*(?=add\b|alter\b|drop\b)", code):
        if re.search(r"\badd\s+column\b", clause) or re.match(r"alter\s+table\b.*\badd\s+(?!constraint\b)", clause):
            if re.search(r"\bnot\s+null\b", clause) and not re.search(r"\bdefault\b", clause):
                return True
    return False


def violations(path: Path) -> list[str]:
    found = []
    for line, statement in statements(path.read_text()):
        code = code_of(statement)
        # Report the line where the statement's code starts, after its leading comments.
        line += re.match(r"(?:\s|--[^\n]*|/\*.*?\*/)*", statement, re.S).group(0).count("\n")
        allowed = {m.group(1) for m in MARKER.finditer(statement)}
        broken = [(rule, why) for rule, pattern, why in RULES if re.search(pattern, code)]
        if adds_required_column(code):
            broken.append(("required-column", "old pods insert rows without it (add a default)"))
        for rule, why in broken:
            if rule not in allowed:
                found.append(f"{path}:{line}: {rule}: {why}: `{code[:100]}`\n"
                             f"    (reviewed and safe? say why: -- migration-compat: allow {rule}: <why>)")
    return found


def main(argv: list[str]) -> int:
    check_all = "--all" in argv
    args = [a for a in argv if a != "--all"]
    directory = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "migrations"
    migrations = sorted(directory.glob("*.sql"))
    if not migrations:
        print(f"no migrations in {directory}", file=sys.stderr)
        return 1
    checked = [m for m in migrations if check_all or m.name.split("_", 1)[0] > BASELINE]
    problems = [p for m in checked for p in violations(m)]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"migrations-check: {len(checked)} of {len(migrations)} migrations checked "
          f"(newer than {BASELINE}{', and --all' if check_all else ''}), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

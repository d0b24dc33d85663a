# shellcheck shell=bash
# Shared helpers for the ci/ scripts. Source it; don't execute it.
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Provides:
#   REPO                      absolute path of the repository root
#   log / warn / die          messages on stderr, prefixed with the calling script
#   now / elapsed_since T     wall-clock timing (seconds, one decimal)
#   step NAME CMD...          runs CMD and prints one "name ... ok (1.2s)" line
#   on_exit CMD               queues CMD to run when the shell exits (LIFO)
#   setup_path                puts ~/.cargo/bin, .venv/bin and ci/node_modules/.bin on PATH
#   ensure_postgres           exports DATABASE_URL for a reachable PostgreSQL (see below)

if [[ -n "${CI_LIB_LOADED:-}" ]]; then
    return 0
fi
CI_LIB_LOADED=1

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO

CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export CARGO_HOME

# The generated gRPC code is checked in; should sqlx query macros be added, they must read a committed .sqlx/
# data instead of a live database, so every build is the same with or without DATABASE_URL.
export SQLX_OFFLINE="${SQLX_OFFLINE:-true}"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$(basename "$0")" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$(basename "$0")" "$*" >&2
    exit 1
}

now() { date +%s.%N; }

# Seconds since T (from `now`), with one decimal.
elapsed_since() {
    awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.1fs", end - start }'
}

# step NAME CMD... : run CMD, then print one line with the outcome and the time it took.
step() {
    local name="$1" start rc=0
    shift
    start="$(now)"
    "$@" || rc=$?
    if [[ $rc -eq 0 ]]; then
        printf '  %-34s ok (%s)\n' "$name" "$(elapsed_since "$start")" >&2
    else
        printf '  %-34s FAILED with exit code %d (%s)\n' "$name" "$rc" "$(elapsed_since "$start")" >&2
    fi
    return "$rc"
}

# Exit hooks. A single EXIT trap runs every queued command, newest first, so several
# helpers (a throwaway database, a background server) can each register their own cleanup.
CI_EXIT_HOOKS=()
ci_run_exit_hooks() {
    local i
    for ((i = ${#CI_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
        eval "${CI_EXIT_HOOKS[i]}" || true
    done
    CI_EXIT_HOOKS=()
}
# Drops every queued exit hook (for a caller that wants what they would clean up to outlive it).
clear_exit_hooks() {
    CI_EXIT_HOOKS=()
    trap - EXIT
}
on_exit() {
    CI_EXIT_HOOKS+=("$1")
    trap ci_run_exit_hooks EXIT
    # Bash does not run the EXIT trap when killed by SIGTERM; exiting from the handler does.
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

setup_path() {
    local dir
    for dir in "$REPO/ci/node_modules/.bin" "$REPO/.venv/bin" "$CARGO_HOME/bin"; do
        case ":$PATH:" in
            *":$dir:"*) ;;
            *) PATH="$dir:$PATH" ;;
        esac
    done
    export PATH
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
#
# ensure_postgres exports DATABASE_URL, choosing the first that works:
#   1. DATABASE_URL, if already set (used as is);
#   2. a server on 127.0.0.1:5432 accepting user postgres: postgres://postgres@127.0.0.1:5432/postgres;
#   3. a throwaway cluster (initdb in a temp dir, fsync off, a free port), stopped and deleted
#      when the calling shell exits. CI_FORCE_THROWAWAY_PG=1 skips 1 and 2 (to test this path).
# sqlx::test connects to DATABASE_URL and creates a fresh database per test, so the user must
# be allowed to create databases (postgres is a superuser in cases 2 and 3).

# Directory of the newest installed initdb/pg_ctl (Debian: /usr/lib/postgresql/<major>/bin).
pg_bindir() {
    local candidate best=""
    for candidate in /usr/lib/postgresql/*/bin; do
        [[ -x "$candidate/initdb" ]] && best="$candidate"
    done
    if [[ -z "$best" ]] && command -v initdb >/dev/null 2>&1; then
        best="$(dirname "$(command -v initdb)")"
    fi
    [[ -n "$best" ]] || return 1
    printf '%s\n' "$best"
}

# pg_accepts URL : true when URL accepts a login and a query.
pg_accepts() {
    local psql
    psql="$(command -v psql || true)"
    [[ -n "$psql" ]] || psql="$(pg_bindir || true)/psql"
    [[ -x "$psql" ]] || return 1
    PGCONNECT_TIMEOUT=3 "$psql" "$1" -XAtqc 'select 1' >/dev/null 2>&1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs a PostgreSQL binary as the postgres OS user when we are root (initdb refuses root).
pg_as_owner() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_throwaway_postgres() {
    local bindir port dir
    bindir="$(pg_bindir)" || die "no PostgreSQL server binaries (initdb) found: run ci/install-tools.sh"
    port="$(free_port)"
    dir="$(mktemp -d "${TMPDIR:-/tmp}/ci-pg.XXXXXX")"
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "user 'postgres' is missing (install the postgresql package)"
        chown postgres:postgres "$dir"
    fi
    CI_PG_DIR="$dir"
    CI_PG_BINDIR="$bindir"
    on_exit stop_throwaway_postgres

    pg_as_owner "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    # Durability is pointless for a database that lives as long as one test run.
    pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null ||
        { cat "$dir/server.log" >&2; die "pg_ctl start failed"; }
    DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    log "started a throwaway PostgreSQL in $dir on port $port (removed on exit)"
}

stop_throwaway_postgres() {
    [[ -n "${CI_PG_DIR:-}" && -d "$CI_PG_DIR" ]] || return 0
    if [[ -f "$CI_PG_DIR/data/postmaster.pid" ]]; then
        pg_as_owner "$CI_PG_BINDIR/pg_ctl" -D "$CI_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$CI_PG_DIR"
    CI_PG_DIR=""
}

ensure_postgres() {
    local default_url="postgres://postgres@127.0.0.1:5432/postgres"
    if [[ "${CI_FORCE_THROWAWAY_PG:-0}" == 1 ]]; then
        start_throwaway_postgres
    elif [[ -n "${DATABASE_URL:-}" ]]; then
        log "using DATABASE_URL from the environment"
    elif pg_accepts "$default_url"; then
        DATABASE_URL="$default_url"
        log "using the PostgreSQL server on 127.0.0.1:5432"
    else
        start_throwaway_postgres
    fi
    export DATABASE_URL
}

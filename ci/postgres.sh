#!/usr/bin/env bash
# Makes a PostgreSQL available and tells where it is, through DATABASE_URL.
#
#   . ci/postgres.sh              sourced: exports DATABASE_URL in your shell; a throwaway
#                                 cluster (if one was needed) is removed when that shell exits
#   ci/postgres.sh CMD ARGS...    runs CMD with DATABASE_URL set, then removes any throwaway cluster
#   ci/postgres.sh                prints `export DATABASE_URL=...`; a throwaway cluster is left
#                                 running, and the command to stop it is printed on stderr
#
# Which server: $DATABASE_URL if set, else 127.0.0.1:5432 as user postgres, else a throwaway
# cluster on a free port. CI_FORCE_THROWAWAY_PG=1 forces the throwaway cluster.
# The logic lives in ensure_postgres (ci/lib.sh), which other scripts call directly.

# shellcheck source=ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Sourced: leave the caller's shell options alone.
    ensure_postgres
    return 0
fi

set -euo pipefail
ensure_postgres

if [[ $# -gt 0 ]]; then
    # Not exec: the EXIT hooks must still run to remove a throwaway cluster.
    "$@"
    exit $?
fi

if [[ -n "${CI_PG_DIR:-}" ]]; then
    # Keep the cluster: the caller asked for a URL to use after this script ends.
    clear_exit_hooks
    log "leaving it running; stop it with:"
    if [[ $EUID -eq 0 ]]; then
        log "  runuser -u postgres -- $CI_PG_BINDIR/pg_ctl -D $CI_PG_DIR/data -m fast stop && rm -rf $CI_PG_DIR"
    else
        log "  $CI_PG_BINDIR/pg_ctl -D $CI_PG_DIR/data -m fast stop && rm -rf $CI_PG_DIR"
    fi
fi
printf 'export DATABASE_URL=%q\n' "$DATABASE_URL"

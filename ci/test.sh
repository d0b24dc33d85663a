#!/usr/bin/env bash
# THE test command: runs every test of the workspace against a real PostgreSQL.
#
#   ci/test.sh                    all tests
#   ci/test.sh -E 'test(login)'   only the cargo tests, with extra arguments for `cargo nextest run`
#
# 1. Smoke test of the whole system: `ci/up.sh --smoke` (every service starts, turns SERVING and
#    lists its APIs). It gets a throwaway database, so it never leaves schemas in a shared server,
#    unless SMOKE_DATABASE_URL names a disposable one (GitHub Actions' service container). Then
#    ci/two-stacks-test.sh: two stacks on other ports at once, each with a throwaway database,
#    must stay fully separate; and the smoke test again with chat's bus on NATS (CHAT_BUS=nats).
#    Skipped when arguments are given or with CI_SKIP_SMOKE=1.
# 2. The cargo tests. DATABASE_URL comes from ensure_postgres (ci/lib.sh): $DATABASE_URL if set,
#    else the server on 127.0.0.1:5432, else a throwaway cluster removed on exit. sqlx::test
#    creates a fresh database per test from it.
# 3. ci/fuzz.sh: every fuzz target under libFuzzer for a few seconds on its committed corpus
#    (skipped when arguments are given or with CI_SKIP_FUZZ=1).
# Later test kinds (browser tests) are added here, so this stays the one place tests are run.

set -euo pipefail
# shellcheck source=ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
setup_path
bash ci/install-tools.sh --runtime

cargo_locked=()
if git ls-files --error-unmatch Cargo.lock >/dev/null 2>&1; then
    cargo_locked=(--locked)
fi
# One build of everything, binaries and tests together: the cluster and fault suites run the
# services' binaries, which nextest does not build, and the smoke tests run them too. Built with
# the tests, the binaries share the tests' dependency features (tokio's test-util, a dev-dependency),
# so nothing is compiled twice; a separate `cargo build --bins` would compile the workspace and
# every crate depending on tokio a second time.
cargo build --workspace --bins --tests "${cargo_locked[@]}"
export UP_SKIP_BUILD=1

if [[ -x ci/up.sh && $# -eq 0 && "${CI_SKIP_SMOKE:-0}" != 1 ]]; then
    log "smoke test: ci/up.sh --smoke"
    if [[ -n "${SMOKE_DATABASE_URL:-}" ]]; then
        DATABASE_URL="$SMOKE_DATABASE_URL" ci/up.sh --smoke
    else
        env -u DATABASE_URL ci/up.sh --smoke
    fi
    # The same with chat's bus on NATS (a local nats-server), on other ports: a NATS server
    # already on 4222 (Debian's nats-server package runs one) must not be taken for ours.
    log "smoke test with the NATS bus: CHAT_BUS=nats ci/up.sh --smoke"
    env -u DATABASE_URL CHAT_BUS=nats PORT_OFFSET=300 ci/up.sh --smoke
    log "two stacks side by side: ci/two-stacks-test.sh"
    bash ci/two-stacks-test.sh
fi

[[ $# -gt 0 ]] || bash ci/chart-check.sh # the Dockerfile and the Helm chart, offline (skipped with arguments)

ensure_postgres
log "DATABASE_URL=$DATABASE_URL"

# --no-fail-fast: one run reports every failing test, not just the first.
cargo nextest run --workspace "${cargo_locked[@]}" --no-tests=pass --no-fail-fast "$@"

if [[ $# -eq 0 && "${CI_SKIP_FUZZ:-0}" != 1 ]]; then
    log "fuzzing: ci/fuzz.sh"
    bash ci/fuzz.sh
fi

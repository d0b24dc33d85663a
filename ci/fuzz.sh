#!/usr/bin/env bash
# A short libFuzzer run of every fuzz target (fuzz/fuzz_targets) on its committed corpus, on the
# stable toolchain, as part of the test command.
#
#   ci/fuzz.sh              every target for FUZZ_SECONDS (default 10) each, two at a time
#   ci/fuzz.sh TARGET...    only these targets
#
# The targets are built with libFuzzer's coverage instrumentation on the workspace's own crates
# (ci/fuzz-rustc.sh, as RUSTC_WORKSPACE_WRAPPER) and no sanitizer: AddressSanitizer needs nightly
# and a rebuild of every dependency, longer than CI's budget on two cores. Safe Rust's bounds and
# overflow checks turn memory errors into panics, which libFuzzer reports as crashes. The long runs
# with AddressSanitizer are `cargo +nightly fuzz run` (fuzz/README.md).
#
# New inputs go to a scratch directory, so the committed corpus is never changed here. A failing
# input is written to fuzz/artifacts/<target>/ (git-ignored); the script prints how to replay it.
set -euo pipefail
# shellcheck source=ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
setup_path

seconds="${FUZZ_SECONDS:-10}"
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=()
    for file in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi

cargo_locked=()
if git ls-files --error-unmatch Cargo.lock >/dev/null 2>&1; then
    cargo_locked=(--locked)
fi
bin_args=()
for target in "${targets[@]}"; do
    bin_args+=(--bin "$target")
done
# --workspace: the dependencies' features are the services' own (as `cargo build --bins`, which
# ci/up.sh runs, compiles them), so the fuzzed code is what runs in production. After test.sh's
# build (tests' features: tokio's test-util) the crates depending on tokio compile once more.
log "building ${#targets[@]} fuzz targets with coverage instrumentation"
RUSTC_WORKSPACE_WRAPPER="$REPO/ci/fuzz-rustc.sh" \
    cargo build --workspace --features fuzz/libfuzzer "${bin_args[@]}" "${cargo_locked[@]}"

scratch="$(mktemp -d)"
on_exit "rm -rf '$scratch'"

# run_target NAME: fuzz NAME for $seconds on its committed inputs; its output goes to a log that is
# printed only when it fails (a passing run prints one summary line).
run_target() {
    local target="$1" inputs=("fuzz/corpus/$1")
    [[ -d "fuzz/regressions/$target" ]] && inputs+=("fuzz/regressions/$target")
    mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
    if target/debug/"$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" \
        "$scratch/$target" "${inputs[@]}" >"$scratch/$target.log" 2>&1; then
        local runs
        runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/$target.log" | grep -o '[0-9]*$' || true)"
        printf '  %-22s ok: %s executions in %ss\n' "$target" "${runs:-?}" "$seconds"
    else
        printf '  %-22s FAILED; its log:\n' "$target"
        tail -n 60 "$scratch/$target.log"
        printf 'replay: target/debug/%s fuzz/artifacts/%s/<crash file> (then copy it to fuzz/regressions/%s/)\n' \
            "$target" "$target" "$target"
        return 1
    fi
}

log "fuzzing each target for ${seconds}s, two at a time"
failed=0
pids=()
for target in "${targets[@]}"; do
    run_target "$target" &
    pids+=($!)
    if [[ ${#pids[@]} -eq 2 ]]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[1]}")
    fi
done
for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
done
exit "$failed"

#!/usr/bin/env bash
# RUSTC_WORKSPACE_WRAPPER for ci/fuzz.sh: compiles the workspace's own crates with libFuzzer's
# coverage instrumentation (the flags cargo-fuzz passes, minus the sanitizer, which needs nightly).
# Dependencies are built as usual, so the short CI run is guided by the coverage of the project's
# own parsers and reuses the test build's compiled dependencies. Build scripts and proc macros run
# on the host during the build and are left alone: they are not linked with libFuzzer.
set -euo pipefail
rustc="$1"
shift
case " $* " in
*" --crate-name build_script_"* | *" --crate-type proc-macro "*)
    exec "$rustc" "$@"
    ;;
esac
exec "$rustc" "$@" \
    --cfg fuzzing \
    -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares

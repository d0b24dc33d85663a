#!/usr/bin/env bash
# Builds a release into dist/ and publishes it; .github/workflows/release.yml runs it on a tag v*.
# The container image is built and signed by the workflow itself (Docker Buildx); this script
# names it, and does everything else.
#
#   ci/release.sh --dry-run              the whole release locally, nothing published: binaries,
#                                        chart package, notes and SHA256SUMS in dist/, then the
#                                        publishing commands it would run
#   ci/release.sh [--dry-run] COMMAND... only these commands, in this order
#
# Commands:
#   names           the published names (image, chart, signing identity) as KEY=value lines, also
#                   appended to $GITHUB_OUTPUT when that is set
#   verify-version  the tag, Chart.yaml's version and appVersion, values.yaml's image.tag and the
#                   workspace's version agree (the image tag and the chart version come from the tag)
#   binaries        cargo build --release of the service binaries and the CLI, as a tarball in dist/
#   chart           helm package, with the image repository set to the published one, into dist/;
#                   then checks the package's version, appVersion and rendered image
#   checksums       dist/SHA256SUMS of the tarball and the chart package, checked with sha256sum -c
#   notes           dist/release-notes.md: how to install and verify, and the commits since the
#                   previous tag
#   push-chart      helm push the chart to oci://ghcr.io/<owner>/charts, cosign sign it, verify it
#   github-release  gh release create <tag> with the notes, the tarball, the chart and SHA256SUMS
#   dist            verify-version binaries chart checksums
#   all             dist notes push-chart github-release (the default)
#
# With --dry-run, push-chart and github-release print what they would run instead of running it.
#
# Environment:
#   RELEASE_TAG        the tag, v<semver> (default: $GITHUB_REF_NAME on a tag push; in a dry run
#                      v<Chart.yaml's version>)
#   GITHUB_REPOSITORY  <owner>/<repo> that publishes (default: from the origin remote if it is on
#                      GitHub, else example/chat)
#   GITHUB_SHA         the released commit (default: HEAD)
#   DIST_DIR           output directory (default: dist, git-ignored)
#   HELM               helm binary (default: .tools/helm/helm as installed by ci/chart-check.sh,
#                      else helm on PATH)
#   IMAGE_DIGEST       the pushed image's digest, for the notes (set by the workflow)
#   GITHUB_TOKEN, GITHUB_ACTOR   registry login for push-chart; GH_TOKEN for github-release

set -euo pipefail
# shellcheck source=ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
setup_path

REGISTRY=ghcr.io
CHART_DIR=charts/chat
CHART_NAME=chat
# The workflow whose OIDC identity signs the image and the chart: its path is part of the
# certificate's identity, so renaming the file changes what `cosign verify` must accept.
SIGNING_WORKFLOW=.github/workflows/release.yml
OIDC_ISSUER=https://token.actions.githubusercontent.com
# The binaries users run: the four services, the migrations and the CLI (not bench or fuzz).
BINARIES=(auth chat-server group gateway migrate chat)

DRY_RUN=0
for arg in "$@"; do
    [[ "$arg" != --dry-run ]] || DRY_RUN=1
done
DIST_DIR="${DIST_DIR:-dist}"
COMMIT="${GITHUB_SHA:-$(git rev-parse HEAD)}"
HELM="${HELM:-}"
if [[ -z "$HELM" ]]; then
    if [[ -x "$REPO/.tools/helm/helm" ]]; then HELM="$REPO/.tools/helm/helm"; else HELM=helm; fi
fi

# ----------------------------------------------------------------------------- names
chart_field() { sed -n "s/^$1:[[:space:]]*//p" "$CHART_DIR/Chart.yaml" | tr -d "\"'" | head -n 1; }

default_repository() {
    local url
    url="$(git remote get-url origin 2>/dev/null || true)"
    if [[ "$url" =~ github\.com[:/]([^/]+/[^/]+)$ ]]; then
        echo "${BASH_REMATCH[1]%.git}"
    else
        echo example/chat
    fi
}

resolve_tag() {
    if [[ -n "${RELEASE_TAG:-}" ]]; then
        echo "$RELEASE_TAG"
    elif [[ "${GITHUB_REF_TYPE:-}" == tag ]]; then
        echo "$GITHUB_REF_NAME"
    elif [[ $DRY_RUN -eq 1 ]]; then
        echo "v$(chart_field version)"
    else
        die "no tag: set RELEASE_TAG=v<version>, or run from a tag push, or use --dry-run"
    fi
}

TAG="$(resolve_tag)"
[[ "$TAG" =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$ ]] ||
    die "tag '$TAG' is not v<major>.<minor>.<patch>[-<prerelease>]"
VERSION="${TAG#v}"
GITHUB_REPOSITORY="${GITHUB_REPOSITORY:-$(default_repository)}"
# GHCR wants lowercase names; the certificate identity keeps the repository's own spelling.
OWNER="$(printf '%s' "${GITHUB_REPOSITORY%%/*}" | tr '[:upper:]' '[:lower:]')"
IMAGE="$REGISTRY/$OWNER/$CHART_NAME"
CHART_REPO="oci://$REGISTRY/$OWNER/charts"
CHART_REF="$CHART_REPO/$CHART_NAME"
CHART_PACKAGE="$CHART_NAME-$VERSION.tgz"
# The binaries are built natively on Linux (the build job, or a dry run here); every job must
# compute the same name without needing a Rust toolchain.
TARBALL="chat-backend-$TAG-$(uname -m)-unknown-linux-gnu.tar.gz"
SIGNER_IDENTITY="https://github.com/$GITHUB_REPOSITORY/$SIGNING_WORKFLOW@refs/tags/$TAG"
# Any release of this repository: the same workflow file, on any tag v*.
SIGNER_IDENTITY_REGEXP="^$(printf '%s' "https://github.com/$GITHUB_REPOSITORY/$SIGNING_WORKFLOW" |
    sed 's/[.]/\\./g')@refs/tags/v"

cmd_names() {
    local lines
    lines="$(
        cat <<EOF
tag=$TAG
version=$VERSION
commit=$COMMIT
image=$IMAGE
image_tags=$IMAGE:$VERSION,$IMAGE:sha-$COMMIT
chart_repo=$CHART_REPO
chart_ref=$CHART_REF
chart_package=$CHART_PACKAGE
tarball=$TARBALL
signer_identity=$SIGNER_IDENTITY
signer_identity_regexp=$SIGNER_IDENTITY_REGEXP
oidc_issuer=$OIDC_ISSUER
prerelease=$([[ "$VERSION" == *-* ]] && echo true || echo false)
EOF
    )"
    printf '%s\n' "$lines"
    if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
        printf '%s\n' "$lines" >>"$GITHUB_OUTPUT"
    fi
}

# ----------------------------------------------------------------------------- dist
# values.yaml's image.tag: empty means "the chart's appVersion".
values_image_tag() {
    awk '/^image:/ { in_image = 1; next }
         in_image && /^[^[:space:]#]/ { exit }
         in_image && /^  tag:/ {
             sub(/^  tag:[[:space:]]*/, ""); gsub(/["\x27]/, ""); sub(/[[:space:]]*#.*/, ""); print; exit
         }' \
        "$CHART_DIR/values.yaml"
}

cmd_verify_version() {
    local chart_version app_version image_tag cargo_version problems=()
    chart_version="$(chart_field version)"
    app_version="$(chart_field appVersion)"
    image_tag="$(values_image_tag)"
    cargo_version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' Cargo.toml)"
    [[ "$chart_version" == "$VERSION" ]] || problems+=("$CHART_DIR/Chart.yaml version is '$chart_version'")
    [[ "$app_version" == "$VERSION" ]] || problems+=("$CHART_DIR/Chart.yaml appVersion is '$app_version'")
    [[ -z "$image_tag" || "$image_tag" == "$VERSION" ]] ||
        problems+=("$CHART_DIR/values.yaml image.tag is '$image_tag' (leave it empty: it defaults to appVersion)")
    [[ "$cargo_version" == "$VERSION" ]] || problems+=("Cargo.toml [workspace.package] version is '$cargo_version'")
    if [[ ${#problems[@]} -gt 0 ]]; then
        printf '  %s\n' "${problems[@]}" >&2
        die "tag $TAG (version $VERSION) disagrees with the sources above: bump them in one commit, then tag it"
    fi
    log "tag $TAG agrees with Chart.yaml (version, appVersion), values.yaml (image.tag) and Cargo.toml"
}

# Reproducible archives: fixed order, owner and mtime (the commit's time), no gzip timestamp.
commit_epoch() { git log -1 --format=%ct "$COMMIT" 2>/dev/null || date +%s; }

cmd_binaries() {
    local bin_args=() bin stage
    for bin in "${BINARIES[@]}"; do bin_args+=(--bin "$bin"); done
    log "cargo build --release --locked ${bin_args[*]}"
    cargo build --release --locked "${bin_args[@]}" || return 1
    stage="$DIST_DIR/${TARBALL%.tar.gz}"
    rm -rf "$stage" && mkdir -p "$stage" || return 1
    for bin in "${BINARIES[@]}"; do
        install -m 0755 "target/release/$bin" "$stage/" || return 1
    done
    cp -r migrations README.md "$stage/" || return 1
    tar --sort=name --mtime="@$(commit_epoch)" --owner=0 --group=0 --numeric-owner \
        -C "$DIST_DIR" -cf - "$(basename "$stage")" | gzip -n -9 >"$DIST_DIR/$TARBALL" || return 1
    rm -rf "$stage"
    log "$DIST_DIR/$TARBALL: ${BINARIES[*]}, migrations/ ($(du -h "$DIST_DIR/$TARBALL" | cut -f1))"
}

cmd_chart() {
    local stage package rendered images expected="$IMAGE:$VERSION" shown
    stage="$(mktemp -d "${TMPDIR:-/tmp}/release-chart.XXXXXX")"
    on_exit "rm -rf '$stage'"
    cp -r "$CHART_DIR" "$stage/$CHART_NAME" || return 1
    # The first two-space `repository:` in values.yaml is image.repository (the bundled
    # PostgreSQL's is nested deeper); the render below proves the substitution took.
    sed -i "0,/^  repository:.*/s||  repository: $IMAGE|" "$stage/$CHART_NAME/values.yaml" || return 1
    mkdir -p "$DIST_DIR" || return 1
    "$HELM" package "$stage/$CHART_NAME" --destination "$DIST_DIR" >/dev/null || return 1
    package="$DIST_DIR/$CHART_PACKAGE"
    [[ -f "$package" ]] || die "helm package did not write $package"

    shown="$("$HELM" show chart "$package")" || return 1
    grep -qx "version: $VERSION" <<<"$shown" || die "$package: version is not $VERSION"
    grep -qx "appVersion: \"\?$VERSION\"\?" <<<"$shown" || die "$package: appVersion is not $VERSION"
    # --skip-tests: the `helm test` Pod runs grpcurl's image (tests.image), not a component.
    rendered="$("$HELM" template chat "$package" --namespace chat --skip-tests)" || return 1
    images="$(sed -n 's/^[[:space:]]*image:[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' <<<"$rendered" |
        grep -v postgres | sort -u)"
    [[ "$images" == "$expected" ]] ||
        die "$package renders the images '$(tr '\n' ' ' <<<"$images")', expected only $expected"
    log "$package: version and appVersion $VERSION, every component runs $expected"
}

release_assets() { printf '%s\n' "$TARBALL" "$CHART_PACKAGE"; }

cmd_checksums() {
    local asset
    while read -r asset; do
        [[ -f "$DIST_DIR/$asset" ]] || die "$DIST_DIR/$asset is missing: run the binaries and chart commands first"
    done < <(release_assets)
    (cd "$DIST_DIR" && release_assets | xargs sha256sum >SHA256SUMS && sha256sum --quiet -c SHA256SUMS) || return 1
    log "$DIST_DIR/SHA256SUMS: $(release_assets | tr '\n' ' ')"
}

# The previous tag v* reachable from the released commit's parent; empty for a first release.
previous_tag() { git describe --tags --abbrev=0 --match 'v*' "$COMMIT^" 2>/dev/null || true; }

cmd_notes() {
    local previous range image_ref="$IMAGE:$VERSION" notes="$DIST_DIR/release-notes.md"
    previous="$(previous_tag)"
    range="$COMMIT"
    [[ -z "$previous" ]] || range="$previous..$COMMIT"
    [[ -z "${IMAGE_DIGEST:-}" ]] || image_ref="$IMAGE:$VERSION@$IMAGE_DIGEST"
    mkdir -p "$DIST_DIR" || return 1
    # shellcheck disable=SC2016 # the backquotes are Markdown
    {
        printf '## Install\n\n'
        printf 'The image `%s` (linux/amd64, linux/arm64) carries an SBOM and build\n' "$image_ref"
        printf 'provenance, and is signed keylessly by this repository'"'"'s release workflow. The chart:\n\n'
        printf '```bash\nhelm install chat %s --version %s \\\n  --namespace chat --create-namespace\n```\n\n' \
            "$CHART_REF" "$VERSION"
        printf 'Verify the image before you deploy it:\n\n'
        printf '```bash\ncosign verify %s:%s \\\n' "$IMAGE" "$VERSION"
        printf "  --certificate-identity '%s' \\\\\n" "$SIGNER_IDENTITY"
        printf '  --certificate-oidc-issuer %s\n```\n\n' "$OIDC_ISSUER"
        printf 'and the downloads with `sha256sum -c SHA256SUMS`.\n\n'
        if [[ -n "$previous" ]]; then
            printf '## Changes since %s\n\n' "$previous"
        else
            printf '## Changes (first release)\n\n'
        fi
        # First parent only: one line per merge into main (its message summarises the branch)
        # and per commit made on main itself.
        git log --first-parent --format='- %s (%h)' "$range"
    } >"$notes" || return 1
    log "$notes: $(grep -c '^- ' "$notes") commits since ${previous:-the first commit}"
}

# ----------------------------------------------------------------------------- publish
# run CMD...: runs it, or in a dry run prints it.
run() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '  would run:' >&2
        printf ' %q' "$@" >&2
        printf '\n' >&2
    else
        "$@"
    fi
}

registry_login() {
    if [[ $DRY_RUN -eq 1 ]]; then
        log "would log in to $REGISTRY as \$GITHUB_ACTOR with \$GITHUB_TOKEN"
        return 0
    fi
    [[ -n "${GITHUB_TOKEN:-}" && -n "${GITHUB_ACTOR:-}" ]] || die "push-chart needs GITHUB_TOKEN and GITHUB_ACTOR"
    printf '%s' "$GITHUB_TOKEN" | "$HELM" registry login "$REGISTRY" --username "$GITHUB_ACTOR" --password-stdin
}

cmd_push_chart() {
    local package="$DIST_DIR/$CHART_PACKAGE" output digest target
    [[ -f "$package" ]] || die "$package is missing: run the chart command first"
    registry_login || return 1
    if [[ $DRY_RUN -eq 1 ]]; then
        run "$HELM" push "$package" "$CHART_REPO"
        digest='sha256:<digest printed by helm push>'
    else
        output="$("$HELM" push "$package" "$CHART_REPO" 2>&1)" || { printf '%s\n' "$output" >&2; return 1; }
        printf '%s\n' "$output" >&2
        digest="$(sed -n 's/^Digest:[[:space:]]*//p' <<<"$output")"
        [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || die "no digest in helm push's output"
    fi
    target="${CHART_REF#oci://}@$digest"
    run cosign sign --yes "$target"
    run cosign verify "$target" --certificate-identity "$SIGNER_IDENTITY" \
        --certificate-oidc-issuer "$OIDC_ISSUER" --output text
    if [[ -n "${GITHUB_OUTPUT:-}" && $DRY_RUN -eq 0 ]]; then
        echo "chart_digest=$digest" >>"$GITHUB_OUTPUT"
    fi
}

cmd_github_release() {
    local assets=() flags=()
    mapfile -t assets < <(release_assets | sed "s|^|$DIST_DIR/|")
    assets+=("$DIST_DIR/SHA256SUMS")
    [[ -f "$DIST_DIR/release-notes.md" ]] || die "$DIST_DIR/release-notes.md is missing: run the notes command first"
    # The assets may come from another job (an artifact): check them against their sums first.
    (cd "$DIST_DIR" && sha256sum --quiet -c SHA256SUMS) || die "$DIST_DIR does not match its SHA256SUMS"
    [[ "$VERSION" != *-* ]] || flags+=(--prerelease)
    run gh release create "$TAG" --verify-tag --title "$TAG" --notes-file "$DIST_DIR/release-notes.md" \
        "${flags[@]}" "${assets[@]}"
}

# ----------------------------------------------------------------------------- main
main() {
    local commands=() name known=" names verify-version binaries chart checksums notes push-chart github-release "
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dry-run) ;;
            -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; return 0 ;;
            dist) commands+=(verify-version binaries chart checksums) ;;
            all) commands+=(verify-version binaries chart checksums notes push-chart github-release) ;;
            *)
                [[ "$known" == *" $1 "* ]] || die "unknown argument '$1' (see ci/release.sh --help)"
                commands+=("$1")
                ;;
        esac
        shift
    done
    [[ ${#commands[@]} -gt 0 ]] || commands=(verify-version binaries chart checksums notes push-chart github-release)
    # Without --dry-run, resolve_tag has already refused to go on without a tag.
    local mode=""
    [[ $DRY_RUN -eq 0 ]] || mode=" (dry run: nothing is published)"
    log "release $TAG of $GITHUB_REPOSITORY at ${COMMIT:0:12}$mode"
    for name in "${commands[@]}"; do
        step "$name" "cmd_${name//-/_}" || die "$name failed"
    done
    if [[ $DRY_RUN -eq 1 && " ${commands[*]} " == *" github-release "* ]]; then
        log "the workflow would also push and sign the image $IMAGE:$VERSION and $IMAGE:sha-$COMMIT"
        ls -l "$DIST_DIR" >&2
    fi
}

main "$@"

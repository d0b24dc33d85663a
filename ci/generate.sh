#!/usr/bin/env bash
# Regenerates all code derived from the .proto files under proto/. THE way to regenerate:
#   - proto/src/gen/      Rust messages (protoc-gen-prost) + tonic clients/servers (protoc-gen-tonic)
#   - web-demo/src/gen/   TypeScript (protoc-gen-es, target=ts)
#   - proto/src/gen/descriptor.binpb   FileDescriptorSet with imports and source comments, for
#                         tonic-reflection (so `grpcurl describe` shows the proto comments)
#   - proto/src/gen/public_descriptor.binpb   the same for the public files only (no file under an
#                         `internal/` directory; their imports kept), which the gateway reflects
# Both gen/ folders are emptied first (buf.gen.yaml has `clean: true`); commit what this writes.
# Needs the tools from ci/install-tools.sh.

set -euo pipefail
# shellcheck source=ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
setup_path

for tool in buf protoc-gen-prost protoc-gen-tonic; do
    command -v "$tool" >/dev/null || die "$tool not found: run ci/install-tools.sh"
done
[[ -x ci/node_modules/.bin/protoc-gen-es ]] || die "ci/node_modules/.bin/protoc-gen-es not found: run ci/install-tools.sh"

buf generate
buf build --as-file-descriptor-set -o proto/src/gen/descriptor.binpb
mapfile -t public_files < <(find proto -name '*.proto' -not -path '*/internal/*' | sort)
buf build --as-file-descriptor-set "${public_files[@]/#/--path=}" \
    -o proto/src/gen/public_descriptor.binpb
log "generated proto/src/gen and web-demo/src/gen"

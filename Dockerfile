# syntax=docker/dockerfile:1.7
# One image with every server binary of the workspace: auth, chat-server, group, gateway and migrate.
# The Helm chart (charts/chat) picks the binary with the container's `command`.
#
#   docker build -t chat:dev .
#   docker run --rm chat:dev /usr/local/bin/auth keygen
#
# The build step is the one CI runs (`cargo build --locked --release --bins`), so an image holds the
# same binaries as a CI build of the same commit. The runtime stage is distroless (glibc, CA
# certificates, no shell, no package manager) and runs as an unprivileged user, with nothing to
# write: the chart mounts it with a read-only root filesystem.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Generated code (proto/src/gen) is committed and no query macro needs a database, so the build
# needs neither buf nor PostgreSQL.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY . .
# The caches keep the registry and incremental artifacts between builds on the same builder; the
# binaries are copied out in the same step because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bins \
    && mkdir -p /out \
    && cp target/release/auth target/release/chat-server target/release/group \
          target/release/gateway target/release/migrate /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="chat" \
      org.opencontainers.image.description="End-to-end encrypted chat backend: auth, chat, group, gateway and migrate" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
# 65532 is distroless' "nonroot"; numeric, so Kubernetes can check runAsNonRoot without /etc/passwd.
USER 65532:65532
EXPOSE 8080 50061 50062 50063
CMD ["/usr/local/bin/gateway"]

# syntax=docker/dockerfile:1
#
# One image with all three binaries: distcache-node, distcache-proxy and the
# distcache command-line client. Pick one with the container's command:
#
#   docker build -t distcache:0.1.0 .
#   docker run --rm -p 7001:7001 -p 9101:9101 distcache:0.1.0
#   docker run --rm distcache:0.1.0 distcache-proxy --help
#
# The build needs only crates.io (protox compiles the .proto files, no
# system protoc). The runtime image is distroless (glibc, CA certificates,
# no shell, no package manager) and runs as an unprivileged user.
# Checked by hadolint in scripts/check-deploy.sh; no image is built in CI.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin distcache-node --bin distcache-proxy --bin distcache \
        --features distcache/cli \
 && mkdir -p /out/bin /out/data \
 && cp target/release/distcache-node target/release/distcache-proxy \
       target/release/distcache /out/bin/

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="distcache" \
      org.opencontainers.image.description="distcache storage node, sidecar proxy and CLI" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=build /out/bin/ /usr/local/bin/
# The node's --data-dir, owned by the image's user (65532); mount a volume
# here. Kubernetes pods set their own user and fsGroup.
COPY --from=build --chown=65532:65532 /out/data /var/lib/distcache
VOLUME ["/var/lib/distcache"]
USER 65532:65532
# node gRPC, node admin; proxy RESP, gRPC, admin
EXPOSE 7001 9101 6380 50051 9100
ENV DISTCACHE_LOG_FORMAT=json
CMD ["distcache-node", "--listen=0.0.0.0:7001", "--admin-listen=0.0.0.0:9101", "--data-dir=/var/lib/distcache"]

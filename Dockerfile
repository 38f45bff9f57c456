# syntax=docker/dockerfile:1
# The Tessera image (the one helm/tessera deploys): a static-ish Rust binary on distroless.
#
#   docker build -t ghcr.io/tessera-id/tessera:0.1.0 .
#
# Needs BuildKit (the default builder of current Docker) for the cache mount below.

############################ build ############################
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first: this layer is rebuilt only when the manifests or the lock file change.
# Cargo needs a target in every workspace member to load the workspace, so stub them.
# .cargo holds the build's settings: the bundled SQLite's options, and the rustc wrapper and
# profile that make the release build profile-guided (made with rustc 1.95, like this image).
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY migrations/Cargo.toml migrations/Cargo.toml
RUN mkdir -p src migrations/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch migrations/src/lib.rs \
 && cargo fetch --locked

# The sources. Protos compile with protox (pure Rust, no protoc); the bundled SQLite, AWS-LC
# (token signing) and mimalloc are C (and, for AWS-LC, assembly) built by the cc crate with the
# image's gcc: no cmake, Go or NASM needed on Linux.
COPY build.rs ./
COPY proto proto
COPY migrations migrations
COPY src src
# The target directory is a BuildKit cache (kept between builds, never in a layer), so the
# binary is copied out in the same step.
RUN --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin tessera \
 && install -D -m 0755 target/release/tessera /out/tessera

############################ runtime ############################
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tessera" \
      org.opencontainers.image.description="OAuth2 client credentials, RFC 8693 token exchange, introspection and revocation for B2B platforms" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Tessera" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /out/tessera /usr/local/bin/tessera

# In a container every listener binds all interfaces: gRPC, public REST, ops
# (/healthz, /readyz, /metrics; keep the ops port internal).
ENV TESSERA_GRPC_ADDR=0.0.0.0:50051 \
    TESSERA_HTTP_ADDR=0.0.0.0:8080 \
    TESSERA_OPS_ADDR=0.0.0.0:9090 \
    TESSERA_LOG_FORMAT=json
EXPOSE 50051 8080 9090

# distroless "nonroot": uid/gid 65532, matching the chart's securityContext.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["serve"]

# syntax=docker/dockerfile:1
#
# ghost: one image for the operator (`ghost operator`) and the engine pods (`ghost engine`, which
# the operator's Jobs run as the command `ghost`, so the binary must be on PATH).
#
#   docker build -t ghost:0.1.0 .
#
# The runtime is distroless "cc" (glibc, libgcc, CA certificates; no shell), running as
# the nonroot user 65532 that the chart's and the Jobs' securityContext expect.
# scripts/check-dockerfile checks a release build against what this file copies.

FROM rust:1.95.0-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ghost \
    && cp target/release/ghost /ghost \
    && /ghost version

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="ghost" \
      org.opencontainers.image.description="Online, triggerless schema migrations for MySQL and MariaDB, as a Kubernetes operator" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /ghost /usr/local/bin/ghost
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ghost"]
CMD ["--help"]

# syntax=docker/dockerfile:1
# The scim-operator image: a static-enough release build on Debian bookworm, copied into a
# distroless image that has glibc and nothing else (no shell, no package manager) and runs as
# the non-root user 65532. Build: docker build -t scim-operator .

FROM rust:1-bookworm AS builder
WORKDIR /src
# Only the manifest, the lock file and the sources go in; .dockerignore keeps target/ out.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The cache mounts keep the registry and the build folder between builds, so a source change
# recompiles only this crate. --locked fails the build if Cargo.lock is not up to date.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --bin scim-operator \
    && install -D -m 0755 target/release/scim-operator /out/scim-operator

# cc-debian12 carries glibc and libgcc, which a Rust binary links against; TLS comes from
# rustls, so no OpenSSL is needed.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="scim-operator" \
      org.opencontainers.image.description="SCIM 2.0 provisioning into Kubernetes, with access from AccessPolicies" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/scim-operator /usr/local/bin/scim-operator
# Numeric, so that Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
# SCIM API, then metrics and health.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/scim-operator"]
CMD ["run"]

# syntax=docker/dockerfile:1
#
# openrouter-cost-exporter container image.
#
#   docker build -t openrouter-cost-exporter .
#   docker run --rm -p 10115:10115 openrouter-cost-exporter demo
#
# Real mode: mount the directory holding your config.yaml (a directory, so
# that edits are seen and reloaded) and pass the management key as an env var
# (or mount it as a file and set openrouter.management_key_file):
#
#   docker run --rm -p 10115:10115 --read-only \
#     -e OPENROUTER_MANAGEMENT_KEY \
#     -v "$PWD/exporter-config:/etc/openrouter-cost-exporter:ro" \
#     openrouter-cost-exporter
#
# The image runs as the distroless "nonroot" user (uid/gid 65532) and writes
# only the statements ledger, data/ledger.sqlite3 under its working directory
# /: the /data volume (owned by 65532), so it also runs with a read-only root
# filesystem. Keep statements across containers with a named volume:
#
#   docker run ... --read-only -v openrouter-ledger:/data openrouter-cost-exporter

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

############################ build ############################
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /build
ENV CARGO_TERM_COLOR=never \
    CARGO_NET_RETRY=5

# 1. Dependencies only: this layer is rebuilt only when Cargo.toml or
#    Cargo.lock change, not on every source edit. The stub sources satisfy the
#    [lib] and [[bin]] targets so that cargo compiles every dependency.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# 2. The real sources. `touch` makes them newer than the stub build, so cargo
#    recompiles the crate itself (and only the crate itself).
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && cp target/release/openrouter-cost-exporter /openrouter-cost-exporter \
 && mkdir /ledger-dir

########################### runtime ###########################
# distroless/cc: glibc + libgcc + CA certificates, no shell, no package manager.
# Same Debian release as the builder, so the glibc the binary links against matches.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="openrouter-cost-exporter" \
      org.opencontainers.image.description="Prometheus exporter for OpenRouter spend per API key and per customer company" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /openrouter-cost-exporter /usr/local/bin/openrouter-cost-exporter
# A default config so the image starts without a mount; mount your own over it.
COPY config.example.yaml /etc/openrouter-cost-exporter/config.yaml

# The ledger's directory: the default --storage.path data/ from the working
# directory /, writable by the nonroot user (distroless has no shell to mkdir).
COPY --from=builder --chown=65532:65532 /ledger-dir /data
WORKDIR /
VOLUME ["/data"]

# Numeric uid:gid (distroless "nonroot") so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 10115

# No shell in distroless: the binary probes itself. This assumes the default
# listen address (:10115); if you change --web.listen-address, override the
# healthcheck too, in exec form (compose: `healthcheck.test: ["CMD", ...]`);
# `docker run --health-cmd` needs a shell, which this image does not have.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/openrouter-cost-exporter", "healthcheck", "--url", "http://127.0.0.1:10115/healthz"]

ENTRYPOINT ["/usr/local/bin/openrouter-cost-exporter"]
CMD ["--config.file=/etc/openrouter-cost-exporter/config.yaml"]

# docker-watcher's container image.
#
#   docker build -t docker-watcher .
#   docker run -d --name docker-watcher --network host \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v docker-watcher-data:/data docker-watcher
#
# Three stages, in this order on purpose:
#   runtime-base  a small Debian with CA certificates, the user, /data, the health check: all of
#                 the final image but the binary. It comes first so that a builder without
#                 BuildKit (which builds every stage before the target) can build it alone:
#                 the project's tests build it from a Debian base made locally (no registry),
#                 add the release binary built on the host, and run it.
#   build         compiles the release binary.
#   runtime       runtime-base plus the binary: the image users run (the default target).
#
# RUNTIME_BASE and RUST_IMAGE can point at a mirror or a locally made image.

ARG RUNTIME_BASE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1.95-slim-bookworm

FROM ${RUNTIME_BASE} AS runtime-base
# CA certificates for registries and https upstreams; a base that has them already (the test
# base does) needs no package manager or network here.
RUN if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 docker-watcher \
    && useradd --system --uid 10001 --gid docker-watcher --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin docker-watcher \
    && mkdir -p /data \
    && chown docker-watcher:docker-watcher /data \
    && chmod 0700 /data
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="docker-watcher" \
      org.opencontainers.image.description="Self-hosted continuous deployment: watch registries, deploy containers, route traffic, clean up stale containers." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/install.md in the source tree"
# Inside a container the listeners face the network (publish or use host networking to choose
# what is reachable); data lives in the volume. The socket's group differs per host: give it
# with `--group-add` (compose: `group_add`).
ENV DOCKER_WATCHER_LISTEN=0.0.0.0:8080 \
    DOCKER_WATCHER_PROXY_LISTEN=0.0.0.0:8000 \
    DOCKER_WATCHER_DATA_DIR=/data \
    DOCKER_WATCHER_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080 8000
USER docker-watcher:docker-watcher
WORKDIR /data
# The binary answers its own health check: the image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["docker-watcher", "healthcheck"]
ENTRYPOINT ["docker-watcher"]
CMD ["serve"]

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY docs ./docs
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin docker-watcher \
    && install -m 0755 target/release/docker-watcher /usr/local/bin/docker-watcher

FROM runtime-base AS runtime
COPY --from=build /usr/local/bin/docker-watcher /usr/local/bin/docker-watcher

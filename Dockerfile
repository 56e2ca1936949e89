# The reconciler daemon as a container. It needs the Docker engine's socket to build images:
#   docker run -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v /etc/reconciler:/etc/reconciler:ro -v reconciler-state:/var/lib/reconciler \
#     -p 127.0.0.1:8088:8088 reconciler
#
# Port 8088 is the webhook listener, the one a forge reaches (through the TLS proxy). The
# admin listener (status, pages, metrics, actions) stays inside the container on
# 127.0.0.1:8089: `docker exec <name> reconciler status` reads the admin token from the state
# volume. To publish it, set RECONCILER_DAEMON__ADMIN_LISTEN=0.0.0.0:8089 and name
# [auth].tokens_file (made with `reconciler token add`) or trusted_proxies in the config;
# a non-loopback admin listener without them refuses to start. In the image,
# RECONCILER_DAEMON__LISTEN (0.0.0.0:8088, so a published port reaches it) and
# RECONCILER_DAEMON__STATE_DIR (the state volume) override the config file's values; with
# `--network host` pass `-e RECONCILER_DAEMON__LISTEN=127.0.0.1:8088`.
# SSH host keys for private repositories go in /var/lib/reconciler/.ssh/known_hosts.
#
# BASE_IMAGE is a build argument so the image can be built where no hub is reachable, from
# any Debian-like image with python3 (3.11 or newer) and its venv module. Dependencies come
# from PyPI, or, where the build has no network, from a wheels/ directory in the context:
#   pip wheel --wheel-dir wheels . "setuptools>=68" && docker build -t reconciler .
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/reconciler
WORKDIR /src
# .dockerignore lets in only what the package needs, and wheels/ when it is there.
COPY . .
RUN if [ -d wheels ]; then set -- --no-index --find-links=wheels; fi \
    && /opt/reconciler/bin/pip install "$@" . \
    && /opt/reconciler/bin/reconciler --version

FROM ${BASE_IMAGE}
# A fixed uid, so the state volume keeps its owner across rebuilds, and a numeric USER, so
# an orchestrator can tell it is not root without reading /etc/passwd.
RUN groupadd --system --gid 10001 reconciler \
    && useradd --system --uid 10001 --gid reconciler --home-dir /var/lib/reconciler \
        --no-create-home --shell /usr/sbin/nologin reconciler \
    && mkdir -p /var/lib/reconciler /etc/reconciler \
    && chown reconciler:reconciler /var/lib/reconciler \
    && chmod 0750 /var/lib/reconciler
COPY --from=build /opt/reconciler /opt/reconciler
COPY config/reconciler.toml /usr/share/doc/reconciler/reconciler.example.toml
ENV PATH=/opt/reconciler/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/reconciler \
    RECONCILER_CONFIG=/etc/reconciler/reconciler.toml \
    RECONCILER_DAEMON__STATE_DIR=/var/lib/reconciler \
    RECONCILER_DAEMON__LISTEN=0.0.0.0:8088 \
    RECONCILER_DAEMON__ADMIN_LISTEN=127.0.0.1:8089
USER 10001:10001
VOLUME ["/etc/reconciler", "/var/lib/reconciler"]
EXPOSE 8088 8089
# Exec form: the daemon is PID 1 and gets `docker stop`'s SIGTERM itself.
ENTRYPOINT ["reconciler"]
CMD ["run"]

# The reconciler daemon as a container. It needs the Docker engine's socket to build images:
#   docker run -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /etc/reconciler:/etc/reconciler:ro -v reconciler-state:/var/lib/reconciler \
#     --group-add "$(stat -c %g /var/run/docker.sock)" -p 127.0.0.1:8088:8088 reconciler
# BASE_IMAGE is a build argument so the image can be built where no hub is reachable.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python3 -m venv /opt/reconciler
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN /opt/reconciler/bin/pip install --no-cache-dir --no-compile . \
    && /opt/reconciler/bin/python -c "import reconciler.cli"

FROM ${BASE_IMAGE}
RUN (getent group reconciler || groupadd --system --gid 10001 reconciler) \
    && (id reconciler || useradd --system --uid 10001 --gid reconciler --home-dir /var/lib/reconciler --shell /usr/sbin/nologin reconciler) \
    && mkdir -p /var/lib/reconciler /etc/reconciler \
    && chown reconciler:reconciler /var/lib/reconciler
COPY --from=build /opt/reconciler /opt/reconciler
COPY config/reconciler.toml /etc/reconciler/reconciler.example.toml
ENV PATH=/opt/reconciler/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RECONCILER_CONFIG=/etc/reconciler/reconciler.toml \
    RECONCILER_DAEMON__STATE_DIR=/var/lib/reconciler \
    RECONCILER_DAEMON__LISTEN=0.0.0.0:8088
USER reconciler
VOLUME ["/var/lib/reconciler"]
EXPOSE 8088
ENTRYPOINT ["reconciler"]
CMD ["run"]

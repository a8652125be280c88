# fragment-connector: the daemon (`fragment-connector run`) in a slim Python image.
#
#   docker build -t fragment-connector .
#   docker run -v "$PWD/config.yaml:/etc/fragment-connector/config.yaml:ro" \
#     -e FRAGMENT_CONNECTOR_CONFIG=/etc/fragment-connector/config.yaml \
#     -e FRAGMENT_CONNECTOR__FRAGMENT__TOKEN=... -v fc-data:/data -p 8080:8080 fragment-connector
#   docker run --rm ... fragment-connector reconcile --dry-run    # any other subcommand
#
# Classic-builder compatible on purpose (no `# syntax=` line, no RUN --mount, no heredocs), so
# older engines and rootless builders take it. The state and the sandbox file live in /data
# (WORKDIR). The HEALTHCHECK (`fragment-connector healthcheck`) reads the same config as the
# daemon (file and FRAGMENT_CONNECTOR__* variables), so it probes whatever `server.port` says.

FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH

RUN python3 -m venv /opt/venv

WORKDIR /src

# Dependencies first, read from pyproject.toml: this layer survives code-only changes.
COPY pyproject.toml README.md ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# Then the project itself (a regular install, not editable); the build tools leave the venv.
COPY connector/ connector/
COPY adapters/ adapters/
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip uninstall --yes setuptools wheel \
    && pip check \
    && fragment-connector --version


FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="fragment-connector" \
      org.opencontainers.image.description="Keeps a Fragment backlog equal to a back-office's open tickets."

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN useradd --no-log-init --uid 10001 --user-group --no-create-home \
        --home-dir /data --shell /usr/sbin/nologin connector \
    && mkdir -p /data \
    && chown 10001:10001 /data

COPY --from=build /opt/venv /opt/venv

WORKDIR /data
USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["fragment-connector", "healthcheck"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["fragment-connector"]
CMD ["run"]

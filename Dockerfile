# The collector's image (docs/deploy.md). Two stages: the first builds a virtualenv, the second holds only
# Python, that virtualenv and an empty /data for the pending store; nothing in it needs a shell.
#
# The base is pinned by exact tag; pin it by digest too where your registry is reachable
# (PYTHON_IMAGE=docker.io/library/python:3.11.13-slim-bookworm@sha256:...). Both stages must use the same
# image: the virtualenv points at its Python.
ARG PYTHON_IMAGE=docker.io/library/python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Behind a TLS-inspecting proxy, pip needs its CA: pass it with --build-arg PIP_CERT=<path in the build
# container> and mount it there (scripts/image does).
ARG PIP_CERT
RUN python3 -m venv /opt/collector
# The dependencies are pinned in pyproject.toml; a non-editable install copies the package in.
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN /opt/collector/bin/pip install /src \
 && mkdir /data

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/collector /opt/collector
# Owned by the user that runs the collector: a fresh volume mounted here takes this owner.
COPY --from=build --chown=10001:10001 /data /data
# A numeric user, so that orchestrators can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /data
ENV DATABASE_URL=sqlite:///data/pending.db \
    SERVER_HOST=0.0.0.0 \
    SERVER_PORT=3000 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/data"]
EXPOSE 3000
STOPSIGNAL SIGTERM
# Exec form: the collector is PID 1, with no shell in between, and gets SIGTERM itself (it handles it).
ENTRYPOINT ["/opt/collector/bin/event-collector"]
CMD ["serve"]

# One image for every role:
#   docker run IMAGE                   the web app and API (`fotoowl serve`)
#   docker run IMAGE fotoowl worker    a worker process (same as `arq fotoowl.worker.Settings`)
#   docker run IMAGE fotoowl migrate   apply the SQL migrations once
#
# The image holds the installed wheel, not the source tree: the builder stage builds the wheel (sql/,
# templates/ and static/ ship inside the package) and the runtime stage pip-installs it into
# /opt/venv, as any other install would.

ARG PYTHON_IMAGE=python:3.11-slim
ARG NODE_IMAGE=node:22-slim

# --- htmx for the pages, from npm as `make install` does (the pages work without it) -------------
FROM ${NODE_IMAGE} AS assets
RUN npm install --prefix /assets --no-audit --no-fund --silent htmx.org@2

# --- the wheel -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build

# The dependency list on its own, from pyproject.toml alone: the runtime stage installs it in a layer
# of its own, rebuilt only when this list changes, not on every source edit.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
    > /requirements.txt

COPY README.md ./
COPY src/ src/
COPY sql/ sql/
COPY templates/ templates/
COPY static/ static/
COPY --from=assets /assets/node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
RUN pip wheel --no-deps --wheel-dir /dist .

# --- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="fotoowl" \
      org.opencontainers.image.description="Copies every image of a public Google Drive folder into S3-compatible storage"

RUN groupadd --system --gid 10001 fotoowl \
    && useradd --system --uid 10001 --gid fotoowl --home-dir /var/lib/fotoowl --create-home \
       --shell /usr/sbin/nologin fotoowl

COPY --from=builder /requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt

# --no-index: every dependency is already installed above, so nothing newer can slip in here.
COPY --from=builder /dist/ /tmp/dist/
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-index /tmp/dist/fotoowl-*.whl \
    && rm -rf /tmp/dist /tmp/requirements.txt

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FOTOOWL_HOST=0.0.0.0 \
    FOTOOWL_PORT=8000 \
    FOTOOWL_LOG_FORMAT=json \
    FOTOOWL_DATA_DIR=/var/lib/fotoowl \
    FOTOOWL_FILE_ROOT=/var/lib/fotoowl/files

# The installed code stays root-owned and read-only to the process; only its data folder, also its
# working directory, is writable. The user is numeric (the fotoowl user created above) so runtimes
# such as Kubernetes can tell it is not root.
WORKDIR /var/lib/fotoowl
USER 10001:10001
EXPOSE 8000

# slim has no curl; the standard library answers the same question. For workers, compose replaces
# this with a check of their own (they serve no HTTP).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FOTOOWL_PORT', '8000') + '/healthz', timeout=4)"]

CMD ["fotoowl", "serve"]

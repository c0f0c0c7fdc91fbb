# One image for every role:
#   docker run IMAGE                   the web app and API (`fotoowl serve`)
#   docker run IMAGE fotoowl worker    a worker process (same as `arq fotoowl.worker.Settings`)
#   docker run IMAGE fotoowl migrate   apply the SQL migrations once
#
# The source tree lives at /app exactly as in a checkout (src/, sql/, templates/, static/), and the
# package is installed editable from it: db.sql_dir() and app.templates_dir()/static_dir() look at
# the top of the source tree first, so they resolve without copies in odd places.

ARG PYTHON_IMAGE=python:3.11-slim
ARG NODE_IMAGE=node:22-slim

# --- htmx for the pages, from npm as `make install` does (the pages work without it) -------------
FROM ${NODE_IMAGE} AS assets
RUN npm install --prefix /assets --no-audit --no-fund --silent htmx.org@2

# --- wheels for every dependency, then the virtualenv ----------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app

# Dependencies first, from pyproject.toml alone with a stub package, so this layer is rebuilt only
# when the dependencies change, not on every source edit.
COPY pyproject.toml README.md ./
RUN mkdir -p src/fotoowl && touch src/fotoowl/__init__.py \
    && pip wheel --wheel-dir /wheels . \
    && rm /wheels/fotoowl-*.whl \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index /wheels/*.whl \
    && /opt/venv/bin/pip install "setuptools>=70.1" \
    && rm -rf src build /wheels

COPY src/ src/
COPY sql/ sql/
COPY templates/ templates/
COPY static/ static/
COPY --from=assets /assets/node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
# No build isolation: setuptools (70.1+ builds wheels without the `wheel` package) is already in
# the venv, so this step needs no index.
RUN /opt/venv/bin/pip install --no-deps --no-index --no-build-isolation -e . \
    && /opt/venv/bin/python -m compileall -q src

# --- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="fotoowl" \
      org.opencontainers.image.description="Copies every image of a public Google Drive folder into S3-compatible storage"

RUN groupadd --system --gid 10001 fotoowl \
    && useradd --system --uid 10001 --gid fotoowl --home-dir /var/lib/fotoowl --create-home \
       --shell /usr/sbin/nologin fotoowl

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FOTOOWL_HOST=0.0.0.0 \
    FOTOOWL_PORT=8000 \
    FOTOOWL_LOG_FORMAT=json \
    FOTOOWL_DATA_DIR=/var/lib/fotoowl \
    FOTOOWL_FILE_ROOT=/var/lib/fotoowl/files

# The code stays root-owned and read-only to the process; only its data folder is writable. The user
# is numeric (the fotoowl user created above) so runtimes such as Kubernetes can tell it is not root.
WORKDIR /app
USER 10001:10001
EXPOSE 8000

# slim has no curl; the standard library answers the same question. For workers, compose replaces
# this with a check of their own (they serve no HTTP).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FOTOOWL_PORT', '8000') + '/healthz', timeout=4)"]

CMD ["fotoowl", "serve"]

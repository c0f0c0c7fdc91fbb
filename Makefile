# Everything installs into .venv; a fresh machine needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HTMX := static/vendor/htmx.min.js
PYTEST_ARGS ?=

.PHONY: install run test test-slow test-system lint fmt bench bench-quick bench-scale bench-sync bench-sync-quick chaos chaos-quick browser clean compose-test compose-test-quick

install: $(STAMP) $(HTMX)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("fotoowl needs Python 3.11 or newer" if sys.version_info < (3, 11) else 0)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[embedded,test,dev,bench]'
	touch $(STAMP)

# htmx from npm into a git-ignored folder; the pages work without it (plain forms and links).
$(HTMX):
	@mkdir -p static/vendor
	@if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-audit --no-fund --prefix .cache/npm htmx.org@2 >/dev/null 2>&1 \
		&& cp .cache/npm/node_modules/htmx.org/dist/htmx.min.js $(HTMX) \
		|| echo "htmx could not be installed; pages fall back to full reloads"; \
	else echo "npm not found; pages fall back to full reloads"; fi

run: install
	$(BIN)/fotoowl dev

# Debian's Chromium (browser test) and docker-compose (validates docker-compose.yml; no engine
# needed), where they are missing and we may install them.
browser:
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="chromium"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get install -y -qq $$missing >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 \
			&& apt-get install -y -qq $$missing >/dev/null 2>&1; } \
			|| echo "could not install$$missing; the tests that need it will be skipped"; \
		else echo "$$missing not installed; the tests that need it will be skipped"; fi; \
	fi

# The suite but its multi-process, crash and restart tests (marked slow), which `make test-slow` runs.
test: install browser
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

# The same suite against already running PostgreSQL and Redis (the machine's own, or managed ones).
test-system: install
	FOTOOWL_TEST_DATABASE_URL=$${FOTOOWL_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres} \
	FOTOOWL_TEST_REDIS_URL=$${FOTOOWL_TEST_REDIS_URL:-redis://127.0.0.1:6379/1} \
	$(BIN)/pytest -m "not browser and not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench chaos
	$(BIN)/ruff format --check src tests bench chaos
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --fix src tests bench chaos
	$(BIN)/ruff format src tests bench chaos

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

# A gallery of 1,000,000 images (bench/scale.py): GET /images latencies idle and during an import, and a
# 100,000-file import; uses PostgreSQL at 127.0.0.1:5432 when it answers. Writes the Scale section of RESULTS.md.
bench-scale: install
	$(BIN)/python -m bench --scale $(BENCH_ARGS)

# A second import of an unchanged 10,000-image folder and a folder of copies under other ids
# (bench/sync.py): bytes downloaded and time against the listing. Writes bench/RESULTS-sync.md.
bench-sync: install
	$(BIN)/python -m bench.sync $(BENCH_ARGS)

bench-sync-quick: install
	$(BIN)/python -m bench.sync --quick $(BENCH_ARGS)

# Real faults (servers stopped and killed, workers killed, Drive errors) during 3,000-image imports;
# writes RELIABILITY.md. chaos-quick: 400 images and short faults for CI (chaos/RESULTS-quick.md).
chaos: install
	$(BIN)/python -m chaos $(CHAOS_ARGS)

chaos-quick: install
	$(BIN)/python -m chaos --quick $(CHAOS_ARGS)

# The container deployment for real (deploy/compose_test.py, README "Testing the container deployment"):
# stand-in base images built from Debian's mirror (cached), the image from the Dockerfile, the real
# docker-compose.yml up with two workers, an import with a worker killed and the api restarted, every
# image checked, everything removed. Podman (installed when root on Debian) or Docker with compose.
# compose-test-quick: a smaller folder and no faults, for a quick look at a change to the deployment.
compose-test: install
	$(BIN)/python deploy/compose_test.py $(COMPOSE_TEST_ARGS)

compose-test-quick: install
	$(BIN)/python deploy/compose_test.py --images 60 --no-faults $(COMPOSE_TEST_ARGS)

clean:
	rm -rf $(VENV) .cache static/vendor .pytest_cache .mypy_cache .ruff_cache

# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# The browser tests drive Debian's Chromium through playwright-core (Playwright's own browser
# download is not used).
CHROMIUM := /usr/bin/chromium
# Jobs run in a sandbox that Debian's bubblewrap builds (docs/SECURITY.md).
BWRAP := /usr/bin/bwrap
# tests/e2e/test_nginx.py runs Debian's nginx in front of two servers (docs/deploy.md).
NGINX := /usr/sbin/nginx
# pytest-xdist workers for `make test` (tests marked serial then run alone).
TEST_WORKERS ?= 2

.PHONY: install install-test install-browser run test lint bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(PIP) install -r requirements-test.txt
	touch $@

install: $(VENV)/.installed $(BWRAP)

install-test: $(VENV)/.installed-test $(BWRAP)

## bubblewrap, which builds job sandboxes: installed when root; otherwise a note says what to do.
$(BWRAP):
	@if [ "$$(id -u)" != 0 ]; then \
	echo "NOTE: bubblewrap ($@) is missing, so this server cannot sandbox jobs: only admins can run" \
	"them until root installs it (apt-get install bubblewrap). See docs/SECURITY.md." >&2; \
	elif ! command -v apt-get >/dev/null; then \
	echo "NOTE: install bubblewrap with this system's package manager; see docs/SECURITY.md." >&2; \
	else set -x; apt-get update && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bubblewrap; fi

## Chromium and playwright-core, for the browser tests (tests/e2e/test_events_js.py).
install-browser: $(CHROMIUM) node_modules/.installed

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo=sudo; \
	else echo "$@ is missing: install Debian's chromium package (as root)" >&2; exit 1; fi; \
	set -x; $$sudo apt-get update && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

node_modules/.installed: package.json package-lock.json
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	touch $@

## Debian's nginx, for the test that runs docs/deploy/nginx.conf in front of two servers.
$(NGINX):
	@if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo=sudo; \
	else echo "$@ is missing: install Debian's nginx package (as root)" >&2; exit 1; fi; \
	set -x; $$sudo apt-get update && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx

## Migrate the database and serve on http://127.0.0.1:5000 (SQLite under ./data by default).
run: install
	$(BIN)/trainflow server

## Install everything and run the whole test suite.
test: install-test install-browser $(NGINX)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not serial" --durations=15
	$(BIN)/python -m pytest -m serial --durations=5

## ruff, the import contracts of pyproject.toml ([tool.importlinter]) and mypy --strict ([tool.mypy]).
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/ruff format --check . || true

## Benchmarks (not part of `make test`): see bench/README.md.
bench: install-test
	$(BIN)/python bench/mlflow_writes.py

## Soak (not part of `make test`): 150 simulated users for 3 minutes against one server; see bench/README.md.
soak: install-test
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache node_modules

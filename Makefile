# Two commands for a new machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Twisted's default listen backlog is 50: a burst of connections would overflow it (1 s SYN retransmits).
BACKLOG ?= 1024
PYTEST_ARGS ?=
ARGS ?=
# DEBUG is off by default (chatapp/settings.py); `make run` is the development server, so it turns it on.
# `DEBUG=false SECRET_KEY=... make run` serves with production settings.
DEBUG ?= true
# daphne's own cap on an incoming WebSocket message and frame (bytes): past it the connection is dropped
# (close 1009). The app answers smaller frames over MAX_WS_FRAME_BYTES (512 KiB) with a readable error;
# tests/servers.py passes the same value (tests/chatapp/test_limits_docs.py checks they agree).
WS_MAX_BYTES ?= 1048576
# Every daphne process of one deployment writes its metrics here; /metrics and /api/metrics merge them.
PROMETHEUS_MULTIPROC_DIR ?= $(CURDIR)/.run/prometheus

# `make serve`: PROCESSES daphne processes behind Debian's nginx on SERVE_PORT (deploy/serve.py).
PROCESSES ?= 2
SERVE_PORT ?= 8080

.PHONY: run serve test install install-dev migrate lint check clean bench vendor

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q ".[dev]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	DEBUG=$(DEBUG) $(BIN)/python manage.py migrate --noinput

# scripts/devrun.py: a port already taken (another `make run`) stops it before anything is touched; the
# first run writes a git-ignored .env (DEBUG=true, a generated SECRET_KEY) so manage.py works here too;
# HOST=0.0.0.0 admits this machine's LAN names and addresses (ALLOWED_HOSTS unset) for a phone to use.
run: install
	$(BIN)/python scripts/devrun.py prepare --host $(HOST) --port $(PORT)
	DEBUG=$(DEBUG) $(BIN)/python manage.py migrate --noinput
	@echo "chatapp on http://$(HOST):$(PORT)/  (sign up at /accounts/signup/)"
	DEBUG=$(DEBUG) $(BIN)/python scripts/devrun.py serve --host $(HOST) --port $(PORT) --backlog $(BACKLOG) --ws-max-bytes $(WS_MAX_BYTES) --metrics-dir "$(PROMETHEUS_MULTIPROC_DIR)"

serve: migrate
	DEBUG=$(DEBUG) $(BIN)/python -m deploy.serve --processes $(PROCESSES) --host $(HOST) --port $(SERVE_PORT)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports --no-logo

# Pass 1: the whole suite on the embedded defaults (SQLite + in-process layer).
# Pass 2: the tests marked `services` or `both` against DATABASE_URL / REDIS_URL
#         (PostgreSQL + Redis); without them those tests skip, saying why (in CI they fail instead).
test: lint
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest -m "not services" $(PYTEST_ARGS)
	$(BIN)/pytest -m "services or both" $(PYTEST_ARGS)

# The requirement table, measured (benchmarks/run.py): fake provider, PostgreSQL + Redis (db 8), two daphne
# processes; `make bench ARGS=--quick` is the smoke run CI does. Writes bench-results/*.json.
bench: install-dev
	$(BIN)/python -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

# The thread page's Markdown renderer and sanitiser, from the versions tools/package-lock.json pins
# (npm ci --prefix tools), copied to static/vendor/ (served like any static file; no CDN). The source
# map comment goes: collectstatic's manifest would look for the .map. tests/test_vendor.py checks the copies.
vendor:
	mkdir -p static/vendor
	sed '/^\/\/# sourceMappingURL=/d' tools/node_modules/markdown-it/dist/browser/markdown-it.umd.min.js > static/vendor/markdown-it.min.js
	sed '/^\/\/# sourceMappingURL=/d' tools/node_modules/dompurify/dist/purify.min.js > static/vendor/purify.min.js
	cp tools/node_modules/markdown-it/LICENSE static/vendor/markdown-it.LICENSE.txt
	cp tools/node_modules/dompurify/LICENSE static/vendor/purify.LICENSE.txt

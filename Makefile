# SSE Commander. `make run` serves on 127.0.0.1:8000; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The default allowlist's tools that a minimal Debian may lack (ping, uptime/free).
RUN_APT_PACKAGES := iputils-ping procps
# Real components the tests start.
# python3: Debian's interpreter, readable by the unprivileged user the containment tests run as.
# chromium: the browser tests drive it with Playwright (executable_path, no browser download).
# gcc, libc6-dev: the benchmarks' C clients, built by `make bench-smoke` (part of `make test`).
# curl, jq: the README's examples, which tests/test_readme_examples.py runs as written.
# Cross compilers (tests/test_cross_compile.py): the C extensions build for arm64, riscv64 and 32-bit arm.
CROSS_APT_PACKAGES := gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-riscv64-linux-gnu libc6-dev-riscv64-cross \
	gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
TEST_APT_PACKAGES := $(RUN_APT_PACKAGES) nginx-light curl jq python3 chromium gcc libc6-dev $(CROSS_APT_PACKAGES)
# redis-server: the Redis store's tests (issue 16) start their own.
TEST_APT_PACKAGES += redis-server
# Building the C extensions app/process/_spawn.c and app/streaming/_jsonescape.c (pip install): a C compiler,
# libc headers, and the interpreter's headers (Debian's python3.X-dev, installed only if Python.h is missing).
BUILD_APT_PACKAGES := gcc libc6-dev
PYTHON_DEV_PACKAGE := $(notdir $(PYTHON))-dev

.PHONY: run install test test-deps run-deps test-system-deps build-deps python-headers lint cross-check clean npm-deps
# axe-core, which the accessibility tests load into the pages: pinned in tests/package.json and
# tests/package-lock.json (with its hash), installed with `npm ci` into tests/node_modules (git-ignored).
AXE := tests/node_modules/axe-core/axe.min.js

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg setup.py pyproject.toml app/process/_spawn.c app/process/spawner.c app/process/spawner.h \
	app/streaming/_jsonescape.c
	@$(MAKE) --no-print-directory build-deps
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install run-deps
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# Install missing Debian packages (needs root or passwordless sudo; skipped off Debian).
define apt_install
	@command -v dpkg >/dev/null || { echo "not Debian: install $(1) yourself"; exit 0; }; \
	missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

build-deps: $(BIN)/python
	$(call apt_install,$(BUILD_APT_PACKAGES))
	@$(BIN)/python -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || $(MAKE) --no-print-directory python-headers

python-headers:
	$(call apt_install,$(PYTHON_DEV_PACKAGE))

run-deps:
	$(call apt_install,$(RUN_APT_PACKAGES))

test-system-deps:
	$(call apt_install,$(TEST_APT_PACKAGES))

npm-deps:
	$(call apt_install,npm)

$(AXE): tests/package.json tests/package-lock.json
	@command -v npm >/dev/null || $(MAKE) --no-print-directory npm-deps
	cd tests && npm ci --no-audit --no-fund --ignore-scripts
	touch $(AXE)

# promtool (tests/test_metrics.py runs `promtool check metrics` and `check rules`): Debian's prometheus package
# unpacked into .cache/ without installing the server (apt-get download needs no root; its lists may).
PROMTOOL := .cache/prometheus/usr/bin/promtool
$(PROMTOOL):
	@command -v apt-get >/dev/null || { echo "not Debian: put a promtool at $(PROMTOOL) yourself"; exit 0; }; \
	set -e; rm -rf .cache/prometheus-deb; mkdir -p .cache/prometheus-deb; cd .cache/prometheus-deb; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	apt-get download prometheus 2>/dev/null || { $$sudo apt-get update -qq && apt-get download prometheus; }; \
	cd ../..; dpkg-deb -x .cache/prometheus-deb/prometheus_*.deb .cache/prometheus; rm -rf .cache/prometheus-deb; \
	touch $(PROMTOOL)

test-deps: install test-system-deps $(AXE) $(PROMTOOL)

lint: install
	$(BIN)/ruff check .

# The C extensions compiled with Debian's cross compilers (also part of `make test`'s pytest run).
cross-check: test-deps
	$(BIN)/pytest -q tests/test_cross_compile.py

test: test-deps
	$(BIN)/ruff check .
	$(BIN)/pytest
	$(BIN)/python -m bench --smoke

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis app/*/*.so tests/node_modules .cache

# Benchmarks (bench/README.md) against a real gunicorn -k gevent; C helpers are compiled with gcc at bench time.
# chromium: the console-under-a-flood benchmark drives the page in it (bench/console_flood.py).
BENCH_APT_PACKAGES := gcc libc6-dev chromium
# redis-server: the Redis store's rows (issue 16).
BENCH_APT_PACKAGES += redis-server
.PHONY: bench bench-smoke bench-deps
bench-deps: install
	$(call apt_install,$(BENCH_APT_PACKAGES))

# The full run (minutes): writes bench/RESULTS.md; py-spy (installed here) profiles the worker.
bench: bench-deps
	@test -x $(BIN)/py-spy || $(BIN)/pip install --quiet py-spy
	$(BIN)/python -m bench

# A tiny run of every benchmark (well under a minute): fails only if a benchmark breaks.
bench-smoke: bench-deps
	$(BIN)/python -m bench --smoke

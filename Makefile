# SSE Commander. `make run` serves on 127.0.0.1:8000; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := nginx-light curl procps

.PHONY: run install test test-deps system-deps lint clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# Debian packages for the real components the tests start (nginx, curl, ps).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test-deps: install system-deps

lint: install
	$(BIN)/ruff check .

test: test-deps
	$(BIN)/ruff check .
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

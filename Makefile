# make test: create .venv, install requirements (dev included) and npm packages, install the services' packages, run pytest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test bench chat demo venv services clean

test: venv services
	$(PY) -m pytest

# Benchmarks on the real services (see bench/): python -m bench [breaker|delivery|recovery|scanning|latency]
bench: venv services
	$(PY) -m bench

venv: $(VENV)/.installed

# requirements.txt is what production needs; requirements-dev.txt adds the tests' and benchmarks' packages.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Debian packages for PostgreSQL and Redis, installed only when missing (never upgraded).
# The tests start the servers themselves on free ports of 127.0.0.1.
services: venv node_modules/.package-lock.json
	$(PY) -m devstack install

# anvil (local EVM node) and solc-js, pinned in package-lock.json
node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund

# Talk to the real bot by hand through the Bot API stand-in (see README).
chat: venv services
	$(PY) -m devstack chat

# A scripted disaster-recovery drill against the whole local stack; KEEP=1 leaves it running afterwards.
demo: venv services
	$(PY) -m devstack demo $(if $(KEEP),--keep,)

clean:
	rm -rf $(VENV) .pytest_cache

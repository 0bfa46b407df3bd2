# make test: create .venv, install requirements, install the services' packages, run pytest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test chat venv services clean

test: venv services
	$(PY) -m pytest

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# Debian packages for PostgreSQL and Redis, installed only when missing (never upgraded).
# The tests start the servers themselves on free ports of 127.0.0.1.
services: venv
	$(PY) -m devstack install

# Talk to the real bot by hand through the Bot API stand-in (see README).
chat: venv services
	$(PY) -m devstack chat

clean:
	rm -rf $(VENV) .pytest_cache

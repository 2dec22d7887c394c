# Two commands set everything up from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORK ?= work
# `make demo REBUILD=1` regenerates data and retrains instead of reusing what is in $(WORK).
REBUILD ?= 0

.PHONY: demo test venv clean

venv: $(STAMP)

# torch first, pinned: 2.13.0 is the CPU wheel on these machines; letting pip resolve torch
# through an extra would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[client,export,serve,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	WORK=$(WORK) REBUILD=$(REBUILD) PY=$(PY) bash scripts/demo.sh

clean:
	rm -rf $(WORK) model_repository/*/

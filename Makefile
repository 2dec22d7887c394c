# Two commands set everything up from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORK ?= work
# `make demo REBUILD=1` regenerates data and retrains instead of reusing what is in $(WORK).
REBUILD ?= 0

.PHONY: demo test venv clean mutation

venv: $(STAMP)

# torch first, pinned: 2.13.0 is the CPU wheel on these machines; letting pip resolve torch
# through an extra would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[client,export,serve,dev]'
	touch $(STAMP)

# --durations: every CI log names the slowest tests, where the suite's time goes.
test: $(STAMP)
	$(PY) -m pytest -q --durations=25 tests

# Mutation testing (slow; not in CI): mutmut 3 on the modules in pyproject's [tool.mutmut], in a
# copy under work/ so its mutants/ folder stays out of the tree and a concurrent edit cannot change
# the code under test mid-run. Results are cached there: a rerun only retests what changed.
# `make mutation MUTANTS='clients.letterbox*'` limits the run to mutants matching a glob.
# How to read the report: docs/testing.md.
MUTATION_DIR ?= $(WORK)/mutation
MUTANTS ?=
MUTATION_JOBS ?= 2
mutation: $(STAMP)
	mkdir -p $(MUTATION_DIR)
	rm -rf $(addprefix $(MUTATION_DIR)/,clients export models tests)
	cp -a clients export models tests pyproject.toml $(MUTATION_DIR)/
	cd $(MUTATION_DIR) && $(abspath $(VENV))/bin/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS)
	cd $(MUTATION_DIR) && $(abspath $(PY)) tests/mutation_report.py --json mutation-report.json

demo: $(STAMP)
	WORK=$(WORK) REBUILD=$(REBUILD) PY=$(PY) bash scripts/demo.sh

clean:
	rm -rf $(WORK) model_repository/*/

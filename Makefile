# Local Substitutes: build the book and run the tests in a local virtualenv.
#   make book   - execute every chapter and build the HTML book into _build/html
#   make test   - run the test suite (includes a full book build)
#   make clean  - remove build outputs (keeps .venv)

SHELL   := /bin/bash
PYTHON  ?= python3
VENV    := .venv
BIN     := $(CURDIR)/$(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   := torch==2.13.0
# run everything with the venv first on PATH so that the `python3` kernel
# used by the executed chapters is the venv's interpreter
RUN     := PATH="$(BIN):$$PATH" VIRTUAL_ENV="$(CURDIR)/$(VENV)"

.PHONY: venv book experiments test clean

venv: $(STAMP)

# torch is installed first and pinned, so the package install below never pulls a CUDA build
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

book: venv experiments
	$(RUN) $(BIN)/jupyter-book build . --builder html

# papermill runs of notebooks/experiment.ipynb on the embedded default data (book/experiments/default)
experiments: venv
	$(RUN) $(BIN)/python notebooks/run_experiments.py --set default

test: venv
	$(RUN) $(BIN)/python -m pytest -q tests

clean:
	rm -rf _build .pytest_cache .hypothesis *.egg-info lsub_helpers.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# Local Substitutes: build the book and run the tests in a local virtualenv.
#   make book   - execute every chapter and build the HTML book into _build/html
#   make student - a copy of the book without solutions in _build/student, its HTML in _build/student/_build/html
#   make test   - run the test suite (includes a full book build and a headless-browser check of every page)
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

.PHONY: venv book student experiments test clean

venv: $(STAMP)

# torch is installed first and pinned, so the package install below never pulls a CUDA build
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

# -W: a Sphinx warning (an error output, stderr, a banner or path in an output: _ext/book_checks.py) fails the build
book: venv experiments
	$(RUN) $(BIN)/jupyter-book build . --builder html -W --keep-going

# the student copy: chapters without solutions, hide_solutions: true; built like the book
student: venv experiments
	rm -rf _build/student
	$(RUN) $(BIN)/python -m lsub_helpers.exercises student . _build/student
	$(RUN) $(BIN)/jupyter-book build _build/student --builder html -W --keep-going

# papermill runs of notebooks/experiment.ipynb on the embedded default data (book/experiments/default)
experiments: venv
	$(RUN) $(BIN)/python notebooks/run_experiments.py --set default

test: venv
	$(RUN) $(BIN)/python -m pytest -q tests

clean:
	rm -rf _build .pytest_cache .hypothesis *.egg-info lsub_helpers.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

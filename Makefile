# The two commands of the README. Each creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench golden clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files record which extras are installed, so re-running is quick.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $@ $(VENV)/.installed-test $(VENV)/.installed

# Every seed reproduced (exit 1 if one misses); the pictures become the README's gallery.
demo: $(VENV)/.installed
	$(BIN)/funcdl gradcheck
	$(BIN)/funcdl demo --out docs/gallery

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n auto

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_autodiff.py

golden: $(VENV)/.installed-bench
	for script in tests/golden/generate_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

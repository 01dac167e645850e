# The two commands of the README. Each creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo gallery test test-floor bench golden docs docs-serve docs-check clean

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

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $@ $(VENV)/.installed-test $(VENV)/.installed

# Every seed reproduced (exit 1 if one misses). The pictures go to runs/demo/ (ignored by git):
# the README's first command leaves every tracked file as it is.
demo: $(VENV)/.installed
	$(BIN)/funcdl gradcheck
	$(BIN)/funcdl demo

# Regenerates the committed pictures of the README's gallery and the tutorials, on purpose.
gallery: $(VENV)/.installed
	$(BIN)/funcdl demo --out docs/gallery

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n auto

# The fast tests on the oldest versions pyproject.toml allows (constraints/floor.txt), in a
# venv of their own.
FLOOR := .venv-floor
test-floor:
	test -x $(FLOOR)/bin/python || $(PYTHON) -m venv $(FLOOR)
	$(FLOOR)/bin/python -m pip install --quiet --upgrade pip
	$(FLOOR)/bin/python -m pip install --quiet -c constraints/floor.txt -e ".[test]"
	$(FLOOR)/bin/python -m pytest -q -n auto -m "not slow"

# The documentation site: a strict build into site/ (ignored by git), served locally, checked
# in a headless browser (skipped, saying so, where chromium is not installed).
docs: $(VENV)/.installed-docs
	$(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(VENV)/.installed-docs
	$(BIN)/mkdocs serve

docs-check: docs
	$(BIN)/python tools/check_site.py site

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_autodiff.py

golden: $(VENV)/.installed-bench
	for script in tests/golden/generate_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) $(FLOOR) build site runs *.egg-info .pytest_cache .hypothesis

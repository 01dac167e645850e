# The two commands of the README. Each creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo gallery test test-slow test-all test-floor test-min bench golden docs docs-serve docs-check clean

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

# The default run leaves out the tests marked slow (under 7 minutes on 2 cores); test-slow
# runs those (CI runs both); test-all runs everything at once.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n auto -m "not slow"

test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n auto -m slow

test-all: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n auto

# The fast tests (-m "not slow") on the oldest versions pyproject.toml allows: Python 3.11
# (FLOOR_PYTHON: any python3.11 executable, e.g. `make test-floor FLOOR_PYTHON=/path/to/python3.11`)
# and jax, jaxlib and NumPy as pinned in constraints/floor.txt, in a venv of their own.
FLOOR := .venv-floor
FLOOR_PYTHON ?= python3.11
test-floor:
	@$(FLOOR_PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || \
	  { echo "make test-floor needs Python 3.11 (the oldest supported) as FLOOR_PYTHON;" \
	         "'$(FLOOR_PYTHON)' is not one: make test-floor FLOOR_PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(FLOOR)/bin/python || $(FLOOR_PYTHON) -m venv $(FLOOR)
	$(FLOOR)/bin/python -m pip install --quiet --upgrade pip
	$(FLOOR)/bin/python -m pip install --quiet -c constraints/floor.txt -e ".[test]"
	$(FLOOR)/bin/python -m pytest -q -n auto -m "not slow"

# The same run under the name the minimum-versions check often goes by.
test-min: test-floor

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

# Two commands on a fresh machine with Python >= 3.10 and make:
#   make demo   set up .venv (if missing) and run the main job (bnnjax train)
#   make test   set up .venv (if missing), lint, and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo binarizer-demo test test-slow lint typecheck format clean notebooks sync-notebooks docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,data,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bnnjax train

binarizer-demo: $(STAMP)
	$(BIN)/bnnjax demo

lint: $(STAMP)
	$(BIN)/ruff check bnnjax tests benchmarks scripts notebooks docs/conf.py docs/_ext
	$(BIN)/ruff format --check bnnjax tests benchmarks scripts notebooks docs/conf.py docs/_ext

# mypy over the package; the settings are [tool.mypy] in pyproject.toml.
typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck notebooks docs
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

# Execute every notebook top to bottom in its small mode (BNNJAX_SMOKE=1),
# on CPU; a failing cell fails the build. The .ipynb files are listed
# explicitly so that --doctest-modules does not import the paired .py files.
notebooks: $(STAMP)
	BNNJAX_SMOKE=1 JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -n 2 \
		-p no:cacheprovider --nbmake --nbmake-timeout=300 notebooks/*.ipynb

# The documentation site (docs/_build/html). -W: any warning fails; -n: every
# cross-reference must resolve.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -n -b html docs docs/_build/html

# After editing a notebook's .py (or its .ipynb in Jupyter): update the
# pair, then rewrite each .ipynb from its .py without outputs.
sync-notebooks: $(STAMP)
	$(BIN)/jupytext --sync notebooks/*.py
	$(BIN)/jupytext --to ipynb notebooks/*.py

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

format: $(STAMP)
	$(BIN)/ruff check --fix bnnjax tests benchmarks scripts notebooks docs/conf.py docs/_ext
	$(BIN)/ruff format bnnjax tests benchmarks scripts notebooks docs/conf.py docs/_ext

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .mypy_cache docs/_build

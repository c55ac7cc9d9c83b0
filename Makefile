# Two commands on a fresh machine with Python >= 3.10 and make:
#   make demo   set up .venv (if missing) and run the main job (bnnjax train)
#   make test   set up .venv (if missing), lint, and run the tests
# Release files: make dist (wheel + sdist in dist/, checked by twine), then
# make check-dist (install them into a new virtual environment and train).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo binarizer-demo test test-slow lint typecheck format clean notebooks sync-notebooks docs dist check-dist

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
	$(BIN)/python -m pytest -q -n 2 -m "not slow" --durations=25

# Execute every notebook top to bottom in its small mode (BNNJAX_SMOKE=1),
# on CPU; a failing cell fails the build. The .ipynb files are listed
# explicitly so that --doctest-modules does not import the paired .py files.
# They run with their own TMPDIR, which must hold no bnnjax-* folder after.
notebooks: $(STAMP)
	rm -rf build/notebook-tmp && mkdir -p build/notebook-tmp
	TMPDIR=$(CURDIR)/build/notebook-tmp BNNJAX_SMOKE=1 JAX_PLATFORMS=cpu \
		$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider --nbmake \
		--nbmake-timeout=300 notebooks/*.ipynb
	@left=$$(find build/notebook-tmp -maxdepth 1 -name 'bnnjax-*'); \
	if [ -n "$$left" ]; then echo "notebooks left: $$left" >&2; exit 1; fi
	rm -rf build/notebook-tmp

# The documentation site (docs/_build/html). -W: any warning fails; -n: every
# cross-reference must resolve.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -n -b html docs docs/_build/html

# After editing a notebook's .py (or its .ipynb in Jupyter): update the
# pair, then rewrite each .ipynb from its .py without outputs.
sync-notebooks: $(STAMP)
	$(BIN)/jupytext --sync notebooks/*.py
	$(BIN)/jupytext --to ipynb notebooks/*.py

# The release files: a wheel and a source distribution in dist/, built from
# the working tree, with their metadata and README checked by twine.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# Installs the wheel into a new, empty virtual environment (not .venv, no
# system site-packages), trains one small epoch there on the sample shipped
# inside the package with every network proxy pointed at a closed port,
# then reinstalls bnnjax from the sdist in that environment and trains
# again. The run directories are under $(CHECK_DIST); the environment is
# removed at the end.
CHECK_DIST := build/check-dist
OFFLINE := env -u PYTHONPATH JAX_PLATFORMS=cpu no_proxy= NO_PROXY= \
	http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 \
	HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9
SMALL_TRAIN := train --epochs 1 --hidden 64 --no-progress
check-dist: dist
	rm -rf $(CHECK_DIST)
	$(PYTHON) -m venv $(CHECK_DIST)/venv
	$(CHECK_DIST)/venv/bin/python -m pip install --quiet dist/*.whl
	$(CHECK_DIST)/venv/bin/python -m pip check
	cd $(CHECK_DIST) && $(OFFLINE) venv/bin/bnnjax $(SMALL_TRAIN) \
		--out from-wheel > from-wheel.json
	$(CHECK_DIST)/venv/bin/python -m pip install --quiet --no-deps \
		--force-reinstall dist/*.tar.gz
	cd $(CHECK_DIST) && $(OFFLINE) venv/bin/bnnjax $(SMALL_TRAIN) \
		--out from-sdist > from-sdist.json
	cd $(CHECK_DIST) && $(OFFLINE) venv/bin/python -c \
		"import json, bnnjax; \
		assert '/site-packages/bnnjax/' in bnnjax.__file__, bnnjax.__file__; \
		runs = [json.load(open(f'from-{k}.json')) for k in ('wheel', 'sdist')]; \
		assert all(r['dataset'] == 'mnist-sample' and r['epochs'] == 1 \
		and r['test_accuracy'] > 0.3 for r in runs), runs; \
		print('check-dist: bnnjax', bnnjax.__version__, 'trained from the', \
		'wheel and the sdist; test accuracy', \
		[r['test_accuracy'] for r in runs])"
	rm -rf $(CHECK_DIST)/venv

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

format: $(STAMP)
	$(BIN)/ruff check --fix bnnjax tests benchmarks scripts notebooks docs/conf.py docs/_ext
	$(BIN)/ruff format bnnjax tests benchmarks scripts notebooks docs/conf.py docs/_ext

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .mypy_cache docs/_build \
		build dist

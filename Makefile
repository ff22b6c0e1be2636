# The two commands a newcomer needs: `make run` (the main job) and `make test` (the tests).
# Both create .venv and install the project into it on first use, at the exact versions of
# requirements.lock (pyproject.toml keeps the compatible ranges).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LATEST := .venv-latest

.PHONY: run test test-all test-latest lint docs linkcheck lock bench

$(STAMP): pyproject.toml $(LOCK)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)  ## the main job: a search of the paper's space (ResNet-50 on digits)
	$(VENV)/bin/se-search run --space search_spaces/resnet50.yaml

test: $(STAMP)  ## the default suite (slow tests excluded), about 16 minutes on 2 cores
	$(PY) -m pytest -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest

test-latest:  ## the default suite on the newest releases the ranges allow, not the lock
	python3 -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev]"
	$(LATEST)/bin/python tools/lockdiff.py $(LOCK)
	$(LATEST)/bin/python -m pytest -m "not slow"

lint: $(STAMP)  ## ruff (style, imports) and mypy (types) over the package
	$(VENV)/bin/ruff check se_search tests benchmarks dashboards tools
	$(VENV)/bin/ruff format --check se_search tests benchmarks dashboards tools
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml, docs/), into site/: strict, so a warning fails it, and
# offline. The two variables silence a banner some MkDocs plugins print on every build.
docs: $(STAMP)  ## build the documentation site; the CLI and API pages are generated
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict

linkcheck: $(STAMP)  ## every internal link and repo path of the README and docs/ resolves
	$(PY) tools/linkcheck.py

# Re-resolve the lock to the newest releases the ranges allow (pip's own constraint file,
# where the machine has one, caps what its wheel cache holds: torch here).
PIP_CONSTRAINT_FILE := $(wildcard /etc/xdg/pip/constraints.txt)
lock: $(STAMP)  ## refresh requirements.lock; commit it saying which versions moved
	$(PY) -m pip install -q pip-tools
	$(VENV)/bin/pip-compile --quiet --upgrade --extra=dev --strip-extras --no-emit-index-url \
	  --no-emit-find-links $(addprefix --constraint=,$(PIP_CONSTRAINT_FILE)) \
	  --output-file=$(LOCK) pyproject.toml

bench: $(STAMP)  ## SE overhead over plain ResNet-50 in every form, beside timm's; training
	$(VENV)/bin/se-search bench --json bench.json

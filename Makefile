# The two commands a newcomer needs: `make run` (the main job) and `make test` (the tests).
# Both create .venv and install the project into it on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-all lint bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)  ## the main job: a search of the paper's space (ResNet-50 on digits)
	$(VENV)/bin/se-search run --space search_spaces/resnet50.yaml

test: $(STAMP)  ## the default suite (slow tests excluded), 12-14 minutes on 2 cores
	$(PY) -m pytest -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check se_search tests benchmarks dashboards
	$(VENV)/bin/ruff format --check se_search tests benchmarks dashboards

bench: $(STAMP)  ## SE overhead over plain ResNet-50 in every form, beside timm's; training
	$(VENV)/bin/se-search bench --json bench.json

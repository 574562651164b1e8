# The README's two commands: `make run` trains the default experiment, `make test` runs the suite.
# Both create .venv when it is missing and install visionkit (editable, dev and loggers extras) and the
# example plugin into it. Nothing is downloaded at run time.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml plugins/visionkit-example/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,loggers,sweep,export]' -e plugins/visionkit-example
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m visionkit $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check visionkit hydra_plugins tests bench plugins
	$(PY) -m ruff format --check visionkit hydra_plugins tests bench plugins
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check visionkit hydra_plugins tests bench plugins
	$(PY) -m ruff format --check visionkit hydra_plugins tests bench plugins

format: $(STAMP)
	$(PY) -m ruff format visionkit hydra_plugins tests bench plugins
	$(PY) -m ruff check --fix visionkit hydra_plugins tests bench plugins

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache

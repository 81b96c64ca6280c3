# The two commands of the README: `make run` and `make test`. `make check` runs the linters;
# `make test-sqlite` runs the suite, money journeys included, on SQLite (`make run`'s).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/oms
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15
# The whole suite holds on SQLite as on PostgreSQL, the money journeys of tests/flows
# included; the few tests marked `postgres` (its row locks, SKIP LOCKED, its catalog and
# statistics) are skipped there, with the reason.
SQLITE_TESTS ?= tests
SQLITE_DIR ?= $(CURDIR)/var/test-sqlite

.PHONY: run test test-sqlite check bench fuzz venv clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip check
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) bin/run.py

test: $(STAMP)
	@DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) bin/require_services.py
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)} \
	$(PY) -m pytest $(PYTEST_ARGS)

test-sqlite: $(STAMP)
	@mkdir -p $(SQLITE_DIR)
	DATABASE_URL=sqlite:///$(SQLITE_DIR)/oms.sqlite3 \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)} \
	$(PY) -m pytest $(SQLITE_TESTS) $(PYTEST_ARGS)

check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

# schemathesis against the live app (gunicorn, the payment sandbox, a fresh <db>_fuzz
# PostgreSQL database) as a customer, a channel and anonymous; about 2 minutes.
fuzz: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)} $(PY) bin/fuzz_api.py

bench: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) bench/checkout.py
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) bench/overdue.py
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)} $(PY) bench/debit_run.py
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) bench/quote.py
	$(PY) bench/gateway.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis

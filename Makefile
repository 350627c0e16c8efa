# The two commands of the README: `make run` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help run test lint format migrate seed worker beat web bench faults clean

help:
	@echo "make run     start web app + Celery worker + beat on http://127.0.0.1:8000 (Ctrl-C stops all)"
	@echo "make test    run the whole test suite"
	@echo "make lint    ruff check, ruff format --check, makemigrations --check"
	@echo "make bench   run the benchmarks on PostgreSQL (DATABASE_URL); a table of figure/reference/ratio/target rows"
	@echo "make faults  the fault-injection suite: real PostgreSQL, its own Redis, gunicorn, worker and beat"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

var:
	@mkdir -p var/celery/queue var/celery/processed var/cache

migrate: $(STAMP) var
	$(BIN)/python manage.py migrate --noinput

seed: migrate
	$(BIN)/python manage.py seed_demo

run: seed
	@scripts/run.sh

test: $(STAMP) var
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) var
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The fault-injection suite (issue 11): its own redis-server, gunicorn, Celery worker and beat on loopback, a
# throw-away PostgreSQL database; stops by itself. FAULTS_ARGS="redis storm" runs some scenarios only.
faults: $(STAMP) var
	$(BIN)/python -m faults $(FAULTS_ARGS)

clean:
	rm -rf var staticfiles .pytest_cache

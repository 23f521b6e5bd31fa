# The two commands of the README's quick start — `make chat` and `make test` — and a few more.
# Each sets up what it needs on a fresh machine (a virtualenv from pyproject.toml) first.

VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: chat serve worker test lint typecheck format check-flows

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

chat: $(STAMP)  ## talk to the bot in this terminal (SQLite, in-process state)
	$(BIN)/consulta chat $(ARGS)

serve: $(STAMP)  ## the web process: simulator on http://localhost:8080/simulator
	$(BIN)/consulta serve

worker: $(STAMP)
	$(BIN)/consulta worker

check-flows: $(STAMP)
	$(BIN)/consulta flows check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)  ## mypy over the consulta package
	scripts/typecheck

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(STAMP)  ## lint, then the whole suite on SQLite and on PostgreSQL + Redis
	scripts/ensure-test-tools
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The two commands of the README's quick start — `make chat` and `make test` — and a few more.
# Each sets up what it needs on a fresh machine (a virtualenv from pyproject.toml) first.

VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: chat serve worker test lint typecheck format check-flows translations

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

# Every message id the code uses (t()'s second argument, Invalid()'s first, N_()) into the
# template, then merged into the es, en and fr catalogs: new ones arrive empty, for a
# translator to fill (the tests fail until they are).
translations: $(STAMP)  ## update locales/ from the code
	$(BIN)/pybabel extract --no-default-keywords -k t:2 -k Invalid:1 -k N_ --no-location \
	  --sort-output --project=Consulta --copyright-holder="The Consulta team" \
	  --msgid-bugs-address=planning-team@consulta.example -o locales/consulta.pot \
	  bot flows adapters storage
	$(BIN)/pybabel update --no-fuzzy-matching --ignore-obsolete -i locales/consulta.pot \
	  -d locales -D consulta

typecheck: $(STAMP)  ## mypy over the consulta package
	scripts/typecheck

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(STAMP)  ## lint and type-check, then the whole suite on SQLite and on PostgreSQL + Redis
	scripts/ensure-test-tools
	$(MAKE) --no-print-directory lint
	scripts/typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

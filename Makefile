# The two commands a newcomer needs are `make run` and `make test`; everything else is here too.
# Installs come from the hash-locked requirements/run.txt (the service) and requirements/dev.txt
# (run + test, lint and bench tools); `make lock` regenerates both from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp
PYTEST_ARGS ?=
# Line and branch coverage of the whole suite, failing under [tool.coverage.report]'s floor;
# `make test COVERAGE= PYTEST_ARGS='-k cache'` runs part of the suite without it.
COVERAGE ?= --cov --cov-report=term-missing:skip-covered
# `make lock LOCK_ARGS=--upgrade` moves every pin to the newest release the floors allow;
# `LOCK_ARGS='--upgrade-package starlette'` moves one.
LOCK_ARGS ?=
LOCK_VENV := $(VENV)/.lock-tools
PIP_TOOLS ?= pip-tools==7.6.2
PIP_COMPILE = $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(LOCK_ARGS)

.PHONY: install install-dev run test lint format bench lock clean

install: $(RUN_STAMP) ## .venv with what the service needs to run (requirements/run.txt) and the package

install-dev: $(DEV_STAMP) ## install, plus the test, lint and bench tools (requirements/dev.txt)

# The locked set with hash checking, then the package itself, editable and without its
# dependencies (they are all in the lock; setuptools and wheel, its build backend, too).
# check_lock.py stops here when pyproject.toml asks for what the lock does not pin.
$(RUN_STAMP): requirements/run.txt pyproject.toml requirements/check_lock.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/run.txt
	$(BIN)/python requirements/check_lock.py requirements/run.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(RUN_STAMP)

$(DEV_STAMP): requirements/dev.txt $(RUN_STAMP)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/dev.txt
	$(BIN)/python requirements/check_lock.py requirements/dev.txt --extra dev
	$(BIN)/pip check
	touch $(DEV_STAMP)

run: install ## migrate, create a demo admin, print a token and curl examples, serve on :8000
	$(BIN)/stockroom serve --demo --host 127.0.0.1 --port 8000

test: install-dev ## the whole suite: unit, integration (real services), e2e, fuzz
	$(BIN)/pytest -n 2 --dist loadgroup $(COVERAGE) $(PYTEST_ARGS)

lint: install-dev ## ruff, mypy --strict and the import-linter layer contracts
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/mypy tests benchmarks
	PYTHONPATH=src $(BIN)/lint-imports

format: install-dev
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: install-dev ## load and throughput runs; prints tables (docs/performance.md explains them)
	$(BIN)/python -m benchmarks

# pip-tools lives in its own venv (inside .venv, so `make clean` removes it): it is not part
# of the lock it writes. dev.txt is constrained by run.txt, so the versions they share agree.
lock: ## regenerate requirements/run.txt and requirements/dev.txt (with hashes) from pyproject.toml
	test -x $(LOCK_VENV)/bin/pip-compile || \
	  { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet '$(PIP_TOOLS)'; }
	$(PIP_COMPILE) --build-deps-for=editable --output-file=requirements/run.txt pyproject.toml
	$(PIP_COMPILE) --extra=dev --constraint=requirements/run.txt \
	  --output-file=requirements/dev.txt pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .bench

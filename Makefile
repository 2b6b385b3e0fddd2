# The two commands a newcomer needs are `make run` and `make test`; everything else is here too.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test lint format bench clean

install: $(STAMP) ## create .venv with the package, its extras and the dev tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install ## migrate, create a demo admin, print a token and curl examples, serve on :8000
	$(BIN)/stockroom serve --demo --host 127.0.0.1 --port 8000

test: install ## the whole suite: unit, integration (real services), e2e, fuzz
	$(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: install ## ruff, mypy --strict and the import-linter layer contracts
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/mypy tests benchmarks
	PYTHONPATH=src $(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: install ## load and throughput runs; prints tables (docs/performance.md explains them)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .bench

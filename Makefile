# Developer shortcuts. The README's two quick-start commands work without make.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests are named as sentences and use pytest fixtures: docstrings and fixture shadowing are noise.
TEST_PYLINT_OFF := missing-function-docstring,missing-class-docstring,redefined-outer-name,protected-access

.PHONY: install run test lint format sim up up-sim down deploy-check

$(BIN)/ratesvc: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/ratesvc

run: install
	$(BIN)/ratesvc run

sim: install
	$(BIN)/ratesvc sim

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/black --check --diff src tests aerich_migrations bench locust
	$(BIN)/isort --check-only --diff src tests aerich_migrations bench locust
	$(BIN)/pylint src/ratesvc
	$(BIN)/pylint --disable=$(TEST_PYLINT_OFF) tests bench locust/*.py

format: install
	$(BIN)/isort src tests aerich_migrations bench locust
	$(BIN)/black src tests aerich_migrations bench locust

up:
	docker compose up --build -d

up-sim:
	docker compose -f docker-compose.yml -f docker-compose.sim.yml up --build -d

down:
	docker compose down

deploy-check: install
	$(BIN)/python -m pytest tests/deploy -q

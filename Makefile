# The README's quick start: `make run` and `make test` do all the set-up on a fresh clone (a venv
# in .venv with ratesvc and its dev tools, the first time or when pyproject.toml changes), then
# run. Only python3 (3.11+, with its venv module: Debian's python3-venv) and make are needed. `.ci/run` uses the same
# targets. Without make, see the README ("No make?").
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests are named as sentences and use pytest fixtures: docstrings and fixture shadowing are noise.
TEST_PYLINT_OFF := missing-function-docstring,missing-class-docstring,redefined-outer-name,protected-access

.PHONY: install run run-sim test lint format sim up up-sim up-sentinel down deploy-check status-screenshot

$(BIN)/ratesvc: pyproject.toml
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "ratesvc needs Python 3.11 or newer; $(PY) is $$($(PY) -V 2>&1)." \
		"Run: make $(MAKECMDGOALS) PY=python3.11 (or newer)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/ratesvc

run: install
	$(BIN)/ratesvc run

run-sim: install
	$(BIN)/ratesvc run --sim

sim: install
	$(BIN)/ratesvc sim

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/black --check --diff src tests testkit aerich_migrations bench locust
	$(BIN)/isort --check-only --diff src tests testkit aerich_migrations bench locust
	$(BIN)/pylint src/ratesvc
	$(BIN)/pylint --disable=$(TEST_PYLINT_OFF) tests bench locust/*.py
	$(BIN)/pylint testkit

format: install
	$(BIN)/isort src tests testkit aerich_migrations bench locust
	$(BIN)/black src tests testkit aerich_migrations bench locust

up:
	docker compose up --build -d

up-sim:
	docker compose -f docker-compose.yml -f docker-compose.sim.yml up --build -d

up-sentinel:
	docker compose -f docker-compose.yml -f docker-compose.sentinel.yml up --build -d

down:
	docker compose down

deploy-check: install
	$(BIN)/python -m pytest tests/deploy -q

# docs/status.png (README, "Status page"): the /status page of a fresh `ratesvc run --sim` in
# headless Chromium (Debian's chromium package)
status-screenshot: install
	$(BIN)/python bench/status_screenshot.py

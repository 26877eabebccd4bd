# The two commands the README opens with. Each creates .venv when missing and
# installs the project with its server and dev extras first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench authorizer-zip agent-pyz clean

# The agent runs on older Pythons than the service: check it for 3.10, the oldest mypy 2 targets.
# 3.9 itself is checked by a mypy running under Python 3.9 (tests/e2e/test_agent_py39.py).
MYPY_AGENT = $(BIN)/mypy --python-version 3.10 clients pyz/bootstrap.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,dev]'
	touch $(STAMP)

## demo: initialise a CA, start the service, bootstrap agents, make a real mTLS call
demo: $(STAMP)
	$(BIN)/python -m demo

## test: lint, type-check and run the whole suite (Postgres from ISSUER_TEST_DATABASE_URL)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MYPY_AGENT)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(MYPY_AGENT)

## bench: certificates/s, latency and CPU of `issuer serve` on a throwaway Postgres, beside cfssl when installed
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## authorizer-zip: the Lambda authorizer's deployment zips, dist/authorizer-x86_64.zip and dist/authorizer-arm64.zip
AUTHORIZER_PYTHON ?= 3.12
authorizer-zip: $(STAMP)
	$(BIN)/python deploy/authorizer/build_zip.py --arch x86_64 --arch arm64 --python-version $(AUTHORIZER_PYTHON) --out dist

## agent-pyz: issuer-agent as one file per CPU (Python 3.9.2+, glibc 2.28+): dist/issuer-agent.pyz (x86_64), dist/issuer-agent-aarch64.pyz
agent-pyz: $(STAMP)
	$(BIN)/python -m pyz.build --arch x86_64 --output dist/issuer-agent.pyz
	$(BIN)/python -m pyz.build --arch aarch64 --output dist/issuer-agent-aarch64.pyz

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache dist

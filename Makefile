# `make demo` and `make test` each bring .venv up to date from pyproject.toml first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint faults bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,docs]'
	touch $(STAMP)

DEMO_USERS ?= 100000
# Processes that run the tests (pytest-xdist). Most of the suite waits on brokers, databases
# and subprocesses, so three on two cores took 7 minutes where one took 14.
TEST_PROCESSES ?= 3

demo: $(STAMP)
	$(BIN)/python -m ledger.cli.demo --users $(DEMO_USERS)

# Lint, types, the event schemas against the released versions (`ledger schema check`,
# backward), then the tests.
test: $(STAMP)
	$(BIN)/ruff check ledger consumers infra tests tools examples
	$(BIN)/mypy
	$(BIN)/ledger schema check
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES)

# The benchmark suite: the ledger against its baselines on the same data (not in `make test`;
# a --quick run of it is). Results also in .bench/results.json.
bench: $(STAMP)
	$(BIN)/ledger bench -o .bench/results.json

# The fault scenarios at larger sizes, with their figures (not part of `make test`).
FAULTS_SCALE ?= 1

faults: $(STAMP)
	LEDGER_REQUIRE_POSTGRES=1 $(BIN)/python -m tools.faults --scale $(FAULTS_SCALE)

# The documentation site (docs/, mkdocs.yml) into site/; --strict fails on a broken link.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check ledger consumers infra tests tools examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) ledger.db demo-out

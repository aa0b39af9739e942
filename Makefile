# One command to set up and open the console; one to set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test test-fast lint typecheck contracts screenshots bench clean setup

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/syncbridge --demo

# The whole suite: what .ci/run runs. The quick tests on two processes, then the slow ones
# (reliability, end to end, fuzz) alone, since they time real processes.
test: lint typecheck contracts
	$(BIN)/python -m pytest -q -n 2 -m "not slow"
	$(BIN)/python -m pytest -q -m slow

# The edit loop: the same checks, every test but the slow ones (reliability, end to end,
# fuzz), on three processes: the tests' waits on sockets and retries overlap, and on two
# cores a fourth process only adds its own start-up. Only the deselected fuzz tests use the
# Hypothesis and Schemathesis plugins: not loaded here.
test-fast: lint typecheck contracts
	$(BIN)/python -m pytest -q -n 3 -m "not slow" -p no:hypothesispytest -p no:schemathesis

lint: $(STAMP)
	$(BIN)/ruff check core syncbridge_tui tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict core syncbridge_tui

contracts: $(STAMP)
	$(BIN)/lint-imports

screenshots: $(STAMP)
	$(BIN)/python -m syncbridge_tui.screenshots screenshots

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[test,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache syncbridge.db syncbridge.db-wal syncbridge.db-shm

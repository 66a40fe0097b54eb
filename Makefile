# Opsdeck — thin wrappers over .venv and scripts/.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint install bench soak clean

up: $(STAMP)  ## run coordinator + worker agent + dashboard (embedded Redis when REDIS_URL is unset)
	$(BIN)/opsdeck up

test: $(STAMP)  ## lint, type-check and run the whole suite against a real redis-server
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

bench: $(STAMP)  ## run every benchmark in scripts/bench/ and write docs/benchmarks.md (installs wrk if missing)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }; }; } || \
		echo "wrk not available: the benchmarks fall back to a Python load generator"
	$(BIN)/python scripts/bench_all.py

soak: $(STAMP)  ## long fault runs (more tasks, kills and outages; bounded, stop by themselves)
	OPSDECK_SOAK=1 $(BIN)/pytest tests/reliability -p no:randomly --timeout=1800

install: $(STAMP)  ## create or update .venv only

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache

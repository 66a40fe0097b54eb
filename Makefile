# Opsdeck — thin wrappers over .venv and scripts/.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The whole resolved set (runtime + dev + build backend + pip), pinned with hashes. Installs use it and
# nothing else; `make lock` re-resolves it from pyproject.toml's ranges.
LOCK   := requirements.lock
# The one target the lock is resolved for (this project's machines and CI): CPython 3.11, Linux x86_64.
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28
LOCK_FLAGS  ?=

.PHONY: up test lint install lock bench soak clean

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
	OPSDECK_SOAK=1 $(BIN)/pytest tests/reliability tests/transport -p no:randomly --timeout=1800
	OPSDECK_SOAK=1 $(BIN)/pytest tests/dashboard tests/deploy tests/worker -m soak -p no:randomly --timeout=1800

install: $(STAMP)  ## create or update .venv only, with exactly the versions in requirements.lock

# pip first (its locked version, hash-checked), then the locked set, then the project itself without
# resolving anything (--no-deps) and built by the locked setuptools (--no-build-isolation); `pip check`
# fails when pyproject.toml asks for something the lock lacks (run `make lock`).
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	awk '/^pip==/ {p = 1} p {print} p && !/\\$$/ {exit}' $(LOCK) > $(VENV)/pip.lock
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(VENV)/pip.lock
	$(BIN)/python -m pip install -q --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check || { echo 'requirements.lock does not satisfy pyproject.toml: run make lock' >&2; exit 1; }
	touch $(STAMP)

# Re-resolve the lock from pyproject.toml's ranges (project deps, the dev extra, [build-system] requires
# and pip). Versions already locked are kept when they still fit; `make lock LOCK_FLAGS=--upgrade` moves
# everything to the newest allowed, `LOCK_FLAGS='--upgrade-package NAME'` one package.
# Needs only uv from .venv: a venv whose `pip check` fails (the lock lags pyproject.toml) still has it.
lock:  ## refresh requirements.lock (hashes, Python 3.11, Linux x86_64) from pyproject.toml
	test -x $(BIN)/uv || $(MAKE) --no-print-directory $(STAMP) || test -x $(BIN)/uv
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], "pip", sep="\n")' \
		| $(BIN)/uv pip compile pyproject.toml - --extra dev --generate-hashes $(LOCK_TARGET) \
			--custom-compile-command 'make lock' --quiet $(LOCK_FLAGS) -o $(LOCK)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache

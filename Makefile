# labelstore-kit: every target that runs code first runs the idempotent setup
# (scripts/setup.sh: Debian packages, .venv/, torch, the project with all extras).
# A setup with nothing to do takes well under a second.

SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python

# Extra arguments: make test PYTEST_ARGS='-k codec -x'; make demo DEMO_ARGS='--help'
PYTEST_ARGS ?=
DEMO_ARGS   ?=

# benchmarks/<name>.py -> benchmarks.<name>, skipping private files (_*.py, __init__.py).
BENCH_MODULES := $(patsubst benchmarks/%.py,benchmarks.%,\
                   $(sort $(filter-out benchmarks/_%,$(wildcard benchmarks/*.py))))

.PHONY: help setup demo test test-fast bench-quick clean distclean

help:
	@echo "make demo         set up, then run the reference pipeline demo (distill demo)"
	@echo "make test         set up, then run the whole test suite (pytest tests), including every"
	@echo "                  benchmark's --quick run from an empty cache (tests marked slow)"
	@echo "make test-fast    the test suite without the slow tests"
	@echo "make bench-quick  set up, then run every benchmark with --quick"
	@echo "make setup        only the idempotent setup (scripts/setup.sh)"
	@echo "make clean        remove caches and build files (keeps .venv/ and results/)"
	@echo "make distclean    clean, and also remove .venv/ and results/"

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/distill demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

# Runs every benchmark even when one fails, then fails if any did. It uses (and fills) the caches
# under results/; `make test` runs the same --quick runs from an empty cache.
bench-quick: setup
	@if [ -z "$(BENCH_MODULES)" ]; then echo "no benchmarks in benchmarks/"; exit 0; fi; \
	failed=""; \
	for m in $(BENCH_MODULES); do \
	  echo "== $(PY) -m $$m --quick"; \
	  $(PY) -m $$m --quick || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "bench-quick: failed:$$failed" >&2; exit 1; fi

clean:
	rm -rf build dist .pytest_cache .hypothesis .setup-stamp.lock
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) results

# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# `make demo DEMO_ARGS="--skus 200 --orders-per-minute 20"` passes flags to `channelhub demo`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test install services clean bench bench-quick chaos

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/channelhub demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest

# Benchmarks print ratios and append them to bench/RESULTS.md (not tests; see bench/README.md).
bench: $(STAMP)
	$(PY) bench/stock_sync.py && $(PY) bench/listings_sync.py --rate 50 && $(PY) bench/catalog_import.py && $(PY) bench/rate_limits.py

bench-quick: $(STAMP)
	$(PY) bench/stock_sync.py --quick && $(PY) bench/listings_sync.py --quick && $(PY) bench/catalog_import.py --quick && $(PY) bench/rate_limits.py --quick

# The full fault suite (about 25 minutes; restarts the local Redis and PostgreSQL): docs/reliability.md.
chaos: $(STAMP)
	$(PY) -m pytest -m chaos tests/chaos -s

services:
	bash .ci/services

clean:
	rm -rf $(VENV) instance .pytest_cache

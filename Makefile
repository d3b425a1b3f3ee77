# opsbook: `make demo` and `make test` each do all of their own setup on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.opsbook-installed
PYTHON ?= python3

.PHONY: setup demo test check lint bench clean image

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install-tools.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	bash scripts/install-tools.sh $(VENV)
	@touch $(STAMP)

demo: setup
	OPSBOOK=$(VENV)/bin/opsbook PY=$(PY) bash scripts/demo.sh

test: setup
	$(VENV)/bin/pytest

# the inner loop: unit and engine tests that start no service (markers set from the fixtures a test
# uses, tests/conftest.py) and are not slow, in one worker per core plus one (pytest-xdist: most of these
# tests wait on a kernel of their own; 2 cores: 2m28s with 3 workers, 2m57s with 2, 4m24s in one);
# `make test` stays the whole suite, in one process, sharing its services
check: setup
	$(VENV)/bin/pytest -m "not services and not slow" -n $$(( $$(nproc) + 1 ))

# the container image, built with buildah on a Debian base made by debootstrap (no Docker engine, no
# image registry); cached: an unchanged tree is not built again. Needs root.
image: setup
	HOST_PYTHON=$(PY) bash scripts/build-image.sh

lint: setup
	$(VENV)/bin/ruff check lib tests benchmarks
	$(VENV)/bin/mypy lib
	$(VENV)/bin/lint-imports --no-cache

bench: setup
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_archive.py --records 10000
	$(PY) benchmarks/bench_redact.py
	$(PY) benchmarks/bench_s3.py
	$(PY) benchmarks/bench_site.py
	$(PY) benchmarks/bench_canary.py --reps 1000
	$(PY) benchmarks/bench_kubeapi.py
	$(PY) benchmarks/bench_journal.py

clean:
	rm -rf $(VENV) build *.egg-info lib/*.egg-info

# One task runner for developers and CI alike. `make test` sets everything up on a fresh machine.
#
# Inside a virtual environment (VIRTUAL_ENV set), every target uses it. Outside one, the first
# target run makes `.venv/` here and uses that: nothing is ever installed into the system's Python.
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
# Where the Python package's `pip install -e` builds the native module, and what triggers it.
NATIVE_SOURCES := $(shell find rust -name '*.rs' -not -path '*/fuzz/*') Cargo.toml Cargo.lock rust/core/Cargo.toml rust/python/Cargo.toml pyproject.toml
BUILT := $(VENV)/.pipemode-built

.PHONY: help install build test test-rust test-python lint fmt fuzz bench demo

help: ## This list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(PYTHON):
	python3 -m venv $(VENV)

install: $(PYTHON) ## Install the package (editable) with the tensorflow, s3 and test extras
	$(PIP) install --quiet -e ".[tensorflow,s3,test]"
	@touch $(BUILT)

# The Python tests load the native module the last install built: rebuild it when Rust changed.
$(BUILT): $(NATIVE_SOURCES) | $(PYTHON)
	$(PIP) install --quiet --no-deps -e .
	@touch $(BUILT)

build: $(BUILT) ## Rebuild the native module if a Rust source changed since the last build

test: install test-rust test-python ## Set up, then run every test (Rust and Python)

test-rust: ## cargo test of the core (unit, property and doc tests)
	cargo test --workspace --exclude pipemode-python

test-python: build ## pytest, after rebuilding the native module if Rust changed
	$(PYTHON) -m pytest

lint: install ## rustfmt, clippy, ruff, and the native module's stub checked against it
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	# The fuzz targets need nightly to run, but must keep compiling against the core's API.
	cargo check --quiet --manifest-path rust/core/fuzz/Cargo.toml --bins
	$(PYTHON) -m ruff check python tests benches examples
	$(PYTHON) -m ruff format --check python tests benches examples
	$(PYTHON) -m mypy.stubtest pipemode._native

fmt: $(PYTHON) ## Format Rust and Python, fix what ruff can
	cargo fmt --all
	$(PYTHON) -m ruff format python tests benches examples
	$(PYTHON) -m ruff check --fix python tests benches examples

fuzz: ## Every cargo-fuzz target for a minute (FUZZ_SECONDS); installs nightly and cargo-fuzz if missing
	.ci/fuzz

bench: install ## The benchmarks of benches/ (figures in benches/README.md)
	$(PYTHON) benches/bench_reader.py
	$(PYTHON) benches/bench_decode.py
	$(PYTHON) benches/bench_dataset.py
	$(PYTHON) benches/bench_per_record.py
	$(PYTHON) benches/bench_runner.py

demo: $(PYTHON) ## Install with TensorFlow and run the tutorial end to end (`pipemode demo`)
	$(PIP) install --quiet ".[tensorflow]"
	$(VENV)/bin/pipemode demo

# One task runner for developers and CI alike. `make test` sets everything up on a fresh machine.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install test test-rust test-python lint fmt bench demo

install:
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[tensorflow,s3,test]"

test: install test-rust test-python

test-rust:
	cargo test --workspace --exclude pipemode-python

test-python:
	$(PYTHON) -m pytest

lint: install
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	# The fuzz targets need nightly to run, but must keep compiling against the core's API.
	cargo check --quiet --manifest-path rust/core/fuzz/Cargo.toml --bins
	$(PYTHON) -m ruff check python tests benches examples
	$(PYTHON) -m ruff format --check python tests benches examples
	$(PYTHON) -m mypy.stubtest pipemode._native

fmt:
	cargo fmt --all
	$(PYTHON) -m ruff format python tests benches examples
	$(PYTHON) -m ruff check --fix python tests benches examples

bench: install
	$(PYTHON) benches/bench_reader.py
	$(PYTHON) benches/bench_decode.py
	$(PYTHON) benches/bench_dataset.py
	$(PYTHON) benches/bench_runner.py

demo:
	$(PIP) install --quiet ".[tensorflow]"
	pipemode demo

# Every cargo-fuzz target for a minute (FUZZ_SECONDS); installs nightly and cargo-fuzz if missing.
.PHONY: fuzz
fuzz:
	.ci/fuzz

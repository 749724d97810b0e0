# One task runner for developers and CI alike. `make test` sets everything up on a fresh machine.
#
# Inside a virtual environment (VIRTUAL_ENV set), every target uses it. Outside one, the first
# target run makes `.venv/` here (from $(PYTHON3): `make PYTHON3=python3.13 test` picks another)
# and uses that: nothing is ever installed into the system's Python.
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
PYTHON3 ?= python3
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
# What the wheels are built and checked with (not an extra: they are needed before any wheel).
BUILD_TOOLS := "maturin>=1.7,<2" "ziglang>=0.13,<0.18" "auditwheel>=6"
TOOLS := $(VENV)/.pipemode-build-tools
# Everything a wheel is made of; `make wheel` rebuilds the wheels when one changed.
WHEEL_SOURCES := $(shell find rust python \( -path rust/core/fuzz -o -name __pycache__ \) -prune -o -type f -not -name '*.so' -print) Cargo.toml Cargo.lock pyproject.toml README.md
WHEELS := dist/.wheels-built
INSTALLED := $(VENV)/.pipemode-installed
# The full run installs every extra pyproject.toml declares, and fails (rather than skips) the
# tests of a framework among them that does not import; see tests/conftest.py.
EXTRAS := $(shell sed -n '/^\[project.optional-dependencies\]/,/^\[/s/^\([a-z0-9_-]*\) = .*/\1/p' pyproject.toml)
comma := ,
empty :=
space := $(empty) $(empty)
REQUIRE := $(if $(filter tensorflow,$(EXTRAS)),tensorflow) $(if $(filter torch pytorch,$(EXTRAS)),torch) boto3 moto

.PHONY: help install develop wheel sdist test test-rust test-python test-wheels test-sdist lint fmt fuzz bench demo

help: ## This list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(PYTHON):
	$(PYTHON3) -m venv $(VENV)

$(TOOLS): | $(PYTHON)
	$(PIP) install --quiet $(BUILD_TOOLS)
	@touch $@

$(WHEELS): $(WHEEL_SOURCES) | $(TOOLS)
	TOOLS_PYTHON=$(PYTHON) .ci/build-wheels $$(.ci/pythons) $(PYTHON)
	@touch $@

wheel: $(WHEELS) ## Release wheels (manylinux_2_17 x86_64) for every CPython 3.9-3.13 found, in dist/

sdist: | $(TOOLS) ## The source distribution, in dist/ (it builds wherever Rust is)
	$(PYTHON) -m maturin sdist --out dist

# The wheel built for this venv's Python, then every extra's packages. Reinstalled, not
# upgraded: a rebuilt wheel keeps its version. --no-compile as in .ci/test-wheel.
$(INSTALLED): $(WHEELS)
	tag=$$($(PYTHON) -c 'import sys; print("cp%d%d" % sys.version_info[:2])') && \
	wheel=$$(ls dist/pipemode-*-$$tag-$$tag-manylinux*.whl) && \
	$(PIP) install --quiet --force-reinstall --no-deps "$$wheel" && \
	$(PIP) install --quiet --no-compile "$$wheel[$(subst $(space),$(comma),$(EXTRAS))]"
	@touch $@

install: $(INSTALLED) ## Build the wheels and install this venv's one, with every extra

develop: | $(PYTHON) ## Install editable from python/ instead (quicker edits; `make install` undoes it)
	$(PIP) install --quiet -e ".[$(subst $(space),$(comma),$(EXTRAS))]"
	@rm -f $(INSTALLED)

test: test-rust test-python test-wheels test-sdist ## Set up, then run every test: Rust, then Python on the wheels and the sdist

test-rust: ## cargo test of the core (unit, property and doc tests)
	cargo test --workspace --exclude pipemode-python

test-python: install ## pytest on the installed wheel, every extra present (none of its tests may skip)
	PIPEMODE_TEST_INSTALLED=1 PIPEMODE_REQUIRE=$(subst $(space),$(comma),$(strip $(REQUIRE))) \
		$(VENV)/bin/pytest

test-wheels: wheel ## Each CPython's wheel in a fresh venv, without Rust; TensorFlow 2.14 on 3.10
	.ci/test-wheels

test-sdist: sdist ## The sdist built from source (Rust needed) in a fresh venv, and its install tests
	.ci/test-sdist

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
	$(PYTHON) benches/bench_torch.py
	$(PYTHON) benches/bench_runner.py
	$(PYTHON) benches/bench_s3.py
	$(PYTHON) benches/bench_distributed.py

demo: $(PYTHON) ## Install with TensorFlow and run the tutorial end to end (`pipemode demo`)
	$(PIP) install --quiet ".[tensorflow]"
	@rm -f $(INSTALLED)
	$(VENV)/bin/pipemode demo

# lote: the two commands a new user needs are `make run` and `make test`.
# Both prepare .venv (torch 2.11.0 from PyPI, whose libtorch the build links) on first use.

VENV ?= $(CURDIR)/.venv
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)
export VIRTUAL_ENV := $(VENV)
export LOTE_VENV := $(VENV)

CARGO ?= cargo
CONFIG ?= config/default.toml

.PHONY: setup build release run test fmt lint clean

setup:
	@scripts/setup

build: setup
	$(CARGO) build

release: setup
	$(CARGO) build --release

## Serve with the single-node defaults: gRPC health on 127.0.0.1:50051.
run: release
	$(CARGO) run --release -- --config $(CONFIG) serve

## The whole suite: formatting, lints, unit and integration tests.
test: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --all-targets

fmt:
	$(CARGO) fmt

lint: setup
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean

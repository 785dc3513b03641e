# lote: the two commands a new user needs are `make run` and `make test`.
# Both prepare .venv (torch 2.11.0 from PyPI, whose libtorch the build links) on first use.

VENV ?= $(CURDIR)/.venv
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)
export VIRTUAL_ENV := $(VENV)
export LOTE_VENV := $(VENV)

CARGO ?= cargo
CONFIG ?= config/default.toml

FIXTURES := tests/fixtures/models

.PHONY: setup build release run test fixtures fmt lint clean bench faults fuzz fuzz-engine

setup:
	@scripts/setup

build: setup
	$(CARGO) build

release: setup
	$(CARGO) build --release

## Serve with the single-node defaults: gRPC health on 127.0.0.1:50051.
run: release
	@mkdir -p target
	scripts/run-config > target/lote-run.toml
	$(CARGO) run --release -- --config target/lote-run.toml serve

## Tiny random models and transformers' reference outputs for the parity tests (seeded,
## byte-identical on every run), plus the real all-MiniLM-L6-v2 reference embeddings.
fixtures: setup $(FIXTURES)/.stamp

$(FIXTURES)/.stamp: tests/fixtures/make_models.py tests/fixtures/make_generation_models.py tests/fixtures/make_minilm_reference.py tests/fixtures/make_slow_tokenizers.py tests/fixtures/make_pickle_fixtures.py tests/fixtures/make_pair_models.py tests/fixtures/make_translation_models.py tests/fixtures/make_chat_models.py scripts/requirements.txt
	rm -rf $(FIXTURES).tmp
	$(VENV)/bin/python tests/fixtures/make_models.py $(FIXTURES).tmp
	$(VENV)/bin/python tests/fixtures/make_generation_models.py $(FIXTURES).tmp/generation
	$(VENV)/bin/python tests/fixtures/make_minilm_reference.py $(FIXTURES).tmp
	$(VENV)/bin/python tests/fixtures/make_slow_tokenizers.py $(FIXTURES).tmp/slow_tokenizers
	$(VENV)/bin/python tests/fixtures/make_pickle_fixtures.py $(FIXTURES).tmp/pickle
	$(VENV)/bin/python tests/fixtures/make_pair_models.py $(FIXTURES).tmp/pairs
	$(VENV)/bin/python tests/fixtures/make_translation_models.py $(FIXTURES).tmp/translation
	$(VENV)/bin/python tests/fixtures/make_chat_models.py $(FIXTURES).tmp/chat
	rm -rf $(FIXTURES) && mv $(FIXTURES).tmp $(FIXTURES) && touch $@

## Clippy as the compiler of lote's own crate in the test build, the way `cargo clippy` calls it
## (RUSTC_WORKSPACE_WRAPPER, lint flags in CLIPPY_ARGS): the same lints over the same targets as
## `cargo clippy --all-targets -- -D warnings`, but the dependencies, with the C and C++ of their
## build scripts (libtorch's wrapper alone takes two minutes), compile once, not once for the
## lints and again for the tests.
LINTED := RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__

## The whole suite: formatting, lints, the deploy/ checks (manifests against Kubernetes' schemas,
## Dockerfile lint; offline), unit and integration tests.
## The job tests talk to the real RabbitMQ and PostgreSQL on 127.0.0.1 (scripts/services starts
## or installs them). The bench/ programs are examples, which `cargo test` compiles but does not
## leave in target/debug/examples, so `cargo build --examples` puts them there for the harness
## smoke test.
test: setup fixtures
	$(VENV)/bin/python deploy/check
	$(VENV)/bin/python deploy/check --self-test
	$(CARGO) fmt --check
	$(LINTED) $(CARGO) build --examples
	LOTE_TEST_POSTGRES=$$(scripts/services) $(LINTED) $(CARGO) test --lib --bins --tests
	$(MAKE) fuzz FUZZ_SECONDS=20

## Benchmarks beside the Python peers (own venv: .venv-bench); writes bench/results/.
BENCH_VENV ?= $(CURDIR)/.venv-bench
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
bench: setup
	LOTE_VENV=$(BENCH_VENV) LOTE_REQUIREMENTS=$(CURDIR)/bench/requirements.txt scripts/setup
	$(CARGO) build --release --bin lote --example load --example jobs_transport
	scripts/services >/dev/null
	$(BENCH_VENV)/bin/python bench/harness.py --target $(TARGET_DIR)

## Each fuzz target for FUZZ_SECONDS from its committed seeds in fuzz/corpus/, what it learns
## kept in target/fuzz-corpus/; a crash fails and leaves its input in fuzz/*/artifacts/. fuzz/
## holds the parsers' targets (built without libtorch, with AddressSanitizer); fuzz/engine/
## (`make fuzz-engine`) the ones that drive lote itself on the fixture models (unoptimized and
## without a sanitizer: they look for panics and leaked internals). RUSTC_BOOTSTRAP lets the
## stable toolchain take cargo fuzz's flags; cargo-fuzz is built once into the venv. `make
## test` runs each parser target for 20 s.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS := parse_pickle read_archive slow_sentencepiece
ENGINE_FUZZ_TARGETS := run_line queued_document settings_file
CARGO_FUZZ := $(VENV)/bin/cargo-fuzz
$(CARGO_FUZZ):
	$(CARGO) install cargo-fuzz --version 0.13.2 --locked --root $(VENV)
# $(call fuzz_each,crate dir,targets,cargo fuzz flags,target dir)
define fuzz_each
	for target in $(2); do \
		mkdir -p $(TARGET_DIR)/fuzz-corpus/$$target && \
		(cd $(1) && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(3) --target-dir $(4) $$target \
			$(TARGET_DIR)/fuzz-corpus/$$target $(CURDIR)/fuzz/corpus/$$target \
			-- -max_total_time=$(FUZZ_SECONDS)) \
			|| exit 1; \
	done
endef
fuzz: setup fixtures $(CARGO_FUZZ)
	$(call fuzz_each,fuzz,$(FUZZ_TARGETS),,$(TARGET_DIR)/fuzz)
# Not yet in `make test`: these have not been built or run yet (see README).
fuzz-engine: setup fixtures $(CARGO_FUZZ)
	$(call fuzz_each,fuzz/engine,$(ENGINE_FUZZ_TARGETS),-s none --dev --fuzz-dir $(CURDIR)/fuzz/engine,$(TARGET_DIR)/fuzz-engine)

## Real faults under a running job (minutes; needs root): RabbitMQ and PostgreSQL stopped for
## 30 s, the link to RabbitMQ cut for 20 s (a network namespace: socat and nftables), SIGKILL
## while results commit, the SQLite disk full. A JSON report per scenario.
faults: setup fixtures
	command -v socat >/dev/null && command -v nft >/dev/null || apt-get install -y socat nftables
	$(CARGO) build --bin lote
	LOTE_TEST_POSTGRES=$$(scripts/services) $(VENV)/bin/python tests/faults/stops.py \
		$(TARGET_DIR)/debug/lote $(CURDIR)/$(FIXTURES)

fmt:
	$(CARGO) fmt

lint: setup
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean

# dinoflow: the two commands a new machine needs are `make demo` and `make test`.
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup plugins build test demo bench lint fuzz

setup:
	bash scripts/setup.sh

plugins:
	bash scripts/build-plugins.sh
	bash scripts/build-c-plugins.sh

build: setup
	$(CARGO) build --release

test: setup
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: build
	bash scripts/demo.sh

bench: build
	bash bench/run.sh

# Not in CI: bounded fuzzing of the workflow parser and the ingest path (FUZZ_SECONDS per target).
fuzz: setup
	bash scripts/fuzz.sh

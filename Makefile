# One entry point for what CI runs. `make ci` is the whole suite.
CARGO ?= cargo

.PHONY: ci fmt clippy test unit compat fuzz-build bench-log

ci: fmt clippy test

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: unit compat

unit:
	$(CARGO) test --workspace --all-targets

# Real clients (confluent-kafka/librdkafka, kafka-python, kcat) against a real fjord process.
compat:
	$(CARGO) build -p fjord
	compat/run.sh

# Builds the fuzz targets (needs cargo-fuzz; see fuzz/README.md).
fuzz-build:
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build

# The storage benchmark recorded in BENCHMARKS.md.
bench-log:
	$(CARGO) run --release -p log-bench -- --dir $${BENCH_DIR:-target/bench-log}

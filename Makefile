# One entry point for what CI runs. `make ci` is the whole suite.
CARGO ?= cargo

.PHONY: ci fmt clippy test unit compat bench-smoke fuzz-build bench-log bench

ci: fmt clippy test

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: unit compat bench-smoke

unit:
	$(CARGO) test --workspace --all-targets
	# The deterministic quorum runs replay a seed only with Tokio's scheduler seeded, which
	# takes a `--cfg tokio_unstable` build (its own target directory).
	RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/tokio-unstable \
	  $(CARGO) test -p fjord-quorum --test sim

# Real clients (confluent-kafka/librdkafka, kafka-python, kcat, the Java client, Kafka's tools)
# against a real fjord process, and the differential suite against Apache Kafka 4.4 beside it;
# rewrites the table in docs/compatibility.md from what ran.
compat:
	# The same build as bench-smoke's (kafka-load changes the features fjord is built with).
	$(CARGO) build -p fjord -p kafka-load
	FJORD_COMPAT_TABLE=../docs/compatibility.md compat/run.sh
	cd compat/go && go vet ./... && go test ./...

# The broker benchmark suite at a hundredth of its size, on the debug build: proves in
# seconds that every workload still runs (the figures mean nothing).
bench-smoke:
	$(CARGO) build -p fjord -p kafka-load
	compat/.venv/bin/python bench/suite.py --smoke --binary target/debug/fjord --load target/debug/kafka-load
	compat/.venv/bin/python bench/partitions.py --smoke --binary target/debug/fjord --load target/debug/kafka-load
	compat/.venv/bin/python bench/footprint.py --smoke --binary target/debug/fjord --load target/debug/kafka-load

# The full broker benchmark suite and the many-partition workloads beside Apache Kafka 4.4,
# then Fjord's memory and start-up with 50 GB kept and with 1,000 partitions (needs 60 GB
# free); appends their results to BENCHMARKS.md.
bench:
	$(CARGO) build --release -p fjord -p kafka-load
	compat/.venv/bin/python bench/suite.py --runs 3 --dir $${BENCH_DIR:-target} --append BENCHMARKS.md
	compat/.venv/bin/python bench/partitions.py --runs 3 --dir $${BENCH_DIR:-target} --append BENCHMARKS.md
	compat/.venv/bin/python bench/footprint.py --dir $${BENCH_DIR:-target} --append BENCHMARKS.md

# Builds the fuzz targets (needs cargo-fuzz; see fuzz/README.md).
fuzz-build:
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build

# The storage benchmark recorded in BENCHMARKS.md.
bench-log:
	$(CARGO) run --release -p log-bench -- --dir $${BENCH_DIR:-target/bench-log}

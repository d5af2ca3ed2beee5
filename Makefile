# wabill — build, test, run.
#
# Builds go to a cache directory that survives between runs on the same machine
# (rocksdb and librdkafka take minutes to build cold); a fresh machine just builds.
WABILL_CACHE ?= $(HOME)/.cache/wabill
export WABILL_CACHE
export CARGO_TARGET_DIR ?= $(WABILL_CACHE)/target
CARGO ?= cargo
BIN := $(CARGO_TARGET_DIR)/debug/wabill
RELEASE_BIN := $(CARGO_TARGET_DIR)/release/wabill
SAMPLE := data/sample/webhooks-2022-03.jsonl
# Two fortnights across the category-era switches (2023-06-01, 2024-11-01), with send-log records.
SAMPLE_ERAS := data/sample/webhooks-2023-2024.jsonl
# Per-message pricing: fortnights across 2025-07-01 and 2026-10-01, and 12 days of November 2026.
SAMPLE_PMP := data/sample/webhooks-2025-2026.jsonl
SAMPLE_CONFIG := data/sample/wabill.toml
OUT := $(WABILL_CACHE)/out

.PHONY: all build release test lint fmt run demo demo-stop bench bench-quick sample-data deps broker clean

all: build

## deps: system packages the build needs (clang/libclang for rocksdb's bindgen).
## Every target that compiles depends on it: idempotent, a few dpkg queries when present.
deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build

release: deps
	$(CARGO) build --release

## broker: install the Tansu broker the integration tests start (cached; ~11 min cold)
broker:
	@./scripts/install-tansu.sh

## test: formatting, lints, then every test (unit, property, golden, real-broker integration)
test: deps lint broker
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

## run: replay the bundled sample traffic (2022 to November 2026) and print the month statements
run: build
	@mkdir -p $(OUT)
	$(BIN) replay --input $(SAMPLE) --input $(SAMPLE_ERAS) --input $(SAMPLE_PMP) --config $(SAMPLE_CONFIG) \
	  --output $(OUT)/sample-billing.jsonl --dead-letter $(OUT)/sample-dead-letter.jsonl --summary
	@echo "records: $(OUT)/sample-billing.jsonl"

## demo: local broker + generated month + wabill run + Prometheus; prints the statements
demo: build broker
	@./scripts/demo.sh

demo-stop:
	@./scripts/demo.sh stop

## bench: criterion benchmarks (full size: 1 M events; takes several minutes)
bench: deps
	$(CARGO) bench --bench engine

bench-quick: deps
	WABILL_BENCH_EVENTS=100000 $(CARGO) bench --bench engine

## sample-data: regenerate the bundled sample files (deterministic)
sample-data: build
	$(BIN) gen --events 24000 --users 3000 --wabas 4 --first-waba-share 0.55 --seed 2022 \
	  --start 2022-03-01 --days 31 --output $(SAMPLE)
	{ $(BIN) gen --events 6000 --users 1200 --wabas 4 --first-waba-share 0.55 --seed 2023 \
	    --start 2023-05-25 --days 14 && \
	  $(BIN) gen --events 6000 --users 1200 --wabas 4 --first-waba-share 0.55 --seed 2024 \
	    --start 2024-10-25 --days 14; } > $(SAMPLE_ERAS)
	{ $(BIN) gen --events 3000 --users 1000 --wabas 4 --first-waba-share 0.55 --seed 2025 \
	    --start 2025-06-24 --days 14 && \
	  $(BIN) gen --events 3000 --users 1000 --wabas 4 --first-waba-share 0.55 --seed 2026 \
	    --start 2026-09-24 --days 14 && \
	  $(BIN) gen --events 2400 --users 1000 --wabas 4 --first-waba-share 0.55 --seed 2027 \
	    --start 2026-11-01 --days 12; } > $(SAMPLE_PMP)

clean:
	rm -rf $(OUT)

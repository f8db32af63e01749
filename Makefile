# hqstream: two commands on a fresh machine.
#   make run   - install what is needed, start Kafka, Redis, the feed simulator
#                and every hqstream component; prints the dashboard URL. Ctrl-C stops all.
#   make test  - the same set-up, then lint, type checks and the whole test suite.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NATIVE_STAMP := $(VENV)/.native-installed
NATIVE_SRC := $(wildcard native/Cargo.* native/pyproject.toml native/*.pyi native/src/*.rs)
KUSTOMIZE_VERSION := v5.6.0
GOBIN_DIR := $(CURDIR)/.cache/bin

.PHONY: run test setup system-deps python-deps kafka-jars kafka-class-archive kustomize lint typecheck deadcode unit clean bench screenshot

run: setup
	$(BIN)/hqstream up

# HQ_TEST_REQUIRE_NATIVE: the compiled fast path's tests fail (not skip) without it
test: setup lint typecheck
	HQ_TEST_REQUIRE_NATIVE=1 $(BIN)/python -m pytest tests

setup: system-deps python-deps kafka-jars kafka-class-archive kustomize

# Debian packages: Java 17 and Maven are on the machine; redis-server, redis-tools
# (redis-cli makes the local Redis Cluster) and chromium (for the dashboard
# browser test) are installed when missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null || missing="$$missing redis-tools"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	fc-list 2>/dev/null | grep -qi "WenQuanYi" || missing="$$missing fonts-wqy-microhei"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v java >/dev/null || { echo "Java 17+ is required for the local Kafka broker"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required to fetch the Kafka broker jars"; exit 1; }

python-deps: $(STAMP) $(NATIVE_STAMP)
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# The stream workers' compiled parse fast path (native/, Rust + PyO3), built by
# maturin (from PyPI) with the machine's cargo, at the crate's locked versions.
# The workers run without it (pure Python, same results); `make test` requires it.
$(NATIVE_STAMP): $(STAMP) $(NATIVE_SRC)
	@command -v cargo >/dev/null || { echo "cargo is required to build native/ (https://rustup.rs)"; exit 1; }
	@echo "building hqstream_native (Rust; a minute or two the first time) ..."
	CARGO_TARGET_DIR=$(CURDIR)/native/target $(BIN)/pip install -q --force-reinstall --no-deps ./native
	touch $(NATIVE_STAMP)

kafka-jars:
	@bash deploy/local/fetch-kafka.sh

# The broker's class-data-sharing archive: every local broker starts ~1/3 faster.
kafka-class-archive: python-deps kafka-jars
	@$(BIN)/python -c 'from hqstream.local_runner import kafka_class_archive as a, build_kafka_class_archive as b; \
	  a().exists() or print("dumping the Kafka broker classes (one broker start and stop) ...", flush=True); \
	  b().exists() or print("no class archive: the local broker starts without one")'

kustomize:
	@if [ ! -x $(GOBIN_DIR)/kustomize ]; then \
	  echo "installing kustomize $(KUSTOMIZE_VERSION) from the Go module proxy"; \
	  GOBIN=$(GOBIN_DIR) GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); \
	fi

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

deadcode:  # candidates only (vulture cannot see framework callbacks): read, then decide
	$(BIN)/vulture api archive hqcore producers schemas streams hqstream deploy/k8s_topics.py --min-confidence 60 || true

unit: setup
	HQ_TEST_REQUIRE_NATIVE=1 $(BIN)/python -m pytest tests -m "not integration and not browser"

# Refreshes the README's dashboard picture from the browser test's screenshot
# (tests write only to test-artifacts/; this is the one step that writes docs/).
screenshot: setup
	$(BIN)/python -m pytest tests/api/test_dashboard_browser.py -q
	cp test-artifacts/dashboard.png docs/images/dashboard.png

bench: setup
	$(BIN)/hqstream bench ingest
	$(BIN)/hqstream bench streams

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache native/target

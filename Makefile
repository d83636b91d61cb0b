# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SAMPLE := samples/earnings_calendar_2025-07.csv
# pytest-xdist workers for `make test` (0: one process)
TEST_WORKERS ?= 2
# What ships to Lambda: the core and the entry points; never the CLI or the emulator (pyproject's layers).
LAMBDA_PACKAGES := earnings_sync producers consumers queries

.PHONY: demo test e2e bench package clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

## demo: run one sync of the bundled real AlphaVantage snapshot through the whole pipeline on moto
demo: $(STAMP)
	@mkdir -p build
	$(BIN)/earnings-sync local $(SAMPLE) --export build/demo-table.jsonl

## test: the whole suite with line and branch coverage of the core, producers and consumers
test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --cov --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=90

## e2e: the end-to-end tier on LocalStack: host mode installed, started and stopped here (free port),
## or the instance LOCALSTACK_ENDPOINT names (e.g. docker compose -f localstack/docker-compose.yml up)
e2e: $(STAMP)
	@if [ -n "$$LOCALSTACK_ENDPOINT" ]; then \
	  exec $(BIN)/python -m pytest -p no:cacheprovider -m e2e tests/e2e; \
	fi; \
	port="$${LOCALSTACK_PORT:-$$($(BIN)/python -c 'from earnings_sync_local.emulator import free_port; print(free_port())')}"; \
	trap 'LOCALSTACK_PORT='"$$port"' bash localstack/hostmode.sh stop' EXIT; \
	LOCALSTACK_PORT="$$port" LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC="$${LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC:-1}" \
	  bash localstack/hostmode.sh start && \
	LOCALSTACK_ENDPOINT="http://127.0.0.1:$$port" $(BIN)/python -m pytest -p no:cacheprovider -m e2e tests/e2e

## bench: figures against baselines, written to BENCHMARKS.md (about 20 minutes with the 100k-row
## end-to-end sync; run on a quiet machine; BENCH_ARGS="--only parse,writes" for a part)
BENCH_ARGS ?= --large
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## package: the Lambda code folder template.yaml's CodeUri points at (deps for Linux x86_64, Python 3.11)
package:
	rm -rf build/lambda && mkdir -p build/lambda
	cp -r $(LAMBDA_PACKAGES) build/lambda/
	$(PYTHON) -m pip install -q --target build/lambda --platform manylinux2014_x86_64 --python-version 3.11 \
	  --implementation cp --only-binary=:all: 'aws-lambda-powertools>=3,<4' 'msgspec>=0.18'
	find build/lambda -name __pycache__ -prune -exec rm -rf {} +

clean:
	rm -rf build .coverage htmlcov

# tierwatch — the two commands: `make demo` (the main job) and `make test` (the suite).
# Each sets itself up on a fresh machine: venv, dependencies, and what the tests need.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST  := $(BIN)/pytest -p no:cacheprovider

.PHONY: demo test lint unit bench soak system-deps kafka-jars up down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## demo: simulate the Pareto trap, replay it through the monitor, write the report
demo: $(STAMP)
	$(BIN)/tierwatch demo

## test: lint, then the whole suite against a real Kafka broker started here, in two
## processes (each starts its own broker): 10 min on 2 cores instead of about 20
test: $(STAMP) system-deps kafka-jars lint
	$(PYTEST) -n 2

## unit: the in-process tests and doctests, without the long (`slow`) simulations
unit: $(STAMP)
	$(PYTEST) -m 'not slow and not benchmark and not soak' tests/unit pipeline

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests
	$(BIN)/mypy

## bench: the marked benchmarks under tests/benchmarks (deselected by default)
bench: $(STAMP) system-deps kafka-jars
	$(PYTEST) -m benchmark tests/benchmarks -s

## soak: the acceptance-size fault runs (SIGKILLs over a million events; deselected by default)
soak: $(STAMP) system-deps kafka-jars
	$(PYTEST) -m soak tests/integration -s

## system-deps: promtool (Debian's prometheus) and headless chromium for the report test
system-deps:
	@bash deploy/system-deps.sh

## up: the stack without Docker: Kafka, worker, simulated traffic, Prometheus (deploy/stack.sh)
up: $(STAMP)
	@bash deploy/stack.sh up

## down: stop what `make up` started
down:
	@bash deploy/stack.sh down

kafka-jars:
	@test -d deploy/kafka/lib || mvn -q -f deploy/kafka/pom.xml dependency:copy-dependencies

clean:
	rm -rf $(VENV) .run out deploy/kafka/lib

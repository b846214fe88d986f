# mwl-broker: `make run` starts the broker on embedded defaults, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit integration bench bench-quick fuzz system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mwl-broker serve

system-deps:
	bash scripts/install-system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check broker tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-deps lint typecheck
	$(BIN)/mwl-broker check-mappings
	$(BIN)/python -m pytest -q
	MWL_TEST_BACKEND=postgresql $(BIN)/python -m pytest -q tests/integration tests/e2e
	$(MAKE) bench-quick

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/hl7_ingest.py
	$(BIN)/python benchmarks/mwl_query.py
	$(BIN)/python benchmarks/cfind_dos.py
	$(BIN)/python benchmarks/mpps.py
	$(BIN)/python benchmarks/crash.py
	$(BIN)/python benchmarks/load.py
	$(BIN)/python benchmarks/completion.py
	$(BIN)/python benchmarks/footprint.py
	$(BIN)/python benchmarks/dimse_memory.py
	$(BIN)/python benchmarks/real_clients.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/hl7_clients.py
	$(BIN)/python benchmarks/ups.py
	$(BIN)/python benchmarks/query_log_ab.py
	$(BIN)/python benchmarks/fhir_intake.py
	$(BIN)/python benchmarks/upstream.py
	$(BIN)/python benchmarks/report.py

bench-quick: $(STAMP) system-deps
	$(BIN)/python benchmarks/hl7_ingest.py --quick
	$(BIN)/python benchmarks/mwl_query.py --quick
	$(BIN)/python benchmarks/cfind_dos.py --quick
	$(BIN)/python benchmarks/mpps.py --quick
	$(BIN)/python benchmarks/crash.py --quick
	$(BIN)/python benchmarks/load.py --quick
	$(BIN)/python benchmarks/completion.py --quick
	$(BIN)/python benchmarks/footprint.py --quick
	$(BIN)/python benchmarks/dimse_memory.py --quick
	$(BIN)/python benchmarks/real_clients.py --quick
	$(BIN)/python benchmarks/scale.py --quick
	$(BIN)/python benchmarks/hl7_clients.py --quick
	$(BIN)/python benchmarks/ups.py --quick
	$(BIN)/python benchmarks/fhir_intake.py --quick
	$(BIN)/python benchmarks/upstream.py --quick
	$(BIN)/python benchmarks/report.py --quick

# live fuzz campaign against the running broker, bounded: make fuzz FUZZ_SECONDS=120
FUZZ_SECONDS ?= 90
fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz_live.py --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# Two commands for users: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps: the demo needs the package alone; the tests add the extras, linters, type checker and test tools.
DEMO_STAMP := $(VENV)/.demo-stamp
STAMP      := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/lineage demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	bash scripts/install-services.sh
	bash scripts/install-kafka.sh
	bash scripts/install-go-interop.sh
	bash scripts/install-s3.sh
	$(BIN)/pytest -q -n 2

test: lint typecheck unit

bench: $(DEMO_STAMP)
	$(BIN)/lineage bench --events 200000

clean:
	rm -rf $(VENV) lineage-demo .pytest_cache .mypy_cache .ruff_cache .hypothesis

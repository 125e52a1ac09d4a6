# Two commands on a fresh machine: `make run` and `make test`. Both create the
# virtualenv (.venv) on first use; PYTHON picks the interpreter (>= 3.11).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench lint format clean-cache kafka-jars

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m deploy.local.run $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

# Prints one JSON line last; flags: make bench ARGS='--rate 500 --duration 30 --timers 0'
bench: $(STAMP)
	$(BIN)/python -m tests.bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

kafka-jars: $(STAMP)
	$(BIN)/python -m deploy.local.kafka fetch

clean-cache:
	rm -rf .cache

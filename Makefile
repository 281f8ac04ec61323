# Two entry points for a fresh machine: `make demo` and `make test`.
# Both bootstrap .venv with pip. The test set-up pins the CPU torch wheel;
# the project itself only asks for torch>=2.4.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export WANDB_MODE := disabled
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test lint demo demo-seeds benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check finetune competitions constants neurons scripts tests

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check finetune competitions constants neurons scripts tests
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) scripts/demo.py --out out/demo

# The seeds' two competitions (1 GPU / 1 day, LLM merging) on the local subnet.
demo-seeds: $(STAMP)
	$(PY) scripts/demo.py --seeds --out out/demo-seeds

# `make benchmark` is the quick run (every section and key, smaller sizes); the full one is
# `make benchmark BENCH_ARGS="--json out/benchmarks-full.json"` (docs/benchmarks.md).
BENCH_ARGS ?= --quick --json out/benchmarks.json
benchmark: bench-deps
	$(PY) scripts/run_benchmarks.py $(BENCH_ARGS)

# lm-evaluation-harness, a baseline; without it the report says so (lm_eval_s null).
bench-deps: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]" || echo "lm-eval not installed: the report gives lm_eval_s null and why"

clean:
	rm -rf $(VENV) out .pytest_cache

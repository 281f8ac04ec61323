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

.PHONY: venv test lint demo benchmark clean

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

benchmark: $(STAMP)
	$(PY) scripts/run_benchmarks.py --quick --json out/benchmarks.json

clean:
	rm -rf $(VENV) out .pytest_cache

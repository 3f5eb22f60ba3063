# HumanLiff toolkit. `make demo` and `make test` install what they need into .venv.
# CUDA users: create .venv and install your CUDA build of torch first (see README); we never replace it.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
TORCH_CPU ?= torch==2.13.0
PYTEST_WORKERS ?= 2

.PHONY: install test lint demo benchmark clean

$(PY):
	python3 -m venv $(VENV)

# torch first (the CPU build unless a torch is already importable), then the project and its extras.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_CPU)"
	$(PIP) install -q -e ".[dev,onnx,smpl]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --durations=15

demo: $(STAMP)
	$(VENV)/bin/humanliff demo --out demo_out

benchmark: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf demo_out .pytest_cache .ruff_cache

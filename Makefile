# HumanLiff toolkit. `make demo` and `make test` install what they need into .venv.
# CUDA users: create .venv and install your CUDA build of torch first (see README); we never replace it.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
TORCH_CPU ?= torch==2.13.0
TRITON_CPU ?= triton==3.6.0
PYTEST_WORKERS ?= 2

.PHONY: install test lint demo benchmark clean default-model default-model-anny cpp-example

$(PY):
	python3 -m venv $(VENV)

# torch first (the CPU build unless a torch is already importable), triton (a CUDA torch brings its own;
# on the CPU the tests run the fused kernels in Triton's interpreter), then the project and its extras.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_CPU)"
	$(PY) -c "import triton" 2>/dev/null || $(PIP) install -q "$(TRITON_CPU)"
	$(PIP) install -q -e ".[dev,onnx,smpl,viewer]"
	touch $(STAMP)

install: $(STAMP)

# make test also installs anny for its tests (CI), without anny's warp-lang (a 149 MB wheel for GPU skinning that
# we do not use; anny's other requirements are installed above). Its cache (51 MB) is built by the first anny test.
ANNY_STAMP := $(VENV)/.installed-anny
$(ANNY_STAMP): $(STAMP)
	$(PIP) install -q "roma>=1.7.1" "safetensors>=0.4"
	$(PIP) install -q --no-deps "anny>=0.6.2,<0.7"
	touch $(ANNY_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(ANNY_STAMP) lint
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --durations=15

demo: $(STAMP)
	$(VENV)/bin/humanliff demo --out demo_out

benchmark: $(STAMP)
	$(PY) -m benchmarks.run

# examples/cpp against the libtorch of the installed torch: one UNet call from C++ (see its CMakeLists.txt).
cpp-example: $(STAMP)
	cmake -S examples/cpp -B build/cpp -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
	cmake --build build/cpp -j 2

clean:
	rm -rf demo_out .pytest_cache .ruff_cache

# The default model on the primitives, as shipped until 2026-12-02 (one GPU; see README "The default model"); the
# shipped one now comes from default-model-anny below.
default-model: $(STAMP)
	$(VENV)/bin/humanliff data synth --config default --out out/default/data
	$(VENV)/bin/humanliff fit --config default --stage a --out out/default/fit_a
	$(VENV)/bin/humanliff eval recon --config default --store out/default/fit_a/store_a --out out/default/eval --max-views 2
	$(VENV)/bin/humanliff train --config default --store out/default/fit_a/store_a --out out/default/train
	$(VENV)/bin/humanliff model pack --unet out/default/train --store out/default/fit_a/store_a --out humanliff/assets/default --subjects 4

# The default model retrained on anny data, and `eval gen` of the shipped model and the new one (one GPU, 466 s
# on an H200; benchmarks/default_model_anny.sh says what it writes). Data synthesis needs anny (`pip install -e
# ".[anny]"`); where anny cannot be installed, synthesize $(ANNY_OUT)/data (or its data.tar.gz) elsewhere and
# bring it: it is reused when complete and of the same settings.
ANNY_OUT ?= out/default_anny
default-model-anny: $(STAMP)
	HUMANLIFF=$(VENV)/bin/humanliff benchmarks/default_model_anny.sh $(ANNY_OUT)

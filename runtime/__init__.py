"""The lean inference core of HumanLiff (installed as ``humanliff.runtime``).

Depends on torch, numpy, tqdm (progress bars) and scikit-image (marching cubes); onnxruntime, tensorrt and
triton only when present, imported inside their modules. Never imports the rest of the package (training,
models, data): ruff's banned-api rule in pyproject.toml enforces it.
"""

"""Checkpoint to artifacts: ONNX, AOTInductor and TensorRT engines plus a manifest (``humanliff.export``)."""

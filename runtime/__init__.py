"""The lean inference core of HumanLiff (installed as ``humanliff.runtime``).

Depends on torch and numpy only (onnxruntime and tensorrt when present); never imports training code.
"""

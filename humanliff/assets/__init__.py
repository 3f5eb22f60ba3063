"""Package data: the default model (``default/``), see ``humanliff.pretrained``."""

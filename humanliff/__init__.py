"""HumanLiff toolkit: layer-wise 3D human generation with tri-plane diffusion.

Kept light on purpose: importing ``humanliff`` (or ``humanliff.runtime``) pulls in no training code.
"""

__version__ = "0.1.0"

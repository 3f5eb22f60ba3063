"""HumanLiff toolkit: layer-wise 3D human generation with tri-plane diffusion.

Kept light on purpose: importing ``humanliff`` (or ``humanliff.runtime``) pulls in no training code.
"""

__version__ = "0.1.0"

LAYER_NAMES = ("person", "person-pants", "person-pants-shirt", "person-pants-shirt-shoes")
"""Folder names of the four layers in the SynBody layout, layer id = index."""

NUM_LAYERS = len(LAYER_NAMES)

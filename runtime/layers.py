"""The four layers of a layered human: their SynBody folder names, their titles, their count.

Layer id = index: 0 body, 1 + pants, 2 + shirt, 3 + shoes. Every module that names or counts layers
imports them from here.
"""

LAYER_NAMES = ("person", "person-pants", "person-pants-shirt", "person-pants-shirt-shoes")
"""SynBody's layer folders, layer id 0..3."""

LAYER_TITLES = ("body", "+pants", "+shirt", "+shoes")
"""Short titles of the layers for pictures and viewers."""

NUM_LAYERS = len(LAYER_NAMES)

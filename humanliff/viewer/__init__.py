"""Viewers of generated humans: ``viewer.html`` (a self-contained page) and ``humanliff view`` (viser).

Kept light: ``html`` needs only numpy and Pillow; ``server`` imports viser when it is called.
"""

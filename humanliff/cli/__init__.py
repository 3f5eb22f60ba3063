"""The ``humanliff`` command line: thin click commands that parse, then call the library.

Every command takes ``--config PRESET|FILE`` and repeated ``--set section.key=value``; the precedence
is defaults < preset YAML < ``--set`` < the command's own options. Errors caused by the input are
printed as one line (``error: <file>: <problem>``) with exit code 1 and no traceback.

The commands live by group: ``data_commands`` (data, store), ``training_commands`` (fit, train, distill,
model pack, demo), ``generation_commands`` (generate, run, render, view), ``export_commands``,
``eval_commands``; ``options`` holds what they share, ``app`` the group. Their work is in
``humanliff.workflows``, ``humanliff.Pipeline`` and ``humanliff.export``, so Python behaves the same.
"""

from __future__ import annotations

from humanliff.cli.app import app
from humanliff.cli.options import DISTILL_METHODS, FORMAT_NAMES, LAYOUT_NAMES, SAMPLER_NAMES, UNET_LAYOUTS

__all__ = ["DISTILL_METHODS", "FORMAT_NAMES", "LAYOUT_NAMES", "SAMPLER_NAMES", "UNET_LAYOUTS", "app", "main"]


def main() -> None:
    """Console entry point (``humanliff``, ``python -m humanliff.cli``)."""
    app()

"""The command line's stderr: one-line errors after progress bars, plain progress lines in logs, quiet
third-party noise.

In a terminal the progress bars redraw in place. When stderr is not a terminal (a log file, CI, a pipe)
every redraw becomes one plain line (carriage returns become line ends, terminal escape codes are
dropped) and the bars refresh at most every ``LOG_INTERVAL_S`` seconds.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from typing import Any

LOG_INTERVAL_S = 10
"""Seconds between progress lines when stderr is not a terminal (tqdm's ``mininterval``)."""
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
"""Terminal control sequences (tqdm moves the cursor with them for nested bars)."""
NOISY_LOGGERS = ("torch.onnx._internal.exporter._registration",)
"""Loggers whose warnings say nothing to our users (``torchvision is not installed. Skipping ...``)."""


class ConsoleStream:
    """Wraps stderr: remembers whether the text written last ended a line (progress bars do not), and,
    when ``plain``, writes every progress redraw as one plain line."""

    def __init__(self, stream: Any, plain: bool) -> None:
        self._stream = stream
        self.plain = plain
        self.fresh = True

    def write(self, text: str) -> int:
        if self.plain and text:
            text = ESCAPES.sub("", text).replace("\r", "\n")
            text = re.sub(r"\n[ \t]*(?=\n)", "", text)  # no blank lines from clearing redraws
            if self.fresh:
                text = text.lstrip("\n")
        if text:
            self.fresh = text.endswith("\n")
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def setup_console(stream: Any, verbose: bool) -> ConsoleStream:
    """Wrap ``stream`` (stderr), configure logging and silence third-party noise; returns the wrapper."""
    wrapped = stream if isinstance(stream, ConsoleStream) else ConsoleStream(stream, not _is_terminal(stream))
    if wrapped.plain:
        os.environ.setdefault("TQDM_MININTERVAL", str(LOG_INTERVAL_S))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s",
                        stream=wrapped)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch|onnx|onnxscript)(\.|$)")
    return wrapped


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False

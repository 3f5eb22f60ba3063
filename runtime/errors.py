"""User-facing errors: one line, naming the file and the problem; the CLI prints them without a traceback."""

from __future__ import annotations

from pathlib import Path


class HumanLiffError(Exception):
    """An error caused by the user's input (files, shapes, options), reported as one line by the CLI."""


class InputFileError(HumanLiffError):
    """A named input file is missing, unreadable or has the wrong content."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

"""Atomic file output: write to a temporary name beside the target, rename when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from humanliff.errors import InputFileError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed onto ``path``.

    Works for files and folders: whatever the caller creates at the yielded path replaces ``path``.
    On an exception the temporary is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def read_torch_file(path: str | Path) -> Any:
    """``torch.load`` on the CPU (weights only, memory-mapped), with a one-line error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such file")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputFileError(path, f"not a readable torch checkpoint ({exc.__class__.__name__})") from exc

"""Atomic file output: write to a temporary name beside the target, rename when complete.

A folder is replaced by a three-step swap under a lock on its parent folder: rename the old folder aside
(``.NAME.<token>.old``), rename the new one in, delete the old one. ``recover_swap`` finishes or rolls
back a swap that a killed process left half done. Every folder written here holds the ``MARKER`` file,
which tells the toolkit's folders from a user's (see ``humanliff.run_folder``).

``HUMANLIFF_FAULT=<point>:<k>`` (tests only) makes the process kill itself with SIGKILL at the k-th write
step of ``point``: ``swap`` (folder replacement) or ``checkpoint`` (checkpoint files and folders).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from humanliff.errors import InputFileError

if TYPE_CHECKING:
    import torch

MARKER = ".humanliff"
"""File written into every folder the toolkit creates: such a folder may be replaced with ``--force``."""
FAULT_ENV = "HUMANLIFF_FAULT"
_fault_counts: Counter[str] = Counter()


def fault_point(point: str) -> None:
    """A write step of ``point``: SIGKILL this process when ``HUMANLIFF_FAULT`` is ``point:k`` and this is
    the k-th such step (fault-injection tests)."""
    spec = os.environ.get(FAULT_ENV, "")
    name, _, k = spec.partition(":")
    if name != point:
        return
    _fault_counts[point] += 1
    if k.isdigit() and _fault_counts[point] == int(k):
        os.kill(os.getpid(), signal.SIGKILL)


def write_marker(folder: Path) -> None:
    """Mark ``folder`` as written by humanliff."""
    (folder / MARKER).write_text("written by humanliff; --force may replace this folder\n")


@contextlib.contextmanager
def locked_folder(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` itself (serialises swaps of its entries)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _token_pid(name: str) -> int | None:
    """The writer's pid in a temporary name ``.TARGET.<pid>-<random>.(tmp|old)``."""
    pid = name.rsplit(".", 2)[-2].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def recover_swap(path: str | Path) -> None:
    """Finish or roll back an interrupted replacement of ``path`` and delete temporaries of dead writers.

    A ``.old`` aside exists only once its new folder was complete: with the target missing, the new
    folder (same token) is renamed in, or without one the old folder is renamed back; with the target
    present the ``.old`` is deleted. A ``.tmp`` whose writer is gone is half written and deleted.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return
    with locked_folder(parent):
        _recover_locked(path)


def _recover_locked(path: Path) -> None:
    prefix = f".{path.name}."
    entries = [p for p in path.parent.iterdir()
               if p.name.startswith(prefix) and p.name[len(prefix):].count(".") == 1]
    for old in (p for p in entries if p.name.endswith(".old")):
        pid = _token_pid(old.name)
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            continue
        new = old.with_name(old.name[:-len(".old")] + ".tmp")
        if path.exists() or path.is_symlink():
            _remove(old)
        elif new.exists():
            os.replace(new, path)
            _remove(old)
        else:
            os.replace(old, path)
    for tmp in (p for p in entries if p.name.endswith(".tmp") and p.exists()):
        pid = _token_pid(tmp.name)
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            _remove(tmp)


def _commit(tmp: Path, path: Path, point: str | None) -> None:
    """Put the completed ``tmp`` in place of ``path`` (a folder by the three-step swap)."""
    if tmp.is_dir():
        _swap(tmp, path, tmp.with_name(tmp.name[:-len(".tmp")] + ".old"), point or "swap")
        return
    if point:
        fault_point(point)
    os.replace(tmp, path)
    if point:
        fault_point(point)


def _swap(src: Path, path: Path, old: Path, point: str) -> None:
    """Mark ``src``, then under the parent's lock: rename ``path`` aside to ``old``, ``src`` in, delete ``old``."""
    write_marker(src)
    with locked_folder(path.parent):
        _recover_locked(path)
        fault_point(point)
        if path.exists() or path.is_symlink():
            os.replace(path, old)
            fault_point(point)
        os.replace(src, path)
        fault_point(point)
        _remove(old)
        fault_point(point)


def replace_folder(src: str | Path, path: str | Path, point: str = "swap") -> None:
    """Swap the complete folder ``src`` in place of ``path`` (atomic, see ``recover_swap``)."""
    path = Path(path)
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".old", dir=path.parent))
    old.rmdir()
    _swap(Path(src), path, old, point)


@contextlib.contextmanager
def atomic_path(path: str | Path, point: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed onto ``path``.

    Works for files and folders: whatever the caller creates at the yielded path replaces ``path`` (a
    folder gets the ``MARKER`` file and is swapped in atomically, see ``recover_swap``). On an exception
    the temporary is removed and ``path`` is left untouched. ``point`` names the fault-injection point
    of the write steps (folders default to ``swap``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_swap(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent))
    tmp.rmdir()
    try:
        yield tmp
        _commit(tmp, path, point)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


_WATCHER = """
import fcntl, os, shutil, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
if sys.stdin.buffer.read() != b"done":
    path = sys.argv[1]
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)
"""
"""Waits on a pipe from its parent; end of file without ``done`` means the parent died: it deletes the
path under the parent folder's lock (as ``recover_swap`` does, so the two never race)."""


@contextlib.contextmanager
def removed_if_killed(path: str | Path) -> Iterator[None]:
    """Delete ``path`` (a temporary output) as soon as this process dies inside the block, even by a signal
    that runs no clean-up code (SIGABRT from a C++ library, a segmentation fault, SIGKILL, the OOM killer).

    A watcher process (plain Python, no torch; about 20 ms to start) holds a pipe from this one; when the
    pipe closes without the word that the block's normal end writes, it deletes ``path``.
    """
    watcher = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WATCHER, str(Path(path).absolute())],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        yield
    finally:
        watcher.communicate(b"done")


def require_finite(values: torch.Tensor | np.ndarray | dict[str, Any], what: str, where: str | Path) -> None:
    """Raise one line naming ``where`` when ``values`` (a tensor, an array read in slices, or a state
    dict of tensors) hold a NaN or an infinity."""
    import torch

    if isinstance(values, dict):
        bad = [k for k, v in values.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
               and not bool(torch.isfinite(v).all())]
        if bad:
            raise InputFileError(where, f"{what} hold NaN or infinite values ({', '.join(bad[:3])})")
        return
    if isinstance(values, torch.Tensor):
        finite = bool(torch.isfinite(values).all())
    else:
        finite = all(bool(np.isfinite(values[i]).all()) for i in range(len(values)))
    if not finite:
        raise InputFileError(where, f"{what} hold NaN or infinite values")


def read_torch_file(path: str | Path) -> Any:
    """``torch.load`` on the CPU (weights only, memory-mapped), with a one-line error for a bad file."""
    import torch

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

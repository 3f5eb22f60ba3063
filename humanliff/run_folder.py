"""Output and run folders: never replace a user's files, one writer per run folder, checks before compute.

``guard_output`` runs before any long compute. It refuses an ``--out`` that is, contains or lies inside
an input of the command, that is the working directory or one of its parents, that is a file, that is
a non-empty folder without the ``MARKER`` file (not written by humanliff), or, unless ``force``, any
non-empty folder to be replaced. It also refuses an unwritable place or one with too little free disk
for the estimated output (``humanliff.output_sizes``). ``hold_run_folder`` takes the run folder's
``flock`` (``fit``, ``train``): a second writer gets one line naming the holder's pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from humanliff.errors import HumanLiffError
from humanliff.io import MARKER, recover_swap, write_marker

LOCK_FILE = ".lock"
"""The run folder's lock file (holds the holder's pid)."""
MB = 1 << 20


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _check_place(out: Path, option: str, replaced: bool, inputs: Iterable[str | Path | None]) -> None:
    """Refuse the working directory or its parents, and any overlap with an input."""
    target, cwd = out.resolve(), Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        where = "is" if target == cwd else "contains"
        raise HumanLiffError(f"{option} {out}: {where} the working directory; choose a new folder")
    for item in inputs:
        if item is None:
            continue
        source = Path(item).resolve()
        if target == source:
            raise HumanLiffError(f"{option} {out}: is an input of this command ({item}); choose a new folder")
        if target in source.parents and replaced:
            raise HumanLiffError(f"{option} {out}: contains the input {item}; choose a new folder")
        if source in target.parents:
            raise HumanLiffError(f"{option} {out}: lies inside the input {item}; choose a folder outside it")


def _check_contents(out: Path, option: str, force: bool, replaced: bool) -> None:
    """Refuse a file, a non-empty folder not written by humanliff, and (unless ``force``) one to replace."""
    if out.exists() and not out.is_dir():
        raise HumanLiffError(f"{option} {out}: is an existing file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / MARKER).is_file():
        raise HumanLiffError(f"{option} {out}: is not empty and was not written by humanliff (no {MARKER}); "
                             "nothing was changed, choose a new folder")
    if replaced and not force:
        raise HumanLiffError(f"{option} {out}: exists (written by humanliff); pass --force to replace it")


def ensure_space(out: str | Path, needed_bytes: int, option: str = "--out") -> None:
    """Refuse an unwritable place for ``out`` or one with less free disk than ``needed_bytes``."""
    place = _existing_ancestor(Path(out).absolute())
    if not place.is_dir():
        raise HumanLiffError(f"{option} {out}: {place} is a file, not a folder")
    if not os.access(place, os.W_OK | os.X_OK):
        raise HumanLiffError(f"{option} {out}: cannot write in {place} (permission denied)")
    free = shutil.disk_usage(place).free
    if free < needed_bytes:
        raise HumanLiffError(f"{option} {out}: needs about {needed_bytes / MB:.0f} MB, {place} has "
                             f"{free / MB:.0f} MB free")


def guard_output(out: str | Path, inputs: Iterable[str | Path | None] = (), *, force: bool = False,
                 replaced: bool = True, needed_bytes: int = 0, option: str = "--out") -> Path:
    """Check ``out`` before any work (see the module doc); returns it as a ``Path``.

    ``replaced``: the command replaces the folder as a whole (``generate``, ``run``, ``data synth``, ...);
    otherwise it is a run folder that is resumed (``fit``, ``train``), which may contain its inputs.
    An interrupted swap of ``out`` is finished or rolled back first (``humanliff.io.recover_swap``).
    """
    out = Path(out)
    if out.parent.is_dir():
        recover_swap(out)
    _check_place(out, option, replaced, inputs)
    _check_contents(out, option, force, replaced)
    ensure_space(out, needed_bytes, option)
    return out


def guard_file_output(out: str | Path, inputs: Iterable[str | Path | None] = (), option: str = "--out") -> Path:
    """Check an output file before any work: not a folder, not an input, not inside an input folder, in
    a writable place. The file itself is written atomically by its writer (``humanliff.io.atomic_path``)."""
    out = Path(out)
    if out.is_dir():
        raise HumanLiffError(f"{option} {out}: is a folder; give a file name")
    if out.exists() or out.is_symlink():
        raise HumanLiffError(f"{option} {out}: exists; nothing was changed, delete it or choose another name")
    _check_place(out, option, True, inputs)
    ensure_space(out, 0, option)
    return out


def guard_run_files(out: str | Path, names: Iterable[str], option: str = "--out") -> None:
    """Refuse, before any work, a run folder ``out`` where a file the command writes (``names``) is a folder
    (the files themselves are replaced atomically by their writers)."""
    for name in names:
        path = Path(out) / name
        if path.is_dir() and not path.is_symlink():
            raise HumanLiffError(f"{option} {out}: {path} is a folder, where this command writes a file; move it "
                                 "away or choose another folder")


@contextlib.contextmanager
def hold_run_folder(out: str | Path) -> Iterator[Path]:
    """Create and mark the run folder ``out`` and hold its lock while the block runs.

    Only the first process of a torchrun launch (``RANK`` 0) takes it; the others share the run. A folder
    created here that holds nothing else when the block fails is removed again.
    """
    out = Path(out)
    if os.environ.get("RANK", "0") != "0":
        yield out
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():  # before the lock file, so that the folder is never foreign-looking
        write_marker(out)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise HumanLiffError(f"{out}: in use by another humanliff process (pid {holder}); wait for it "
                                 "to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield out
    except BaseException:
        if created and {p.name for p in out.iterdir()} <= {MARKER, LOCK_FILE}:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        os.close(fd)


def check_device(device: str | None) -> None:
    """Refuse a ``--device`` that is not a torch device, or CUDA where this torch has none."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise HumanLiffError(f"--device {device}: not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = "a CUDA build, no GPU visible" if torch.backends.cuda.is_built() else "a CPU-only build"
            raise HumanLiffError(f"--device {device}: CUDA is not available (torch {torch.__version__}, {built})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise HumanLiffError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise HumanLiffError(f"--device {device}: not supported (use cpu, cuda or cuda:N)")


def check_count(option: str, value: int | None, minimum: int = 1) -> None:
    """Refuse a command-line count below ``minimum`` (``None``: not given)."""
    if value is not None and value < minimum:
        raise HumanLiffError(f"{option} {value}: must be at least {minimum}")

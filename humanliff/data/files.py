"""Dataset files shared by both layouts: the subject list, ``cameras.json``, view folders, and the
problem collector that lets ``data check`` report every problem while loading stops at the first."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from humanliff.errors import HumanLiffError, InputFileError

R_ = TypeVar("R_")
CAMERA_DIR = re.compile(r"camera(\d{4})$")


def attempt(problems: list[str] | None, fn: Callable[..., R_], *args: Any) -> R_ | None:
    """Call ``fn``; with a ``problems`` list, record a ``HumanLiffError`` there and return None, not raise."""
    if problems is None:
        return fn(*args)
    try:
        return fn(*args)
    except HumanLiffError as exc:
        problems.append(str(exc))
        return None


def attempt_all(problems: list[str] | None, fn: Callable[..., R_], jobs: list[tuple]) -> list[R_ | None]:
    """``attempt(problems, fn, *job)`` for every job, on a thread pool (image decoding releases the GIL)."""
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
    results: list[R_ | None] = []
    for future in futures:
        exc = future.exception()
        if exc is None:
            results.append(future.result())
        elif problems is not None and isinstance(exc, HumanLiffError):
            problems.append(str(exc))
            results.append(None)
        else:
            raise exc
    return results


def read_subject_list(path: str | Path, max_subjects: int = 0) -> list[str]:
    """Subject folder names, one a line (blank lines skipped); the first ``max_subjects`` (0: all)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "missing (the subject list: one subject folder name a line)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise InputFileError(path, "lists no subjects")
    return names[:max_subjects] if max_subjects > 0 else names


def camera_problem(K: np.ndarray, R: np.ndarray, T: np.ndarray, tol: float = 1e-2) -> str | None:
    """What is wrong with one camera (None when nothing): non-finite values, a singular intrinsic matrix
    ``K``, or an ``R`` that is not a rotation (orthonormal with determinant +1, within ``tol``)."""
    for name, value in (("K", K), ("R", R), ("T", T)):
        if not np.isfinite(value).all():
            return f"{name} holds NaN or infinite values"
    K64, R64 = K.astype(np.float64), R.astype(np.float64)
    if abs(np.linalg.det(K64)) < 1e-9 * max(1.0, float(np.abs(K64).max()) ** 3):
        return "K is not invertible (intrinsics with zero focal length?)"
    if np.abs(R64 @ R64.T - np.eye(3)).max() > tol or np.linalg.det(R64) < 0:
        return "R is not a rotation (orthonormal with determinant +1)"
    return None


def read_cameras(path: str | Path) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``cameras.json`` (``{"camera0000": {"K": 3x3, "R": 3x3, "T": 3}, ...}``): view -> float32 (K, R, T)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "missing")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputFileError(path, "expected an object of camera entries")
    cameras = {}
    for key, entry in data.items():
        match = re.fullmatch(r"camera(\d+)", key)
        if match is None:
            raise InputFileError(path, f"unexpected entry '{key}' (expected camera0000, camera0001, ...)")
        try:
            K = np.asarray(entry["K"], dtype=np.float32).reshape(3, 3)
            R = np.asarray(entry["R"], dtype=np.float32).reshape(3, 3)
            T = np.asarray(entry["T"], dtype=np.float32).reshape(3)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(path, f"entry '{key}' needs K (3x3), R (3x3) and T (3) ({exc})") from exc
        problem = camera_problem(K, R, T)
        if problem is not None:
            raise InputFileError(path, f"entry '{key}': {problem}")
        cameras[int(match.group(1))] = (K, R, T)
    if not cameras:
        raise InputFileError(path, "has no camera entries")
    return cameras


def view_folders(img_dir: str | Path) -> list[int]:
    """Sorted view indices of the ``camera%04d`` folders in an ``img`` folder."""
    img_dir = Path(img_dir)
    if not img_dir.is_dir():
        raise InputFileError(img_dir, "missing")
    matches = [(CAMERA_DIR.match(p.name), p) for p in img_dir.iterdir()]
    views = sorted(int(m.group(1)) for m, p in matches if m and p.is_dir())
    if not views:
        raise InputFileError(img_dir, "has no camera%04d view folders")
    return views


def cameras_for(path: Path, cameras: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
                views: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stacked ``K [V, 3, 3], R [V, 3, 3], T [V, 3]`` of ``views``; raises if ``cameras.json`` lacks one."""
    missing = [v for v in views if v not in cameras]
    if missing:
        raise InputFileError(path, "no entry for " + ", ".join(f"camera{v:04d}" for v in missing[:5])
                             + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""))
    return tuple(np.stack([cameras[v][i] for v in views]) for i in range(3))


def check_folders(subject_dir: Path, known: tuple[str, ...]) -> None:
    """Raise if ``subject_dir`` lacks a layer folder of ``known`` or holds a folder not among them."""
    if not subject_dir.is_dir():
        raise InputFileError(subject_dir, "missing subject folder")
    present = {p.name for p in subject_dir.iterdir() if p.is_dir()}
    unknown = sorted(present - set(known))
    if unknown:
        raise InputFileError(subject_dir / unknown[0], f"unknown layer folder (expected {', '.join(known)})")
    missing = [name for name in known if name not in present]
    if missing:
        raise InputFileError(subject_dir / missing[0], "missing layer folder")


def common_views(folders: list[Path]) -> list[int]:
    """View indices shared by ``camera%04d`` folders (``img`` or ``mask``); raises if the folders disagree."""
    if not folders:
        raise HumanLiffError("no layer folders to read views from")
    views = view_folders(folders[0])
    for folder in folders[1:]:
        other = view_folders(folder)
        if other != views:
            extra = sorted(set(other) ^ set(views))[:3]
            raise InputFileError(folder, f"has {len(other)} views but {folders[0]} has {len(views)} "
                                         f"(differing: {', '.join(f'camera{v:04d}' for v in extra)})")
    return views


def stack_views(subject_dir: Path, pairs: list[tuple[np.ndarray, np.ndarray]], n_layers: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Stack decoded (image, mask) pairs, layer-major, into ``[L, V, H, W, 3]`` and ``[L, V, H, W]``."""
    sizes = {pair[1].shape for pair in pairs}
    if len(sizes) > 1:
        raise InputFileError(subject_dir, "views have different image sizes: "
                                          + ", ".join(f"{w}x{h}" for h, w in sorted(sizes)))
    images = np.stack([pair[0] for pair in pairs])
    masks = np.stack([pair[1] for pair in pairs])
    return images.reshape(n_layers, -1, *images.shape[1:]), masks.reshape(n_layers, -1, *masks.shape[1:])

"""anny's model-data cache: built once per folder, 51 MB kept instead of 0.8 GB, its targets parsed by numpy.

anny (0.6.x) builds its model in three cached steps, each a safetensors file in ``<cache>/v<N>/``: every
MakeHuman target parsed (``load_data_*``, 561 MB), the rig and topology applied (``build_model_data_*``, 216 MB)
and the phenotype blend shapes compacted (``build_compact_model_data_*``, 51 MB). Constructing a model reads only
the compact file when it is there, so the first use builds in a staging folder inside the cache and keeps only
that file. Most of the build was anny's per-line Python parser of ~6 M target lines; while building, anny's two
parsers are replaced by numpy ones that give the same float64 values (checked against anny's in the tests).
The folder is ``$ANNY_CACHE_DIR`` or ``~/.cache/humanliff/anny``; one process builds, the others wait for it.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from humanliff.io import locked_folder

KEPT = "build_compact_model_data_*.safetensors"
"""The cache files a model construction reads (per data version folder ``v<N>``)."""


def cache_dir() -> Path:
    """anny's blend-shape cache: ``$ANNY_CACHE_DIR`` or ``~/.cache/humanliff/anny``."""
    return Path(os.environ.get("ANNY_CACHE_DIR") or Path.home() / ".cache" / "humanliff" / "anny")


def _offsets(text: bytes, filename: str | Path, vertices_count: int, dtype: torch.dtype) -> torch.Tensor:
    """Per-vertex offsets ``[vertices_count, 3]`` from target lines ``id dx dy dz`` (unlisted vertices 0)."""
    table = np.array(text.split(), dtype=np.float64)
    if table.size % 4:
        raise ValueError(f"{filename}: target lines must be a vertex id and 3 offsets")
    table = table.reshape(-1, 4)
    ids = table[:, 0].astype(np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= vertices_count or (ids != table[:, 0]).any()):
        raise ValueError(f"{filename}: vertex ids must be integers in [0, {vertices_count})")
    offsets = torch.zeros((vertices_count, 3), dtype=dtype)
    offsets[torch.from_numpy(ids)] = torch.from_numpy(table[:, 1:]).to(dtype)
    return offsets


def parse_target(filename: str | Path, vertices_count: int, world_transformation: Any,
                 dtype: torch.dtype) -> torch.Tensor:
    """A gzipped MakeHuman target as anny's ``full_model.load_blend_shape`` reads it: offsets ``[V, 3]``
    (decimetres, MakeHuman's frame) mapped by ``world_transformation`` (a roma transform)."""
    with gzip.open(filename, "rb") as f:
        return world_transformation.apply(_offsets(f.read(), filename, vertices_count, dtype))


def parse_plain_target(filename: str | Path, vertices_count: int, world_transformation: Any,
                       dtype: torch.dtype) -> torch.Tensor:
    """A plain-text target (``#`` comments and blank lines allowed) as anny's
    ``facial_actions.load_plain_target`` reads it."""
    lines = Path(filename).read_bytes().splitlines()
    text = b"\n".join(line for line in lines if not line.strip().startswith(b"#"))
    return world_transformation.apply(_offsets(text, filename, vertices_count, dtype))


@contextlib.contextmanager
def _numpy_parsers() -> Iterator[None]:
    """anny's target parsers replaced by ``parse_target`` / ``parse_plain_target`` (where anny has them)."""
    from anny.models import facial_actions, full_model

    swaps = [(m, name, fn) for m, name, fn in ((full_model, "load_blend_shape", parse_target),
                                               (facial_actions, "load_plain_target", parse_plain_target))
             if hasattr(m, name)]
    saved = [getattr(m, name) for m, name, _ in swaps]
    for m, name, fn in swaps:
        setattr(m, name, fn)
    try:
        yield
    finally:
        for (m, name, _), fn in zip(swaps, saved, strict=True):
            setattr(m, name, fn)


def _has_compact(root: Path) -> bool:
    """Whether ``root`` holds a compact model file of the installed anny's data version."""
    from anny.models.model_data import CURRENT_DATA_VERSION

    return any((root / f"v{CURRENT_DATA_VERSION}").glob(KEPT))


def _build_in_staging(construct: Callable[[], Any], root: Path) -> Any:
    """Run ``construct`` with its cache in a staging folder inside ``root``; move the compact file it builds into
    ``root`` and drop the intermediate ones."""
    import anny.paths

    with tempfile.TemporaryDirectory(prefix=".staging-", dir=root) as tmp:
        staging = Path(tmp)
        anny.paths.set_anny_cache_path(staging)
        with _numpy_parsers():
            model = construct()
        for built in staging.glob(f"v*/{KEPT}"):
            (root / built.parent.name).mkdir(exist_ok=True)
            os.replace(built, root / built.relative_to(staging))
    return model


def build_cached(construct: Callable[[], Any], root: Path | None = None) -> Any:
    """Run ``construct`` (an anny model constructor) with its cache in ``root`` (default ``cache_dir()``),
    building the cache first when ``root`` has no compact model file (one process at a time; the others wait
    and then load it). Returns what ``construct`` returns."""
    import anny.paths

    root = root or cache_dir()
    if not _has_compact(root):
        root.mkdir(parents=True, exist_ok=True)
        with locked_folder(root):
            if not _has_compact(root):
                try:
                    return _build_in_staging(construct, root)
                finally:
                    anny.paths.set_anny_cache_path(root)
    anny.paths.set_anny_cache_path(root)
    return construct()

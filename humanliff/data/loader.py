"""``load_dataset``: read a dataset folder in either layout into ``SubjectData``, and the view split."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from humanliff.data.files import read_subject_list
from humanliff.errors import HumanLiffError
from humanliff.runtime.layers import LAYER_NAMES

if TYPE_CHECKING:
    from humanliff.config import DataConfig
    from humanliff.data.types import SubjectData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """A dataset layout: its subject list file names (the first that exists is read), how one subject is
    read, and which file holds a layer's mask of a view (named in errors)."""

    name: str
    subject_lists: tuple[str, ...]
    read_subject: Callable[[DataConfig, Path, list[str] | None], SubjectData | None]
    """``(data_cfg, subject_dir, problems)``; ``problems`` as ``synbody.load_subject``."""
    mask_file: Callable[[Path, int, int], Path]
    """``(subject_dir, layer, view id) -> path``."""
    subject_box: Callable[[DataConfig, Path], np.ndarray]
    """``(data_cfg, subject_dir) -> [2, 3]`` world box, without reading any image (``bounds.json``, else the
    SMPL(-X) fit)."""


# The readers import their modules when called, so that the config and the CLI read LAYOUTS without torch.
def _read_synbody(data_cfg: DataConfig, subject_dir: Path, problems: list[str] | None) -> SubjectData | None:
    from humanliff.data import synbody

    return synbody.load_subject(subject_dir, data_cfg.image_scaling, data_cfg.smpl_dir, problems)


def _read_tightcap(data_cfg: DataConfig, subject_dir: Path, problems: list[str] | None) -> SubjectData | None:
    from humanliff.data import tightcap

    return tightcap.load_subject(subject_dir, data_cfg.image_scaling, data_cfg.smpl_dir, data_cfg.canonical,
                                 problems)


def _synbody_box(data_cfg: DataConfig, subject_dir: Path) -> np.ndarray:
    from humanliff.data.synbody import subject_bounds

    return subject_bounds(subject_dir, data_cfg.smpl_dir)


def _tightcap_box(data_cfg: DataConfig, subject_dir: Path) -> np.ndarray:
    from humanliff.data.tightcap import subject_geometry

    return subject_geometry(subject_dir, data_cfg.smpl_dir, data_cfg.canonical)[0]


def _synbody_mask(subject_dir: Path, layer: int, view: int) -> Path:
    from humanliff.data.synbody import view_file

    return view_file(subject_dir / LAYER_NAMES[layer], "mask", view)


def _tightcap_mask(subject_dir: Path, layer: int, view: int) -> Path:
    """TightCap's layers 0-2 are synthesized from several garment masks: no one file, so name layer and view."""
    return subject_dir / f"layer {layer} view {view}"


LAYOUTS: dict[str, Layout] = {
    "synbody": Layout("synbody", ("human_list.txt",), _read_synbody, _synbody_mask, _synbody_box),
    "tightcap": Layout("tightcap", ("human_list.txt", "TightCap_human_list.txt"), _read_tightcap, _tightcap_mask,
                       _tightcap_box),
}
"""The dataset layouts by ``data.layout`` name."""


def get_layout(name: str) -> Layout:
    """The registered layout ``name``; a one-line error listing the valid ones otherwise."""
    if name not in LAYOUTS:
        raise HumanLiffError(f"data.layout: unknown layout '{name}' (valid: {', '.join(LAYOUTS)})")
    return LAYOUTS[name]


def subject_list_path(root: str | Path, layout: str) -> Path:
    """The subject list of a dataset: the first of its layout's ``subject_lists`` that exists."""
    root, names = Path(root), get_layout(layout).subject_lists
    return next((root / n for n in names if (root / n).is_file()), root / names[0])


def load_subject(data_cfg: DataConfig, name: str, problems: list[str] | None = None) -> SubjectData | None:
    """One subject of ``data_cfg.root`` in ``data_cfg.layout``; ``problems`` as ``synbody.load_subject``."""
    return get_layout(data_cfg.layout).read_subject(data_cfg, Path(data_cfg.root) / name, problems)


def load_dataset(data_cfg: DataConfig, progress: bool = True) -> list[SubjectData]:
    """Every subject of the list (the first ``data_cfg.max_subjects``), decoded once into memory."""
    names = read_subject_list(subject_list_path(data_cfg.root, data_cfg.layout), data_cfg.max_subjects)
    subjects = [load_subject(data_cfg, name) for name in tqdm(names, desc="load", unit="subject",
                                                              disable=not progress, leave=False)]
    log.info("loaded %d subjects from %s (%d views of %dx%d)", len(subjects), data_cfg.root,
             len(subjects[0].view_ids), *subjects[0].image_size[::-1])
    return subjects


def split_views(n_views: int, holdout_every: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_ids, test_ids)`` of positions ``0..n_views-1``; every ``holdout_every``-th from 0 is held out.

    ``holdout_every`` 0 holds nothing out; 1 would hold out every view and is refused.
    """
    ids = np.arange(n_views)
    if holdout_every == 1:
        raise HumanLiffError("data.holdout_every: 1 would hold out every view (use 0 for none, or >= 2)")
    if holdout_every <= 0:
        return ids, ids[:0]
    test = ids % holdout_every == 0
    return ids[~test], ids[test]

"""``load_dataset``: read a dataset folder in either layout into ``SubjectData``, and the view split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from humanliff.config import DataConfig
from humanliff.data import synbody, tightcap
from humanliff.data.files import read_subject_list
from humanliff.data.types import SubjectData
from humanliff.errors import HumanLiffError

log = logging.getLogger(__name__)
LAYOUTS = ("synbody", "tightcap")


def subject_list_path(root: str | Path, layout: str) -> Path:
    """The subject list of a dataset: ``human_list.txt`` (TightCap: or ``TightCap_human_list.txt``)."""
    if layout not in LAYOUTS:
        raise HumanLiffError(f"data.layout: unknown layout '{layout}' (valid: {', '.join(LAYOUTS)})")
    root = Path(root)
    names = tightcap.SUBJECT_LISTS if layout == "tightcap" else ("human_list.txt",)
    return next((root / n for n in names if (root / n).is_file()), root / names[0])


def load_subject(data_cfg: DataConfig, name: str, problems: list[str] | None = None) -> SubjectData | None:
    """One subject of ``data_cfg.root`` in ``data_cfg.layout``; ``problems`` as ``synbody.load_subject``."""
    subject_dir = Path(data_cfg.root) / name
    if data_cfg.layout == "tightcap":
        return tightcap.load_subject(subject_dir, data_cfg.image_scaling, data_cfg.smpl_dir,
                                     data_cfg.canonical, problems)
    return synbody.load_subject(subject_dir, data_cfg.image_scaling, data_cfg.smpl_dir, problems)


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

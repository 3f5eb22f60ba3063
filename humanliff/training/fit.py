"""Tri-plane fitting, shared by its two stages: stage A (``fit_a.py``: shared decoder + a tri-plane per subject
and layer) and stage B (``fit_b.py``: frozen decoder, subjects in groups, layer after layer).

Stage A (``fit_stage_a``) runs under torchrun with subjects sharded across ranks (subject s on rank
s % world): the decoder is wrapped in DDP (its gradients are all-reduced), the planes stay rank-local in a
``RowAdam`` table that updates only the rows a step touched. Stage B (``fit_stage_b``) fits many subjects
at once with the decoder frozen, layer after layer: layer 0 starts from the mean stage-A layer-0 plane,
layer k from the subject's fitted layer k-1. Both write a tri-plane store and resume from their last
checkpoint in ``out_dir``:

```
out_dir/config.yaml
out_dir/checkpoint_a/   state.pt + planes/exp_avg/exp_avg_sq.npy fp32 [S,4,27,R,R] + row_steps.npy [S,4]
out_dir/store_a/        stage-A store
out_dir/checkpoint_b.pt stage-B position (group, layer, step), the group's planes and optimizer
out_dir/store_b.partial -> out_dir/store_b
```
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from humanliff.config import Config, dump_config
from humanliff.data.files import read_subject_list
from humanliff.data.loader import load_subject, split_views, subject_list_path
from humanliff.data.types import SubjectData
from humanliff.io import atomic_path

log = logging.getLogger(__name__)


def subject_names(cfg: Config) -> list[str]:
    """The dataset's subject list (the first ``data.max_subjects``)."""
    return read_subject_list(subject_list_path(cfg.data.root, cfg.data.layout), cfg.data.max_subjects)


def load_subjects(cfg: Config, names: Sequence[str]) -> list[SubjectData]:
    """The named subjects of ``cfg.data``, decoded into memory."""
    return [load_subject(cfg.data, n) for n in tqdm(names, desc="load", unit="subject", leave=False)]


def train_views(subjects: Sequence[SubjectData], cfg: Config) -> np.ndarray:
    """View positions fitted on (the held-out ones, ``data.holdout_every``, left out)."""
    train, _ = split_views(len(subjects[0].view_ids), cfg.data.holdout_every)
    return train


def log_step(bar: tqdm, stage: str, step: int, parts: dict[str, torch.Tensor]) -> None:
    """Log the mean of each loss term (one device sync)."""
    means = torch.stack([p.float().mean() for p in parts.values()]).tolist()
    values = dict(zip(parts, means, strict=True))
    values["psnr"] = -10.0 * float(np.log10(max(values["mse"], 1e-10)))
    bar.set_postfix(loss=f"{values['loss']:.4f}", psnr=f"{values['psnr']:.2f}")
    log.debug("%s step %d: %s", stage, step, ", ".join(f"{k} {v:.5f}" for k, v in values.items()))


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


def write_fit_config(cfg: Config, out_dir: Path) -> None:
    """``out_dir/config.yaml``, written once the fit has succeeded."""
    with atomic_path(out_dir / "config.yaml") as tmp:
        dump_config(cfg, tmp)

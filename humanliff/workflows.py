"""``humanliff.fit`` and ``humanliff.train``: the ``fit`` and ``train`` commands as Python calls.

Each checks its run folder before any work (``humanliff.run_folder``), holds it locked while it runs and
resumes from the folder's checkpoint, exactly as the command line does (the commands call these).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from humanliff.config import Config, load_config
from humanliff.errors import HumanLiffError
from humanliff.run_folder import ensure_space, guard_output, hold_run_folder


def _config(config: Config | str | Path | None, overrides: Sequence[str], data: str | Path | None) -> Config:
    cfg = config if isinstance(config, Config) else load_config(config)
    cfg = cfg.with_overrides(overrides)
    return cfg if data is None else dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data)))


def fit(stage: str, out: str | Path, *, config: Config | str | Path | None = None, overrides: Sequence[str] = (),
        data: str | Path | None = None, store: str | Path | None = None, device: str | None = None,
        resume_anyway: bool = False) -> Path:
    """Fit tri-planes to the dataset ``data`` (default ``data.root``) into the run folder ``out``; returns the
    written store (``out/store_a`` or ``out/store_b``).

    ``stage``: ``"a"`` (shared decoder + planes) or ``"b"`` (per-subject planes with the frozen decoder of
    ``store``, default ``out/store_a``). ``config``: a ``Config``, preset name or YAML file, then
    ``overrides`` (``section.key=value``).
    """
    from humanliff.training.fit import fit_bytes, fit_stage_a, fit_stage_b

    if stage not in ("a", "b"):
        raise HumanLiffError(f"--stage {stage}: use a or b")
    cfg = _config(config, overrides, data)
    guard_output(out, [cfg.data.root, store], replaced=False)
    ensure_space(out, fit_bytes(cfg, stage))
    with hold_run_folder(out):
        if stage == "a":
            return fit_stage_a(cfg, out, device, resume_anyway=resume_anyway)
        return fit_stage_b(cfg, store or Path(out) / "store_a", out, device, resume_anyway=resume_anyway)


def train(store: str | Path, out: str | Path, *, config: Config | str | Path | None = None,
          overrides: Sequence[str] = (), device: str | None = None, resume_anyway: bool = False) -> Path:
    """Train the layered diffusion UNet on the tri-plane store ``store`` into the run folder ``out`` (resumed
    when it holds a checkpoint); returns ``out/ema.pt``, a source for ``humanliff.Pipeline.from_pretrained``
    (with ``store``)."""
    from humanliff.training.train import train as train_unet

    cfg = _config(config, overrides, None)
    guard_output(out, [store], replaced=False)
    with hold_run_folder(out):
        return train_unet(cfg, store, out, device, resume_anyway=resume_anyway)

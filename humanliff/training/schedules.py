"""Learning-rate schedules of the tri-plane fits (the original's step decays, seed-architecture §2.5-2.6)."""

from __future__ import annotations

from humanliff.config import FitConfig


def decoder_lr_a(cfg: FitConfig, step: int) -> float:
    """Stage A decoder lr: ``lr_decoder * 0.1^(step / (600 * lr_decay))`` (5e-3 -> 1.08e-3 at 200k)."""
    return cfg.lr_decoder * 0.1 ** (step / (600 * cfg.lr_decay))


def planes_lr_a(cfg: FitConfig, step: int) -> float:
    """Stage A tri-plane lr: ``lr_planes * 0.5^(step / (60 * lr_decay))`` (0.1 -> 9.8e-4 at 200k)."""
    return cfg.lr_planes * 0.5 ** (step / (60 * cfg.lr_decay))


def planes_lr_b(cfg: FitConfig, step: int) -> float:
    """Stage B tri-plane lr, restarting for every layer: ``lr_planes * 0.5^(step / lr_decay_b)``."""
    return cfg.lr_planes * 0.5 ** (step / cfg.lr_decay_b)

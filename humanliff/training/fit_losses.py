"""The fitting losses of the original (seed-architecture §2.4), kept per tri-plane.

``loss = MSE(rgb, gt) + acc_weight * MSE(acc, mask) + tv_weight * TV(P) + l1_weight * mean|P|`` where TV
is the mean absolute difference of neighbouring texels along H plus along W. Every term is returned per
tri-plane (``[U]``), so stage A can average them (the original's batch mean) and stage B can sum them
(each subject's plane then gets exactly the gradient it would get if fitted alone).
"""

from __future__ import annotations

import torch

from humanliff.config import FitConfig

LOSS_TERMS = ("loss", "mse", "acc", "tv", "l1")
"""The keys of ``plane_losses``, in its order (a captured stage-A step returns them as a tuple)."""


def total_variation(planes: torch.Tensor) -> torch.Tensor:
    """``[U, C, R, R]`` -> ``[U]``: mean |dP/dv| + mean |dP/du| per plane (``F.l1_loss`` means)."""
    dv = (planes[..., 1:, :] - planes[..., :-1, :]).abs().flatten(1).mean(1)
    du = (planes[..., :, 1:] - planes[..., :, :-1]).abs().flatten(1).mean(1)
    return dv + du


def plane_losses(rgb: torch.Tensor, acc: torch.Tensor, target_rgb: torch.Tensor, target_mask: torch.Tensor,
                 planes: torch.Tensor, cfg: FitConfig) -> dict[str, torch.Tensor]:
    """Loss terms per tri-plane, each ``[U]`` float32.

    rgb, target_rgb: ``[U, N, 3]`` in [0, 1]; acc: ``[U, N]`` accumulated opacity; target_mask: ``[U, N]``
    (1 on the subject, 0 off it); planes: ``[U, C, R, R]``. Keys: ``LOSS_TERMS``.
    """
    mse = (rgb.float() - target_rgb.float()).square().flatten(1).mean(1)
    acc_term = (acc.float() - target_mask.float()).square().flatten(1).mean(1)
    tv = total_variation(planes.float())
    l1 = planes.float().abs().flatten(1).mean(1)
    loss = mse + cfg.acc_weight * acc_term + cfg.tv_weight * tv + cfg.l1_weight * l1
    return dict(zip(LOSS_TERMS, (loss, mse, acc_term, tv, l1), strict=True))


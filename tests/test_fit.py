"""Tri-plane fitting: sparse Adam, losses, schedules, stage A and B on tiny synthetic data."""

from __future__ import annotations

import pytest
import torch

from humanliff.config import FitConfig
from humanliff.training.fit_losses import plane_losses, total_variation
from humanliff.training.schedules import decoder_lr_a, planes_lr_a, planes_lr_b
from humanliff.training.sparse_adam import RowAdam


def test_row_adam_matches_torch_adam_on_touched_rows():
    torch.manual_seed(0)
    table = torch.randn(5, 3, 4, 4) * 0.1
    rows = torch.tensor([3, 1])
    reference = table[rows].clone().requires_grad_(True)
    adam = torch.optim.Adam([reference], lr=0.05)
    sparse = RowAdam(table.clone(), clamp=0)
    for step in range(4):
        grad = torch.randn(2, 3, 4, 4) * (step + 1)
        reference.grad = grad.clone()
        adam.step()
        sparse.step(rows, grad, 0.05)
    torch.testing.assert_close(sparse.table[rows], reference.detach(), atol=1e-6, rtol=1e-5)
    untouched = torch.tensor([0, 2, 4])
    assert sparse.table[untouched].equal(table[untouched])
    assert sparse.steps.tolist() == [0, 4, 0, 4, 0]


def test_row_adam_per_row_bias_correction_and_clamp():
    table = torch.zeros(3, 2)
    opt = RowAdam(table, clamp=1.0)
    opt.step(torch.tensor([0]), torch.ones(1, 2), 0.5)
    opt.step(torch.tensor([0, 2]), torch.ones(2, 2), 0.5)
    # a first step moves by lr whatever the gradient's scale; the row stepped twice moves twice
    torch.testing.assert_close(table, torch.tensor([[-1.0, -1.0], [0.0, 0.0], [-0.5, -0.5]]))
    opt.step(torch.tensor([0]), torch.ones(1, 2), 0.5)
    assert table[0].tolist() == [-1.0, -1.0]
    state = {k: v.clone() for k, v in opt.state_dict().items()}
    other = RowAdam(table.clone())
    other.load_state_dict(state)
    assert other.steps.tolist() == [3.0, 0.0, 1.0]
    leaf = other.gather(torch.tensor([2, 0]))
    assert leaf.requires_grad and leaf.is_leaf and leaf[1].tolist() == [-1.0, -1.0]


def test_losses_per_plane():
    cfg = FitConfig()
    planes = torch.zeros(2, 27, 4, 4)
    planes[1, :, :, 2:] = 1.0
    assert total_variation(planes).tolist() == [0.0, pytest.approx(1 / 3)]
    rgb = torch.full((2, 10, 3), 0.5)
    target = torch.zeros(2, 10, 3)
    acc = torch.ones(2, 10)
    mask = torch.zeros(2, 10)
    mask[0, :5] = 1
    parts = plane_losses(rgb, acc, target, mask, planes, cfg)
    assert parts["mse"].tolist() == [0.25, 0.25]
    assert parts["acc"].tolist() == [0.5, 1.0]
    assert parts["l1"].tolist() == [0.0, 0.5]
    expected = 0.25 + 0.1 * 1.0 + 1e-2 / 3 + 5e-4 * 0.5
    assert parts["loss"][1].item() == pytest.approx(expected)


def test_schedules():
    cfg = FitConfig()
    assert decoder_lr_a(cfg, 0) == 5e-3 and planes_lr_a(cfg, 0) == 0.1 and planes_lr_b(cfg, 0) == 0.1
    assert decoder_lr_a(cfg, 200000) == pytest.approx(1.077e-3, rel=1e-3)
    assert planes_lr_a(cfg, 200000) == pytest.approx(9.84e-4, rel=1e-2)
    assert planes_lr_b(cfg, 2000) == pytest.approx(6.25e-3)

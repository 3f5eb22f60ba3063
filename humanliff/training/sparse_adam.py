"""Lazy Adam over rows of a tri-plane table: a step reads and writes only the rows it touched.

Stage A holds one tri-plane per (subject, layer): ``[S*4, C, R, R]``, far too large to step densely every
iteration (the original's dense Adam updated and all-reduced all 708M values per step, bug B11 / §4.1.2).
Here the table and its two moments live outside any ``torch.optim`` optimizer; a step gathers the rows of
its batch, the loss's gradient w.r.t. those rows comes back, and only those rows (and their moments and
step counts) change. Rows never drawn do not drift.
"""

from __future__ import annotations

import torch


class RowAdam:
    """Adam (betas, eps as ``torch.optim.Adam``) on the rows of ``table``, with a per-row step count.

    table: float32 ``[N, ...]``, updated in place. ``clamp``: clip updated rows to [-clamp, clamp] (0: off).
    """

    def __init__(self, table: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 clamp: float = 1.0) -> None:
        self.table = table
        self.exp_avg = torch.zeros_like(table)
        self.exp_avg_sq = torch.zeros_like(table)
        self.steps = torch.zeros(table.shape[0], dtype=torch.float32, device=table.device)
        self.betas = betas
        self.eps = eps
        self.clamp = clamp

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """A leaf copy of ``table[rows]`` that requires grad; ``rows`` int64 ``[U]``, unique."""
        return self.table.index_select(0, rows).requires_grad_(True)

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grad: torch.Tensor, lr: float | torch.Tensor) -> None:
        """One Adam step on ``table[rows]`` with ``grad`` ``[U, ...]`` (``rows`` unique)."""
        b1, b2 = self.betas
        grad = grad.to(self.table.dtype)
        m = self.exp_avg.index_select(0, rows).lerp_(grad, 1 - b1)
        v = self.exp_avg_sq.index_select(0, rows).mul_(b2).addcmul_(grad, grad, value=1 - b2)
        t = self.steps.index_select(0, rows) + 1
        shape = (-1,) + (1,) * (grad.dim() - 1)
        bias1 = (1 - b1 ** t).view(shape)
        bias2 = (1 - b2 ** t).view(shape)
        update = (m / bias1) / ((v / bias2).sqrt_().add_(self.eps))
        new = self.table.index_select(0, rows).sub_(update * lr)
        if self.clamp > 0:
            new.clamp_(-self.clamp, self.clamp)
        self.table.index_copy_(0, rows, new)
        self.exp_avg.index_copy_(0, rows, m)
        self.exp_avg_sq.index_copy_(0, rows, v)
        self.steps.index_copy_(0, rows, t)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Moments and step counts (the table itself is saved by its owner)."""
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": self.steps}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore moments and step counts (shapes must match the table)."""
        for key in ("exp_avg", "exp_avg_sq", "steps"):
            getattr(self, key).copy_(state[key])

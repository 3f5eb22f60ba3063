"""Stop a fit or a training run at the first non-finite loss, before a bad state reaches a checkpoint."""

from __future__ import annotations

import torch

from humanliff.errors import HumanLiffError
from humanliff.training import distributed


class LossWatch:
    """Remembers the first step whose loss held a NaN or an infinity, without a host sync per step."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        """Record ``step`` if ``loss`` (any shape) is not finite and no earlier step was."""
        bad = (self.first_bad < 0) & ~torch.isfinite(loss.detach()).all()
        self.first_bad = torch.where(bad, step, self.first_bad)

    def check(self, what: str, kept: str) -> None:
        """Raise one line (on every rank) naming the first bad step; ``kept`` says what was kept."""
        flag = distributed.all_reduce_sum((self.first_bad >= 0).float())
        if flag.item() > 0:
            step = int(self.first_bad.item())
            at = f"at step {step}" if step >= 0 else "on another rank"
            raise HumanLiffError(f"{what}: the loss is not finite (NaN or infinity) {at}; stopped, {kept}")

"""Exponential moving average of a model's parameters, updated with one fused ``torch._foreach_lerp_``."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """fp32 shadow copies of ``model``'s parameters: ``ema = rate * ema + (1 - rate) * param`` per step."""

    def __init__(self, model: nn.Module, rate: float) -> None:
        self.rate = rate
        self.names = [name for name, _ in model.named_parameters()]
        self.params = [p.detach().float().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the averages toward ``model``'s current parameters (no host sync)."""
        current = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(self.params, current, 1.0 - self.rate)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``model``'s state dict with the averaged parameters in place of the live ones (CPU tensors)."""
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        state.update({name: p.cpu() for name, p in zip(self.names, self.params, strict=True)})
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the averages from a state dict written by ``state_dict``."""
        for name, p in zip(self.names, self.params, strict=True):
            p.copy_(state[name])

"""Tri-plane decoders: 27 features (+ view direction) to raw colour and density.

Both decoders follow one contract: ``decoder(features [N, 27], viewdirs [N, 3])`` returns
``(rgb_raw [N, 3], sigma_raw [N, 1])`` before sigmoid / softplus; with ``viewdirs=None`` it returns
only ``sigma_raw [N, 1]`` (as the original's coarse pass); ``decoder.density(features)`` is the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from humanliff.config import DecoderConfig
from humanliff.errors import HumanLiffError
from humanliff.models.tcnn_backend import TcnnFusedMLP, TorchFusedMLP
from humanliff.runtime.triplane import CHANNELS

BACKENDS = {"torch": TorchFusedMLP, "tcnn": TcnnFusedMLP}
"""FusedDecoder backends: the torch twin (default, exportable) and tinycudann."""


def view_encoding(dirs: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """The original's positional encoding of unit view directions.

    ``[N, 3] -> [N, 3 + 6 * n_freqs]``: ``[d, sin(d), cos(d), sin(2d), cos(2d), ...]`` at
    frequencies 1, 2, ..., 2^(n_freqs - 1) (no factor pi), each a 3-vector.
    """
    dirs = F.normalize(dirs, dim=-1)
    parts = [dirs]
    for k in range(n_freqs):
        scaled = dirs * (2.0**k)
        parts += [torch.sin(scaled), torch.cos(scaled)]
    return torch.cat(parts, dim=-1)


class SeedDecoder(nn.Module):
    """The original decoder (``Renderer.NeRF_network``); its state-dict keys load unchanged.

    Trunk 27 -> 128 -> 128, skip ``cat[x, h]`` -> 128, softplus (beta 1) after each; density
    ``alpha_linear``; colour ``feature_linear`` then ``cat[feature, PE(dir)]`` -> 64 (softplus) -> 3.
    """

    def __init__(self, in_features: int = CHANNELS, width: int = 128, view_width: int = 64,
                 view_freqs: int = 4) -> None:
        super().__init__()
        self.view_freqs = view_freqs
        self.pts_linears = nn.ModuleList([
            nn.Linear(in_features, width), nn.Linear(width, width), nn.Linear(width + in_features, width)
        ])
        self.alpha_linear = nn.Linear(width, 1)
        self.feature_linear = nn.Linear(width, width)
        self.views_linear = nn.Linear(width + 3 + 6 * view_freqs, view_width)
        self.rgb_linear = nn.Linear(view_width, 3)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        h = F.softplus(self.pts_linears[0](x))
        h = F.softplus(self.pts_linears[1](h))
        return F.softplus(self.pts_linears[2](torch.cat([x, h], dim=-1)))

    def density(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, 27] -> sigma_raw [N, 1]``."""
        return self.alpha_linear(self._trunk(features))

    def forward(
        self, features: torch.Tensor, viewdirs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        """``(rgb_raw [N, 3], sigma_raw [N, 1])``, or ``sigma_raw`` alone when ``viewdirs`` is None."""
        h = self._trunk(features)
        sigma = self.alpha_linear(h)
        if viewdirs is None:
            return sigma
        v = torch.cat([self.feature_linear(h), view_encoding(viewdirs, self.view_freqs)], dim=-1)
        rgb = self.rgb_linear(F.softplus(self.views_linear(v)))
        return rgb, sigma


class FusedDecoder(nn.Module):
    """A tiny-cuda-nn shaped decoder: two bias-free FullyFusedMLPs.

    Density network ``[N, 27] -> [N, 1 + geo_features]`` (sigma_raw first, then geometry features);
    colour network ``cat[geo, PE(dir)] -> [N, 3]``. ``backend`` is ``torch`` (default, exportable) or
    ``tcnn`` (tinycudann, CUDA); the two load each other's state dicts.
    """

    def __init__(self, hidden: int = 64, density_layers: int = 2, geo_features: int = 15,
                 color_hidden: int = 64, color_layers: int = 1, view_freqs: int = 4,
                 activation: str = "softplus", backend: str = "torch") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise HumanLiffError(f"decoder backend '{backend}' is not one of {sorted(BACKENDS)}")
        mlp = BACKENDS[backend]
        self.backend, self.view_freqs, self.geo_features = backend, view_freqs, geo_features
        self.density_net = mlp(CHANNELS, 1 + geo_features, hidden, density_layers, activation)
        self.color_net = mlp(geo_features + 3 + 6 * view_freqs, 3, color_hidden, color_layers, activation)

    def density(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, 27] -> sigma_raw [N, 1]``."""
        return self.density_net(features)[:, :1]

    def forward(
        self, features: torch.Tensor, viewdirs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        """``(rgb_raw [N, 3], sigma_raw [N, 1])``, or ``sigma_raw`` alone when ``viewdirs`` is None."""
        out = self.density_net(features)
        sigma = out[:, :1]
        if viewdirs is None:
            return sigma
        rgb = self.color_net(torch.cat([out[:, 1:], view_encoding(viewdirs, self.view_freqs)], dim=-1))
        return rgb, sigma


DECODERS = ("seed", "fused")


def build_decoder(cfg: DecoderConfig) -> nn.Module:
    """The decoder ``cfg.kind`` names; ``seed`` has the original's fixed sizes and ignores the widths."""
    if cfg.kind == "seed":
        return SeedDecoder()
    if cfg.kind == "fused":
        return FusedDecoder(hidden=cfg.hidden, density_layers=cfg.density_layers,
                            geo_features=cfg.geo_features, color_hidden=cfg.color_hidden,
                            color_layers=cfg.color_layers, view_freqs=cfg.view_freqs,
                            activation=cfg.activation, backend=cfg.backend)
    raise HumanLiffError(f"decoder.kind '{cfg.kind}' is not one of {DECODERS}")

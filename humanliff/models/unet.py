"""The layered diffusion UNet: the original's improved-diffusion ``UNetModel`` with the controlnet branch.

The state dict is key for key the original's (``input_blocks_cond.*`` and ``input_blocks_proj_cond.*``
included), so an original ``ema_0.9999_*.pt`` loads with ``strict=True`` and gives the same output in
fp32. Inside, the code is modern: ``scaled_dot_product_attention`` (same math as the original's
per-head interleaved qkv with a 1/sqrt(d) scale), GroupNorm statistics in fp32 under bf16 autocast,
channels_last friendly, no host syncs and no graph breaks under ``torch.compile``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from humanliff.config import UNetConfig
from humanliff.errors import HumanLiffError


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos | sin]`` of integer timesteps ``[B]`` -> float32 ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) / half
                      * torch.arange(half, dtype=torch.float32, device=timesteps.device))
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm whose statistics are computed in fp32; the output keeps the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that passes ``emb`` to its ``ResBlock`` children."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Strided 3x3 conv: ``[B, C, H, W] -> [B, C, H/2, W/2]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv: ``[B, C, H, W] -> [B, C, 2H, 2W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """GN-SiLU-conv, embedding scale/shift (or add), GN-SiLU-dropout-conv, plus a skip (1x1 if widths
    differ): ``[B, C_in, H, W], emb [B, E] -> [B, C_out, H, W]``."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int,
                 use_scale_shift_norm: bool) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(_norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = (nn.Identity() if channels == out_channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        norm, act, drop, conv = self.out_layers
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = norm(h) * (1.0 + scale) + shift
        else:
            h = norm(h + emb_out)
        return self.skip_connection(x) + conv(drop(act(h)))


class AttentionBlock(nn.Module):
    """Spatial self-attention over ``H*W`` tokens with the original's per-head ``[q | k | v]`` qkv layout."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise HumanLiffError(f"attention width {channels} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, T, C]; a view for channels_last input
        qkv = F.linear(tokens, self.qkv.weight.squeeze(-1), self.qkv.bias)
        q, k, v = qkv.view(b, height * width, self.num_heads, 3, -1).permute(3, 0, 2, 1, 4)  # -1: c / heads
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, T, d]
        h = F.linear(h.transpose(1, 2).reshape(b, height * width, c), self.proj_out.weight.squeeze(-1),
                     self.proj_out.bias)
        return x + h.transpose(1, 2).view(b, c, height, width)


class UNet(nn.Module):
    """The original's ``UNetModel(cond_type="controlnet")``: eps-prediction over ``[B, C, R, R]`` tri-planes.

    ``attention_resolutions`` are downsample rates (1, 2, 4, ...) at which attention runs. The control
    branch is a second encoder fed ``x + x_cond``; its zero-initialized 1x1 convs are chained (each one's
    output feeds the next control block) and their outputs are added to the decoder's skip tensors.
    """

    def __init__(self, in_channels: int = 27, model_channels: int = 192, out_channels: int = 27,
                 num_res_blocks: int = 3, attention_resolutions: Sequence[int] = (8, 16, 32),
                 channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4), num_classes: int | None = 4,
                 num_heads: int = 4, use_scale_shift_norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.model_channels = model_channels
        self.num_classes = num_classes
        self.downsample_factor = 2 ** (len(channel_mult) - 1)
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        def res(ch_in: int, ch_out: int) -> ResBlock:
            return ResBlock(ch_in, emb_dim, dropout, ch_out, use_scale_shift_norm)

        def encoder() -> tuple[nn.ModuleList, list[int]]:
            conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
            blocks = nn.ModuleList([TimestepEmbedSequential(conv_in)])
            chans, ch, ds = [model_channels], model_channels, 1
            for level, mult in enumerate(channel_mult):
                for _ in range(num_res_blocks):
                    layers: list[nn.Module] = [res(ch, mult * model_channels)]
                    ch = mult * model_channels
                    if ds in attention_resolutions:
                        layers.append(AttentionBlock(ch, num_heads))
                    blocks.append(TimestepEmbedSequential(*layers))
                    chans.append(ch)
                if level != len(channel_mult) - 1:
                    blocks.append(TimestepEmbedSequential(Downsample(ch)))
                    chans.append(ch)
                    ds *= 2
            return blocks, chans

        self.input_blocks, chans = encoder()
        ch, ds = chans[-1], self.downsample_factor
        self.middle_block = TimestepEmbedSequential(res(ch, ch), AttentionBlock(ch, num_heads), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        skips = list(chans)
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)
        self.input_blocks_cond, _ = encoder()
        self.input_blocks_proj_cond = nn.ModuleList(nn.Conv2d(c, c, 1) for c in chans)
        for proj in self.input_blocks_proj_cond:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, x_cond: torch.Tensor | None = None,
                y: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, C, R, R]`` noisy layer, ``timesteps [B]`` int64 (0..T-1), ``x_cond [B, C, R, R]`` previous
        layer (None: zeros), ``y [B]`` int64 layer id -> eps ``[B, C_out, R, R]``."""
        emb = self.embed(timesteps, y)
        return self.decode(self.encode(x, emb), self.encode_control(x, x_cond, emb), emb)

    def embed(self, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Timestep (plus layer-class) embedding: ``timesteps [B]``, ``y [B]`` -> ``[B, 4 * model_channels]``."""
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.num_classes is not None:
            if y is None:
                raise HumanLiffError("this UNet is class-conditional: pass the layer id y")
            emb = emb + self.label_emb(y)
        return emb

    def encode_control(self, x: torch.Tensor, x_cond: torch.Tensor | None, emb: torch.Tensor) -> list[torch.Tensor]:
        """The control branch on ``x + x_cond``: one projected tensor per encoder block (the decoder's skips)."""
        h = x if x_cond is None else x + x_cond.to(x.dtype)
        hs = []
        for block, proj in zip(self.input_blocks_cond, self.input_blocks_proj_cond, strict=True):
            h = proj(block(h, emb))
            hs.append(h)
        return hs

    def encode(self, x: torch.Tensor, emb: torch.Tensor) -> list[torch.Tensor]:
        """The main encoder: the output of every input block, ``[B, C_i, R_i, R_i]`` from full size down."""
        hs = []
        for block in self.input_blocks:
            x = block(x, emb)
            hs.append(x)
        return hs

    def decode(self, hs: list[torch.Tensor], hs_cond: list[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """Middle block and decoder over the encoder's tensors ``hs`` plus the control branch's ``hs_cond``.

        ``encode`` and ``encode_control`` are independent given ``emb``, so they can run concurrently.
        """
        h = self.middle_block(hs[-1], emb)
        for block, skip, control in zip(self.output_blocks, reversed(hs), reversed(hs_cond), strict=True):
            h = block(torch.cat([h, skip + control], dim=1), emb)
        return self.out(h)


def build_unet(unet_cfg: UNetConfig, resolution: int, channels: int = 27) -> UNet:
    """The UNet of a config for ``[B, channels, resolution, resolution]`` tri-planes (checks the sizes)."""
    factor = 2 ** (len(unet_cfg.channel_mult) - 1)
    if resolution % factor:
        raise HumanLiffError(f"tri-plane resolution {resolution} is not divisible by the UNet's downsampling "
                             f"factor {factor} (unet.channel_mult has {len(unet_cfg.channel_mult)} levels)")
    widths = {unet_cfg.model_channels * m for m in unet_cfg.channel_mult}
    if any(w % 32 for w in widths):
        raise HumanLiffError(f"unet.model_channels * channel_mult must be multiples of 32 (GroupNorm), "
                             f"got {sorted(widths)}")
    return UNet(in_channels=channels, model_channels=unet_cfg.model_channels, out_channels=channels,
                num_res_blocks=unet_cfg.num_res_blocks,
                attention_resolutions=tuple(unet_cfg.attention_resolutions),
                channel_mult=tuple(unet_cfg.channel_mult), num_classes=unet_cfg.num_classes or None,
                num_heads=unet_cfg.num_heads, use_scale_shift_norm=unet_cfg.use_scale_shift_norm,
                dropout=unet_cfg.dropout)

"""The fused kernels' weight layout: a FusedDecoder's bias-free matrices, padded and stored ``[in, out]``.

``fused_weights`` packs them as bf16 copies (what the kernels read). Trainable weights also keep the source
parameters: ``FusedWeights.source_grads`` maps gradients of the packed matrices (the weight-gradient
backward kernel's output) to gradients of the sources as the packing's own autograd adjoint, so there is no
separate unpacking code to keep in step with the packing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from humanliff.runtime.errors import HumanLiffError
from humanliff.runtime.fused_planes import TAP_CHANNELS
from humanliff.runtime.triplane import CHANNELS, GROUP_CHANNELS, N_GROUPS, N_PLANES

WIDTHS = (16, 32, 64, 128)
ACTIVATIONS = ("softplus", "relu")
MATRICES = ("d_in", "d_hidden", "d_out", "c_geo", "c_view", "c_hidden", "c_out")
"""The packed matrices in kernel-argument order."""


def _pow2_at_least16(n: int) -> int:
    p = 16
    while p < n:
        p *= 2
    return p


@dataclass(frozen=True)
class FusedWeights:
    """The padded bf16 weight matrices of a FusedDecoder-shaped network, stored ``[in, out]``, and for
    trainable weights the ``sources`` they were packed from (density layers, then colour layers).

    Density network (``hidden`` wide, ``density_layers`` hidden layers), colour network
    (``color_hidden`` wide, ``color_layers`` hidden layers):

    * ``d_in [3, 16, hidden]``: first density layer per plane; row ``g*4 + c`` of plane ``p`` is input
      feature ``p*9 + g*3 + c`` (rows with g = 3 or c = 3 are zero), matching a prepared plane's texels.
    * ``d_hidden [max(density_layers - 1, 1), hidden, hidden]`` (zeros when there are none).
    * ``d_out [hidden, out_pad]``: column 0 is sigma_raw, columns 1..geo_features the geometry features.
    * ``c_geo [out_pad, color_hidden]``: colour layer 0 on the density output (row 0, sigma, is zero).
    * ``c_view [view_pad, color_hidden]``: colour layer 0 on the view encoding (3 + 6 view_freqs rows).
    * ``c_hidden [max(color_layers - 1, 1), color_hidden, color_hidden]``.
    * ``c_out [color_hidden, 16]``: columns 0..2 are rgb_raw.
    """

    d_in: torch.Tensor
    d_hidden: torch.Tensor
    d_out: torch.Tensor
    c_geo: torch.Tensor
    c_view: torch.Tensor
    c_hidden: torch.Tensor
    c_out: torch.Tensor
    hidden: int
    density_layers: int
    color_hidden: int
    color_layers: int
    geo_features: int
    view_freqs: int
    activation: str
    sources: tuple[torch.Tensor, ...] = ()

    @property
    def out_pad(self) -> int:
        """Padded width of the density network's output (power of two, >= 16)."""
        return self.d_out.shape[1]

    @property
    def view_pad(self) -> int:
        """Padded width of the view encoding (power of two, >= 16)."""
        return self.c_view.shape[0]

    @property
    def device(self) -> torch.device:
        return self.d_in.device

    @property
    def trainable(self) -> bool:
        """Whether these weights were packed from parameters that get gradients (``sources``)."""
        return bool(self.sources)

    def matrices(self) -> tuple[torch.Tensor, ...]:
        """The 7 packed matrices in ``MATRICES`` order."""
        return tuple(getattr(self, n) for n in MATRICES)

    def source_grads(self, grads: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor | None, ...]:
        """Gradients of ``sources`` from gradients of the packed matrices (``MATRICES`` order, fp32; None for
        a matrix without one): the vector-Jacobian product of the packing. None where no gradient arrives."""
        with torch.enable_grad():
            sources = [s.detach().requires_grad_(True) for s in self.sources]
            n = self.density_layers + 1
            packed = _pack(sources[:n], sources[n:], self.geo_features, self.view_freqs)
            pairs = [(m, g) for m, g in zip(packed, grads, strict=True) if g is not None and m.requires_grad]
            return torch.autograd.grad([m for m, _ in pairs], sources, [g for _, g in pairs], allow_unused=True)

    def to(self, device: torch.device | str) -> FusedWeights:
        """These weights on ``device`` (the ``sources`` of trainable weights stay where they are)."""
        return replace(self, **{n: getattr(self, n).to(device) for n in MATRICES})


def _check_width(width: int, what: str) -> None:
    if width not in WIDTHS:
        raise HumanLiffError(f"fused field: {what} width {width} is not one of {WIDTHS}")


def _pack(dl: Sequence[torch.Tensor], cl: Sequence[torch.Tensor], geo: int, view_freqs: int
          ) -> tuple[torch.Tensor, ...]:
    """The 7 fp32 packed matrices (``FusedWeights``'s layout) of checked ``[out, in]`` weights, differentiable."""
    hidden, color_hidden, dev = dl[0].shape[0], cl[0].shape[0], dl[0].device
    n_view = 3 + 6 * view_freqs
    out_pad, view_pad = _pow2_at_least16(geo + 1), _pow2_at_least16(n_view)
    dl, cl = [w.float() for w in dl], [w.float() for w in cl]

    d_in = torch.zeros(N_PLANES, N_GROUPS + 1, TAP_CHANNELS, hidden, device=dev)
    d_in[:, :N_GROUPS, :GROUP_CHANNELS] = dl[0].t().reshape(N_PLANES, N_GROUPS, GROUP_CHANNELS, hidden)
    d_in = d_in.reshape(N_PLANES, (N_GROUPS + 1) * TAP_CHANNELS, hidden)

    def stack(mats: list[torch.Tensor], width: int) -> torch.Tensor:
        return torch.stack([m.t() for m in mats]) if mats else torch.zeros(1, width, width, device=dev)

    d_out = torch.zeros(hidden, out_pad, device=dev)
    d_out[:, : geo + 1] = dl[-1].t()
    c_geo = torch.zeros(out_pad, color_hidden, device=dev)
    c_geo[1 : geo + 1] = cl[0][:, :geo].t()
    c_view = torch.zeros(view_pad, color_hidden, device=dev)
    c_view[:n_view] = cl[0][:, geo:].t()
    c_out = torch.zeros(color_hidden, 16, device=dev)
    c_out[:, :3] = cl[-1].t()
    return d_in, stack(dl[1:-1], hidden), d_out, c_geo, c_view, stack(cl[1:-1], color_hidden), c_out


def fused_weights(density_layers: Sequence[torch.Tensor], color_layers: Sequence[torch.Tensor],
                  activation: str, view_freqs: int, *, trainable: bool = False) -> FusedWeights:
    """Pack a FusedDecoder's bias-free ``Linear.weight`` matrices (``[out, in]``) for the fused kernels.

    Args:
        density_layers: ``[H, 27]``, (L - 1) x ``[H, H]``, ``[1 + geo, H]`` (L >= 1 hidden layers).
        color_layers: ``[C, geo + 3 + 6 view_freqs]``, (L' - 1) x ``[C, C]``, ``[3, C]`` (L' >= 1).
        activation: ``softplus`` (beta 10, as tiny-cuda-nn) or ``relu``.
        view_freqs: frequencies of the view encoding.
        trainable: keep the matrices as ``sources``, so that ``fused_decode`` gives them gradients.

    The packed copies are detached: they are current only until the matrices change.
    """
    if activation not in ACTIVATIONS:
        raise HumanLiffError(f"fused field: activation '{activation}' is not one of {ACTIVATIONS}")
    if len(density_layers) < 2 or len(color_layers) < 2:
        raise HumanLiffError("fused field: both networks need at least one hidden layer")
    dl, cl = [w.detach() for w in density_layers], [w.detach() for w in color_layers]
    hidden, color_hidden = dl[0].shape[0], cl[0].shape[0]
    _check_width(hidden, "density hidden")
    _check_width(color_hidden, "colour hidden")
    geo = dl[-1].shape[0] - 1
    n_view = 3 + 6 * view_freqs
    expected_d = [(hidden, CHANNELS)] + [(hidden, hidden)] * (len(dl) - 2) + [(geo + 1, hidden)]
    expected_c = [(color_hidden, geo + n_view)] + [(color_hidden, color_hidden)] * (len(cl) - 2)
    expected_c += [(3, color_hidden)]
    for name, mats, shapes in (("density", dl, expected_d), ("colour", cl, expected_c)):
        got = [tuple(m.shape) for m in mats]
        if got != shapes:
            raise HumanLiffError(f"fused field: {name} weight shapes {got}, expected {shapes}")
    packed = _pack(dl, cl, geo, view_freqs)
    return FusedWeights(
        **{n: m.to(torch.bfloat16).contiguous() for n, m in zip(MATRICES, packed, strict=True)},
        hidden=hidden, density_layers=len(dl) - 1, color_hidden=color_hidden, color_layers=len(cl) - 1,
        geo_features=geo, view_freqs=view_freqs, activation=activation,
        sources=(*density_layers, *color_layers) if trainable else (),
    )


def decoder_weights(decoder: torch.nn.Module, *, trainable: bool = False) -> FusedWeights:
    """``fused_weights`` of a FusedDecoder with the torch backend (duck-typed: ``density_net.layers``,
    ``color_net.layers``, ``activation``, ``view_freqs``), without importing humanliff.models."""
    try:
        dnet, cnet = decoder.density_net, decoder.color_net
        dense = [layer.weight for layer in dnet.layers]
        color = [layer.weight for layer in cnet.layers]
        activation, freqs = dnet.activation, decoder.view_freqs
    except AttributeError as exc:
        raise HumanLiffError("fused field: the decoder is not a FusedDecoder with the torch backend "
                             f"({exc}); use decode_points") from exc
    if cnet.activation != activation:
        raise HumanLiffError("fused field: the density and colour networks use different activations")
    return fused_weights(dense, color, activation, freqs, trainable=trainable)

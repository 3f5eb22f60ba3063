"""tiny-cuda-nn FullyFusedMLP layout: the torch twin, the tcnn module and weight conversion between them.

A FullyFusedMLP with ``n_hidden_layers = L`` has L + 1 weight matrices and no biases: ``[W, in]``,
(L - 1) x ``[W, W]`` and ``[out, W]``. tcnn stores them in one flat parameter vector, layer after layer,
each row-major, with the input width and the output width padded to multiples of 16 (padding entries
are zero here, so what tcnn feeds into padded inputs does not matter). Widths are 16, 32, 64 or 128.
tcnn's ``Softplus`` is ``log(1 + exp(10 x)) / 10``; the torch twin uses the same.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from humanliff.errors import HumanLiffError

WIDTHS = (16, 32, 64, 128)
"""Hidden widths FullyFusedMLP supports."""
ACTIVATIONS = {"softplus": "Softplus", "relu": "ReLU"}
"""Our activation names and tcnn's."""
SOFTPLUS_BETA = 10.0
"""tcnn's ``K_ACT``: its softplus is softplus(x) with beta 10."""
TCNN_KEY = "net.params"
"""State-dict key (under the MLP's prefix) of tcnn's flat parameter vector."""
_ALIGN = 16


def _pad16(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def matrix_shapes(n_in: int, n_out: int, width: int, hidden_layers: int) -> list[tuple[int, int]]:
    """The ``(rows, cols)`` of each padded weight matrix in tcnn's flat parameter vector."""
    return [(width, _pad16(n_in))] + [(width, width)] * (hidden_layers - 1) + [(_pad16(n_out), width)]


def param_count(n_in: int, n_out: int, width: int, hidden_layers: int) -> int:
    """Length of tcnn's flat parameter vector for this network."""
    return sum(r * c for r, c in matrix_shapes(n_in, n_out, width, hidden_layers))


def check_mlp(width: int, hidden_layers: int, activation: str) -> None:
    """Raise ``HumanLiffError`` when the network cannot be a FullyFusedMLP."""
    if width not in WIDTHS:
        raise HumanLiffError(f"decoder width {width} is not one of {WIDTHS} (tiny-cuda-nn FullyFusedMLP)")
    if hidden_layers < 1:
        raise HumanLiffError(f"decoder needs at least one hidden layer, got {hidden_layers}")
    if activation not in ACTIVATIONS:
        raise HumanLiffError(f"decoder activation '{activation}' is not one of {sorted(ACTIVATIONS)}")


def weights_to_params(weights: list[torch.Tensor], n_in: int, n_out: int) -> torch.Tensor:
    """Unpadded ``[out, in]`` matrices (torch ``Linear.weight``) to tcnn's flat fp32 vector."""
    width = weights[0].shape[0]
    chunks = []
    for w, (rows, cols) in zip(weights, matrix_shapes(n_in, n_out, width, len(weights) - 1), strict=True):
        padded = w.new_zeros(rows, cols, dtype=torch.float32)
        padded[: w.shape[0], : w.shape[1]] = w.float()
        chunks.append(padded.reshape(-1))
    return torch.cat(chunks)


def params_to_weights(
    params: torch.Tensor, n_in: int, n_out: int, width: int, hidden_layers: int
) -> list[torch.Tensor]:
    """tcnn's flat vector to unpadded fp32 ``[out, in]`` matrices (the padding is dropped)."""
    shapes = matrix_shapes(n_in, n_out, width, hidden_layers)
    expected = sum(r * c for r, c in shapes)
    if params.numel() != expected:
        raise HumanLiffError(f"tcnn params have {params.numel()} entries, expected {expected} "
                             "for this decoder")
    weights, offset = [], 0
    last = len(shapes) - 1
    for i, (rows, cols) in enumerate(shapes):
        mat = params[offset : offset + rows * cols].float().reshape(rows, cols)
        offset += rows * cols
        out_rows = n_out if i == last else rows
        in_cols = n_in if i == 0 else cols
        weights.append(mat[:out_rows, :in_cols].clone())
    return weights


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """tcnn's hidden activation in torch."""
    return F.softplus(x, beta=SOFTPLUS_BETA) if activation == "softplus" else F.relu(x)


class _FusedMLPBase(nn.Module):
    """Shared dims, state-dict conversion hook and repr of the two backends."""

    def __init__(self, n_in: int, n_out: int, width: int, hidden_layers: int, activation: str) -> None:
        super().__init__()
        check_mlp(width, hidden_layers, activation)
        self.n_in, self.n_out = n_in, n_out
        self.width, self.hidden_layers, self.activation = width, hidden_layers, activation
        # each backend's hook rewrites the other backend's keys, so the two load each other's weights
        self.register_load_state_dict_pre_hook(type(self)._convert_foreign_keys)

    def _layer_keys(self, prefix: str) -> list[str]:
        return [f"{prefix}layers.{i}.weight" for i in range(self.hidden_layers + 1)]

    def extra_repr(self) -> str:
        return (f"n_input_dims={self.n_in}, n_output_dims={self.n_out}, n_neurons={self.width}, "
                f"n_hidden_layers={self.hidden_layers}, activation={self.activation}")


class TorchFusedMLP(_FusedMLPBase):
    """FullyFusedMLP in plain torch (bias-free ``Linear`` layers): ``[N, n_in] -> [N, n_out]``."""

    def __init__(self, n_in: int, n_out: int, width: int, hidden_layers: int, activation: str) -> None:
        super().__init__(n_in, n_out, width, hidden_layers, activation)
        dims = [n_in] + [width] * hidden_layers + [n_out]
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = activate(layer(x), self.activation)
        return self.layers[-1](x)

    def _convert_foreign_keys(self, state: dict[str, Any], prefix: str, *args: Any) -> None:
        if prefix + TCNN_KEY in state:
            weights = params_to_weights(state.pop(prefix + TCNN_KEY), self.n_in, self.n_out, self.width,
                                        self.hidden_layers)
            state.update(zip(self._layer_keys(prefix), weights, strict=True))

    def tcnn_params(self) -> torch.Tensor:
        """These weights as tcnn's flat fp32 parameter vector."""
        return weights_to_params([layer.weight.detach() for layer in self.layers], self.n_in, self.n_out)


def import_tinycudann() -> Any:
    """Import ``tinycudann`` or raise one clear ``HumanLiffError``."""
    try:
        import tinycudann
    except (ImportError, OSError) as exc:  # it raises OSError (EnvironmentError) without CUDA
        raise HumanLiffError(
            "decoder.backend=tcnn needs the tinycudann package (built from NVlabs/tiny-cuda-nn "
            f"bindings/torch, CUDA only): {exc}; use --set decoder.backend=torch"
        ) from exc
    return tinycudann


class TcnnFusedMLP(_FusedMLPBase):
    """The same network run by ``tinycudann.Network`` (CUDA only): ``[N, n_in] -> [N, n_out]`` fp32."""

    def __init__(self, n_in: int, n_out: int, width: int, hidden_layers: int, activation: str) -> None:
        super().__init__(n_in, n_out, width, hidden_layers, activation)
        tcnn = import_tinycudann()
        self.net = tcnn.Network(n_in, n_out, {
            "otype": "FullyFusedMLP",
            "activation": ACTIVATIONS[activation],
            "output_activation": "None",
            "n_neurons": width,
            "n_hidden_layers": hidden_layers,
        })

    def _convert_foreign_keys(self, state: dict[str, Any], prefix: str, *args: Any) -> None:
        keys = self._layer_keys(prefix)
        if all(k in state for k in keys):
            state[prefix + TCNN_KEY] = weights_to_params([state.pop(k) for k in keys], self.n_in, self.n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).float()

    def tcnn_params(self) -> torch.Tensor:
        """The flat parameter vector, fp32."""
        return self.net.params.detach().float()

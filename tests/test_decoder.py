"""Decoders: the seed decoder against the original (tests/data/seed_decoder.pt), the fused decoder's
tiny-cuda-nn parameter layout and the weight conversion between its torch and tcnn backends."""

import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from humanliff.config import DecoderConfig
from humanliff.errors import HumanLiffError
from humanliff.models import tcnn_backend
from humanliff.models.decoder import FusedDecoder, SeedDecoder, build_decoder, view_encoding
from humanliff.models.tcnn_backend import matrix_shapes, param_count, params_to_weights, weights_to_params

DATA = Path(__file__).parent / "data" / "seed_decoder.pt"


def tcnn_emulated_forward(params: torch.Tensor, x: torch.Tensor, n_out: int, width: int, hidden_layers: int,
                          activation: str) -> torch.Tensor:
    """FullyFusedMLP from its flat parameter vector: padded row-major matrices, input padded with ones."""
    shapes = matrix_shapes(x.shape[1], n_out, width, hidden_layers)
    h = torch.cat([x, x.new_ones(x.shape[0], shapes[0][1] - x.shape[1])], dim=1)
    offset = 0
    for i, (rows, cols) in enumerate(shapes):
        w = params[offset:offset + rows * cols].float().reshape(rows, cols)
        offset += rows * cols
        h = h @ w.T
        if i < len(shapes) - 1:
            h = tcnn_backend.activate(h, activation)
    return h[:, :n_out]


class FakeTcnnNetwork(nn.Module):
    """Stands in for ``tinycudann.Network`` on the CPU: fp16 flat params, the emulated forward."""

    def __init__(self, n_input_dims: int, n_output_dims: int, network_config: dict) -> None:
        super().__init__()
        self.n_out, self.config = n_output_dims, network_config
        count = param_count(n_input_dims, n_output_dims, network_config["n_neurons"],
                            network_config["n_hidden_layers"])
        self.params = nn.Parameter(torch.randn(count).half())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = {v: k for k, v in tcnn_backend.ACTIVATIONS.items()}[self.config["activation"]]
        return tcnn_emulated_forward(self.params, x, self.n_out, self.config["n_neurons"],
                                     self.config["n_hidden_layers"], act).half()


@pytest.fixture
def fake_tcnn(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinycudann", types.SimpleNamespace(Network=FakeTcnnNetwork))


def test_seed_decoder_matches_original():
    ref = torch.load(DATA, weights_only=True)
    dec = SeedDecoder()
    dec.load_state_dict(ref["state_dict"], strict=True)
    with torch.no_grad():
        rgb, sigma = dec(ref["features"], ref["viewdirs"])
        sigma_only = dec(ref["features"], None)
    torch.testing.assert_close(rgb, ref["rgb_raw"], rtol=1e-5, atol=5e-5)
    torch.testing.assert_close(sigma, ref["alpha_raw"], rtol=1e-5, atol=5e-5)
    torch.testing.assert_close(sigma_only, sigma)
    torch.testing.assert_close(dec.density(ref["features"]), sigma)
    assert sum(p.numel() for p in dec.parameters()) == 66_884


def test_view_encoding_layout():
    d = torch.tensor([[0.0, 0.0, 2.0]])
    enc = view_encoding(d, 2)
    assert enc.shape == (1, 15)
    torch.testing.assert_close(enc[0, :3], torch.tensor([0.0, 0.0, 1.0]))
    unit = torch.tensor([0.0, 0.0, 1.0])
    expect = torch.cat([unit, unit.sin(), unit.cos(), (2 * unit).sin(), (2 * unit).cos()])
    torch.testing.assert_close(enc[0], expect)


def test_fused_decoder_shapes_and_param_count():
    dec = FusedDecoder(hidden=32, density_layers=2, geo_features=15, color_hidden=16, color_layers=1)
    feats, dirs = torch.randn(10, 27), torch.randn(10, 3)
    rgb, sigma = dec(feats, dirs)
    assert rgb.shape == (10, 3) and sigma.shape == (10, 1)
    torch.testing.assert_close(dec(feats, None), sigma)
    torch.testing.assert_close(dec.density(feats), sigma)
    # bias-free: 27*32 + 32*32 + 32*16 and 42*16 + 16*3
    assert sum(p.numel() for p in dec.parameters()) == 27 * 32 + 32 * 32 + 32 * 16 + 42 * 16 + 16 * 3
    assert not any(n.endswith("bias") for n, _ in dec.named_parameters())


def test_tcnn_layout_sizes_and_round_trip():
    assert matrix_shapes(27, 16, 64, 2) == [(64, 32), (64, 64), (16, 64)]
    assert param_count(42, 3, 16, 1) == 16 * 48 + 16 * 16
    weights = [torch.randn(64, 27), torch.randn(64, 64), torch.randn(16, 64)]
    params = weights_to_params(weights, 27, 16)
    assert params.shape == (param_count(27, 16, 64, 2),)
    back = params_to_weights(params, 27, 16, 64, 2)
    for a, b in zip(weights, back, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(HumanLiffError, match="expected"):
        params_to_weights(params[:-1], 27, 16, 64, 2)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_torch_backend_equals_tcnn_layout_emulation(activation):
    dec = FusedDecoder(hidden=16, density_layers=3, geo_features=7, color_hidden=32, color_layers=2,
                       activation=activation)
    x = torch.randn(50, 27)
    with torch.no_grad():
        expect = dec.density_net(x)
        got = tcnn_emulated_forward(dec.density_net.tcnn_params(), x, 8, 16, 3, activation)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)


def test_tcnn_state_dict_loads_into_torch_backend():
    src = FusedDecoder(hidden=16, geo_features=7, color_hidden=16)
    tcnn_state = {"density_net.net.params": src.density_net.tcnn_params().half(),
                  "color_net.net.params": src.color_net.tcnn_params().half()}
    dst = FusedDecoder(hidden=16, geo_features=7, color_hidden=16)
    dst.load_state_dict(tcnn_state, strict=True)
    feats, dirs = torch.randn(20, 27), torch.randn(20, 3)
    with torch.no_grad():
        for a, b in zip(src(feats, dirs), dst(feats, dirs), strict=True):
            torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)  # fp16 storage


def test_weights_convert_both_ways_through_tcnn_backend(fake_tcnn):
    torch_dec = FusedDecoder(hidden=32, geo_features=7, color_hidden=16)
    tcnn_dec = FusedDecoder(hidden=32, geo_features=7, color_hidden=16, backend="tcnn")
    assert set(tcnn_dec.state_dict()) == {"density_net.net.params", "color_net.net.params"}
    tcnn_dec.load_state_dict(torch_dec.state_dict(), strict=True)
    feats, dirs = torch.randn(20, 27), torch.randn(20, 3)
    with torch.no_grad():
        for a, b in zip(torch_dec(feats, dirs), tcnn_dec(feats, dirs), strict=True):
            torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)
    back = FusedDecoder(hidden=32, geo_features=7, color_hidden=16)
    back.load_state_dict(tcnn_dec.state_dict(), strict=True)
    for name, w in back.state_dict().items():
        torch.testing.assert_close(w, torch_dec.state_dict()[name].half().float())


def test_tcnn_backend_without_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinycudann", None)  # import raises ImportError
    with pytest.raises(HumanLiffError, match="tinycudann"):
        FusedDecoder(backend="tcnn")


def test_build_decoder_and_bad_settings():
    assert isinstance(build_decoder(DecoderConfig(kind="seed")), SeedDecoder)
    dec = build_decoder(DecoderConfig(kind="fused", hidden=16, geo_features=7, color_hidden=16))
    assert isinstance(dec, FusedDecoder) and dec.density_net.width == 16
    with pytest.raises(HumanLiffError, match="decoder.kind"):
        build_decoder(DecoderConfig(kind="nope"))
    with pytest.raises(HumanLiffError, match="width 48"):
        FusedDecoder(hidden=48)
    with pytest.raises(HumanLiffError, match="activation"):
        FusedDecoder(activation="tanh")
    with pytest.raises(HumanLiffError, match="backend"):
        FusedDecoder(backend="jax")

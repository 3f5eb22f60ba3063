"""The UNet against the original: state-dict keys, golden output, compile-friendliness, checkpoint loading."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from humanliff.config import Config, UNetConfig, load_config
from humanliff.ema_file import write_ema
from humanliff.errors import HumanLiffError, InputFileError
from humanliff.models.checkpoint import load_ema, load_unet
from humanliff.models.inference import inference_unet
from humanliff.models.unet import UNet, build_unet

DATA = Path(__file__).parent / "data"
GOLDEN = torch.load(DATA / "unet_tiny.pt", weights_only=False)
GOLDEN_STATE = {k: v.float() for k, v in GOLDEN["state_dict_fp16_exact"].items()}


def _golden_unet() -> UNet:
    kwargs = {k: v for k, v in GOLDEN["config"].items() if k != "cond_type"}
    unet = UNet(**kwargs)
    unet.load_state_dict(GOLDEN_STATE, strict=True)
    return unet.eval()


def _golden_config() -> Config:
    c = GOLDEN["config"]
    return Config().with_overrides([
        f"unet.model_channels={c['model_channels']}", f"unet.num_res_blocks={c['num_res_blocks']}",
        f"unet.attention_resolutions={list(c['attention_resolutions'])}",
        f"unet.channel_mult={list(c['channel_mult'])}", f"unet.num_heads={c['num_heads']}",
        "triplane.resolution=16"])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b).abs().max() / b.abs().max())


def _run(unet: UNet, memory_format=torch.contiguous_format) -> torch.Tensor:
    x, x_cond = (GOLDEN[k].contiguous(memory_format=memory_format) for k in ("x", "x_cond"))
    with torch.no_grad():
        return unet(x, GOLDEN["timesteps"], x_cond, GOLDEN["y"])


def test_golden_output_fp32():
    assert _rel(_run(_golden_unet()), GOLDEN["out"]) < 1e-5


def test_golden_output_channels_last():
    unet = _golden_unet().to(memory_format=torch.channels_last)
    assert _rel(_run(unet, torch.channels_last), GOLDEN["out"]) < 1e-5


def test_original_state_dict_keys_and_parameter_count():
    lines = (DATA / "unet_synbody_keys.txt").read_text().splitlines()
    expected = [(k, ast.literal_eval(shape)) for k, shape in (line.split(" ", 1) for line in lines[1:])
                if not k.startswith("#")]
    with torch.device("meta"):
        unet = build_unet(UNetConfig(), 256)
    assert [(k, tuple(v.shape)) for k, v in unet.state_dict().items()] == expected
    assert sum(p.numel() for p in unet.parameters()) == 497_173_083


def test_zero_initialized_output_and_control_convs():
    unet = build_unet(load_config("tiny").unet, 16)
    for module in [unet.out[2], *unet.input_blocks_proj_cond]:
        assert not module.weight.any() and not module.bias.any()
    x = torch.randn(2, 27, 16, 16)
    out = unet(x, torch.tensor([1, 500]), x, torch.tensor([0, 3]))
    assert out.shape == (2, 27, 16, 16) and not out.any()


def test_condition_reaches_the_output():
    unet = _golden_unet()
    base = _run(unet)
    with torch.no_grad():
        none = unet(GOLDEN["x"], GOLDEN["timesteps"], None, GOLDEN["y"])
        zeros = unet(GOLDEN["x"], GOLDEN["timesteps"], torch.zeros_like(GOLDEN["x"]), GOLDEN["y"])
    assert torch.equal(none, zeros) and not torch.allclose(none, base)
    with pytest.raises(HumanLiffError, match="pass the layer id y"):
        unet(GOLDEN["x"], GOLDEN["timesteps"])


def test_no_graph_breaks_under_compile():
    unet = build_unet(load_config("tiny").unet, 16).to(memory_format=torch.channels_last)
    x = torch.randn(2, 27, 16, 16).contiguous(memory_format=torch.channels_last)
    explanation = torch._dynamo.explain(unet)(x, torch.tensor([3, 500]), x, torch.tensor([0, 2]))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_bf16_autocast_keeps_groupnorm_in_fp32():
    unet = _golden_unet()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = _run(unet)
        norm = unet.input_blocks[1][0].in_layers[0]
        h = torch.randn(2, 32, 8, 8).to(torch.bfloat16) * 100 + 1000
        normed = norm(h)
    assert out.dtype == torch.bfloat16 and _rel(out, GOLDEN["out"]) < 0.05
    reference = torch.nn.functional.group_norm(h.float(), 32, norm.weight, norm.bias, norm.eps)
    assert normed.dtype == torch.bfloat16 and (normed.float() - reference).abs().max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_channels_last_matches_fp32():
    unet = _golden_unet().cuda().to(memory_format=torch.channels_last)
    x, x_cond = (GOLDEN[k].cuda().contiguous(memory_format=torch.channels_last) for k in ("x", "x_cond"))
    t, y = GOLDEN["timesteps"].cuda(), GOLDEN["y"].cuda()
    with torch.no_grad():
        fp32 = unet(x, t, x_cond, y)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = unet(x, t, x_cond, y)
    assert _rel(fp32.cpu(), GOLDEN["out"]) < 1e-3  # TF32 may be on
    assert _rel(bf16.float().cpu(), GOLDEN["out"]) < 0.05



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_two_stream_graphs_match_eager_and_refill_inputs():
    unet = _golden_unet().cuda()
    fn = inference_unet(_golden_unet().cuda(), precision="bf16", compile=True)
    x, x_cond, t, y = (GOLDEN[k].cuda() for k in ("x", "x_cond", "timesteps", "y"))
    for scale in (1.0, -0.5):  # a second call replays the graph on new inputs
        with torch.no_grad():
            ref = unet(scale * x, t, x_cond, y)
        assert _rel(fn(scale * x, t, x_cond, y).cpu(), ref.cpu()) < 0.05
    with torch.no_grad():
        ref = unet(x[:1], t[:1], x_cond[:1], y[:1])
    assert _rel(fn(x[:1], t[:1], x_cond[:1], y[:1]).cpu(), ref.cpu()) < 0.05  # another shape, another graph

def test_build_unet_checks_sizes():
    with pytest.raises(HumanLiffError, match="resolution 20 is not divisible by the UNet.s downsampling"):
        build_unet(UNetConfig(), 20)
    with pytest.raises(HumanLiffError, match="multiples of 32"):
        build_unet(UNetConfig(model_channels=48, channel_mult=(1, 2)), 16)


def test_load_original_state_dict(tmp_path):
    path = tmp_path / "ema_0.9999_000100.pt"
    torch.save(GOLDEN_STATE, path)
    unet, cfg = load_unet(path, _golden_config())
    assert cfg.unet.model_channels == 32 and not unet.training
    assert _rel(_run(unet), GOLDEN["out"]) < 1e-5
    with pytest.raises(InputFileError, match="not a humanliff ema.pt.*load_unet"):
        load_ema(path)


def test_load_ema_round_trip(tmp_path):
    cfg = _golden_config()
    write_ema(tmp_path / "ema.pt", GOLDEN_STATE, cfg.to_dict(), {"subjects": ["a"]})
    unet, loaded = load_ema(tmp_path)
    assert loaded == cfg and _rel(_run(unet), GOLDEN["out"]) < 1e-5


def test_bad_checkpoints_name_the_keys(tmp_path):
    cfg = _golden_config()
    broken = dict(GOLDEN_STATE)
    del broken["out.2.bias"]
    broken["extra.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "a.pt")
    with pytest.raises(InputFileError, match=r"a.pt: .*missing keys: out.2.bias; unexpected keys: extra.w"):
        load_unet(tmp_path / "a.pt", cfg)
    torch.save(GOLDEN_STATE, tmp_path / "b.pt")
    with pytest.raises(InputFileError, match=r"time_embed.0.weight \[128, 32\] \(model: \[256, 64\]"):
        load_unet(tmp_path / "b.pt", cfg.with_overrides(["unet.model_channels=64"]))
    (tmp_path / "c.pt").write_bytes(b"garbage")
    with pytest.raises(InputFileError, match="c.pt: not a readable torch checkpoint"):
        load_unet(tmp_path / "c.pt")
    with pytest.raises(InputFileError, match="missing.pt: no such file"):
        load_ema(tmp_path / "missing.pt")

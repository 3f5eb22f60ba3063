"""Reconstruction metrics, held-out evaluation, tri-plane renders and their CLI commands."""

from __future__ import annotations

import json

import imageio.v3 as imageio
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from humanliff.cli import app
from humanliff.config import load_config
from humanliff.data.loader import load_dataset
from humanliff.data.synth import synthesize_dataset
from humanliff.errors import HumanLiffError
from humanliff.evaluation import metrics
from humanliff.evaluation.metrics import Lpips, crop_box, psnr, ssim
from humanliff.evaluation.recon import evaluate_recon, read_camera_file, render_triplane
from humanliff.io import atomic_path
from humanliff.models.decoder import build_decoder
from humanliff.store import create_store, parse_triplane_ref


def test_psnr_on_region():
    gt = np.zeros((8, 8, 3))
    pred = gt + 0.1
    pred[:2] = 1.0  # outside the region: ignored
    region = np.zeros((8, 8), bool)
    region[2:] = True
    assert psnr(pred, gt, region) == pytest.approx(20.0)
    assert psnr(gt, gt) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="region is empty"):
        psnr(pred, gt, np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"must both be \[H, W, 3\]"):
        psnr(pred[..., 0], gt[..., 0])


def test_ssim_on_region_crop():
    rng = np.random.default_rng(0)
    gt = rng.random((16, 16, 3))
    region = np.zeros((16, 16), bool)
    region[3:12, 4:10] = True
    assert crop_box(region) == (slice(3, 12), slice(4, 10))
    assert ssim(gt, gt, region) == pytest.approx(1.0)
    noisy = np.clip(gt + rng.normal(0, 0.2, gt.shape), 0, 1)
    value = ssim(noisy, gt, region)
    assert 0.0 < value < 0.9
    outside = gt.copy()
    outside[:3] = 0.0  # changes outside the crop do not count
    assert ssim(outside, gt, region) == pytest.approx(1.0)


def test_lpips_is_skipped_without_the_package(monkeypatch):
    monkeypatch.setattr(metrics.importlib.util, "find_spec", lambda name: None)
    assert Lpips.load() is None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny dataset and a store over it with random planes and decoder."""
    base = tmp_path_factory.mktemp("eval")
    root = synthesize_dataset(base / "data", subjects=2, views=8, resolution=32, seed=0, workers=1)
    cfg = load_config("tiny", [f"data.root={root}"])
    subjects = load_dataset(cfg.data)
    torch.manual_seed(0)
    decoder = build_decoder(cfg.decoder)
    with atomic_path(base / "store") as tmp:
        store = create_store(tmp, [s.name for s in subjects], np.stack([s.bounds for s in subjects]), 16, 27,
                             decoder.state_dict(), {"kind": "fused", "hidden": 16, "geo_features": 7,
                                                    "color_hidden": 16}, cfg.to_dict())
        store.planes[:] = np.random.default_rng(0).uniform(-1, 1, store.planes.shape)
        store.planes.flush()
    return cfg, base / "store", root


def test_evaluate_recon(tiny, tmp_path):
    cfg, store, _ = tiny
    result = evaluate_recon(cfg, store, tmp_path, device=torch.device("cpu"))
    assert set(result["layers"]) == {"0", "1", "2", "3"} and result["views"] == 2  # views 0 and 4 of 8
    for values in result["layers"].values():
        assert set(values) == {"psnr", "ssim"} and 0 < values["psnr"] < 40 and -1 <= values["ssim"] <= 1
    assert set(result["subjects"]) == {"seq_000000", "seq_000001"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == result
    picture = imageio.imread(tmp_path / "side_by_side.png")
    assert picture.shape[0] > 4 * 32 and picture.shape[1] > 2 * 32
    with pytest.raises(HumanLiffError, match="no subjects to evaluate"):
        evaluate_recon(cfg, store, tmp_path, subjects=["nobody"], device=torch.device("cpu"))
    no_holdout = load_config("tiny", [f"data.root={cfg.data.root}", "data.holdout_every=0"])
    with pytest.raises(HumanLiffError, match="no held-out views"):
        evaluate_recon(no_holdout, store, tmp_path, device=torch.device("cpu"))


def test_render_triplane(tiny, tmp_path):
    cfg, store, root = tiny
    gif = render_triplane(cfg, f"{store}:seq_000001:2", tmp_path / "t.gif", views=3, size=20,
                          device=torch.device("cpu"))
    assert imageio.imread(gif, index=None).shape == (3, 20, 20, 3)
    cameras = read_camera_file(root / "seq_000000" / "cameras.json", "0,5")
    assert cameras[0].shape == (2, 3, 3) and cameras[2].shape == (2, 3)
    png = render_triplane(cfg, f"{store}:0:0", tmp_path / "v.png", cameras=cameras, size=32,
                          device=torch.device("cpu"))
    assert imageio.imread(png).shape == (32, 64, 3)  # two views tiled in a 2-column grid, one row
    with pytest.raises(HumanLiffError, match="is not of the form STORE:SUBJECT:LAYER"):
        parse_triplane_ref("store:seq")
    with pytest.raises(HumanLiffError, match="not comma-separated integers"):
        read_camera_file(root / "seq_000000" / "cameras.json", "a,b")


def test_eval_and_render_cli(tiny, tmp_path):
    cfg, store, root = tiny
    runner = CliRunner()
    common = ["--config", "tiny", "--set", f"data.root={root}"]
    result = runner.invoke(app, ["eval", "recon", *common, "--store", str(store), "--out",
                                 str(tmp_path / "e"), "--max-views", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "layer 3: psnr" in result.output and (tmp_path / "e" / "metrics.json").is_file()
    result = runner.invoke(app, ["render", *common, f"{store}:seq_000000:1", "--out", str(tmp_path / "r.png"),
                                 "--views", "2", "--size", "16", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert imageio.imread(tmp_path / "r.png").shape == (16, 32, 3)
    result = runner.invoke(app, ["render", *common, f"{store}:nobody:1", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "no subject 'nobody'" in result.output

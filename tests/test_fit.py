"""Tri-plane fitting: sparse Adam, losses, schedules, stage A and B on tiny synthetic data."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from humanliff.cli import app
from humanliff.config import FitConfig, load_config
from humanliff.data.loader import load_dataset
from humanliff.data.raysampler import RayBatch
from humanliff.data.synth import synthesize_dataset
from humanliff.errors import InputFileError
from humanliff.models.decoder import build_decoder
from humanliff.store import open_store
from humanliff.training.fit_a import fit_stage_a
from humanliff.training.fit_b import StageBFitter, fit_stage_b
from humanliff.training.fit_losses import plane_losses, total_variation
from humanliff.training.fit_step import draw_rays, plane_targets
from humanliff.training.schedules import decoder_lr_a, planes_lr_a, planes_lr_b
from humanliff.training.sparse_adam import RowAdam


def test_row_adam_matches_torch_adam_on_touched_rows():
    torch.manual_seed(0)
    table = torch.randn(5, 3, 4, 4) * 0.1
    rows = torch.tensor([3, 1])
    reference = table[rows].clone().requires_grad_(True)
    adam = torch.optim.Adam([reference], lr=0.05)
    sparse = RowAdam(table.clone(), clamp=0)
    for step in range(4):
        grad = torch.randn(2, 3, 4, 4) * (step + 1)
        reference.grad = grad.clone()
        adam.step()
        sparse.step(rows, grad, 0.05)
    torch.testing.assert_close(sparse.table[rows], reference.detach(), atol=1e-6, rtol=1e-5)
    untouched = torch.tensor([0, 2, 4])
    assert sparse.table[untouched].equal(table[untouched])
    assert sparse.steps.tolist() == [0, 4, 0, 4, 0]


def test_row_adam_per_row_bias_correction_and_clamp():
    table = torch.zeros(3, 2)
    opt = RowAdam(table, clamp=1.0)
    opt.step(torch.tensor([0]), torch.ones(1, 2), 0.5)
    opt.step(torch.tensor([0, 2]), torch.ones(2, 2), 0.5)
    # a first step moves by lr whatever the gradient's scale; the row stepped twice moves twice
    torch.testing.assert_close(table, torch.tensor([[-1.0, -1.0], [0.0, 0.0], [-0.5, -0.5]]))
    opt.step(torch.tensor([0]), torch.ones(1, 2), 0.5)
    assert table[0].tolist() == [-1.0, -1.0]
    state = {k: v.clone() for k, v in opt.state_dict().items()}
    other = RowAdam(table.clone())
    other.load_state_dict(state)
    assert other.steps.tolist() == [3.0, 0.0, 1.0]
    leaf = other.gather(torch.tensor([2, 0]))
    assert leaf.requires_grad and leaf.is_leaf and leaf[1].tolist() == [-1.0, -1.0]


def test_losses_per_plane():
    cfg = FitConfig()
    planes = torch.zeros(2, 27, 4, 4)
    planes[1, :, :, 2:] = 1.0
    assert total_variation(planes).tolist() == [0.0, pytest.approx(1 / 3)]
    rgb = torch.full((2, 10, 3), 0.5)
    target = torch.zeros(2, 10, 3)
    acc = torch.ones(2, 10)
    mask = torch.zeros(2, 10)
    mask[0, :5] = 1
    parts = plane_losses(rgb, acc, target, mask, planes, cfg)
    assert parts["mse"].tolist() == [0.25, 0.25]
    assert parts["acc"].tolist() == [0.5, 1.0]
    assert parts["l1"].tolist() == [0.0, 0.5]
    expected = 0.25 + 0.1 * 1.0 + 1e-2 / 3 + 5e-4 * 0.5
    assert parts["loss"][1].item() == pytest.approx(expected)


def test_schedules():
    cfg = FitConfig()
    assert decoder_lr_a(cfg, 0) == 5e-3 and planes_lr_a(cfg, 0) == 0.1 and planes_lr_b(cfg, 0) == 0.1
    assert decoder_lr_a(cfg, 200000) == pytest.approx(1.077e-3, rel=1e-3)
    assert planes_lr_a(cfg, 200000) == pytest.approx(9.84e-4, rel=1e-2)
    assert planes_lr_b(cfg, 2000) == pytest.approx(6.25e-3)


# --- stages A and B on a tiny synthetic dataset ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "tiny"
    synthesize_dataset(root, subjects=2, views=8, resolution=32, seed=0, workers=1)
    return root


def _cfg(root, *overrides):
    return load_config("tiny", [f"data.root={root}", *overrides])


def test_stage_a_then_b(tiny_data, tmp_path):
    cfg = _cfg(tiny_data)
    store_a = open_store(fit_stage_a(cfg, tmp_path))
    assert store_a.subjects == ["seq_000000", "seq_000001"] and store_a.planes.shape == (2, 4, 27, 16, 16)
    subjects = load_dataset(cfg.data)
    np.testing.assert_array_equal(store_a.bounds, np.stack([s.bounds for s in subjects]))
    planes = np.asarray(store_a.planes, np.float32)
    assert np.abs(planes).max() <= 1.0 and planes.std() > 0.05
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "checkpoint_a" / "state.pt").is_file()
    assert torch.load(tmp_path / "checkpoint_a" / "state.pt", weights_only=True)["step"] == 4

    store_b = open_store(fit_stage_b(cfg, tmp_path / "store_a", tmp_path))
    assert store_b.subjects == store_a.subjects and store_b.planes.shape == store_a.planes.shape
    np.testing.assert_array_equal(store_b.bounds, store_a.bounds)
    for key, value in store_a.decoder_state().items():
        assert store_b.decoder_state()[key].equal(value)
    assert not (tmp_path / "store_b.partial").exists()
    # a finished stage B returns its store at once
    assert fit_stage_b(cfg, tmp_path / "store_a", tmp_path) == tmp_path / "store_b"


def test_stage_b_initialisation(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, "fit.iterations_a=1")
    fit_stage_a(cfg, tmp_path)
    store_a = open_store(tmp_path / "store_a")
    mean0 = np.asarray(store_a.planes[:, 0], np.float32).mean(0)
    cfg_b = _cfg(tiny_data, "fit.iterations_b=0")
    store_b = open_store(fit_stage_b(cfg_b, tmp_path / "store_a", tmp_path / "b"))
    # no steps: layer 0 is the mean stage-A layer-0 plane (not subject 0's), each layer k copies k-1
    for s in range(2):
        for layer in range(4):
            np.testing.assert_allclose(store_b.planes[s, layer], mean0, atol=1e-3)
    assert not np.allclose(mean0, store_a.planes[0, 0], atol=1e-2)


def test_stage_a_resume_matches_straight_run(tiny_data, tmp_path):
    fit_stage_a(_cfg(tiny_data, "fit.iterations_a=4", "fit.checkpoint_every=0"), tmp_path / "straight")
    fit_stage_a(_cfg(tiny_data, "fit.iterations_a=2"), tmp_path / "resumed")
    fit_stage_a(_cfg(tiny_data, "fit.iterations_a=4"), tmp_path / "resumed")
    a, b = (open_store(tmp_path / d / "store_a") for d in ("straight", "resumed"))
    np.testing.assert_allclose(np.asarray(a.planes, np.float32), np.asarray(b.planes, np.float32), atol=2e-3)
    for key, value in a.decoder_state().items():
        torch.testing.assert_close(b.decoder_state()[key], value, atol=1e-5, rtol=1e-4)


def test_stage_b_resumes_mid_layer(tiny_data, tmp_path, monkeypatch):
    fit_stage_a(_cfg(tiny_data), tmp_path)
    cfg = _cfg(tiny_data, "fit.iterations_b=3", "fit.checkpoint_every=1")
    straight = open_store(fit_stage_b(cfg, tmp_path / "store_a", tmp_path / "straight"))
    original = StageBFitter.step
    calls = {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 6:  # layer 1, after its first step was checkpointed
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(StageBFitter, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit_stage_b(cfg, tmp_path / "store_a", tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / "checkpoint_b.pt", weights_only=True)["layer"] == 1
    monkeypatch.setattr(StageBFitter, "step", original)
    resumed = open_store(fit_stage_b(cfg, tmp_path / "store_a", tmp_path / "resumed"))
    np.testing.assert_allclose(np.asarray(resumed.planes, np.float32),
                               np.asarray(straight.planes, np.float32), atol=2e-3)


def test_stage_b_fitter_planes_are_independent(tiny_data):
    cfg = _cfg(tiny_data, "fit.rays_per_image=32", "render.perturb=false", "render.n_importance=0")
    subjects = load_dataset(cfg.data)
    targets = plane_targets(subjects, [3, 3], np.arange(8), torch.device("cpu"), cfg.data)
    decoder = build_decoder(cfg.decoder)
    init = torch.randn(2, 27, 16, 16) * 0.1
    fitter = StageBFitter(cfg, decoder, targets, init)
    rays = draw_rays(targets, fitter.rows, 2, 32, 0.8, torch.Generator().manual_seed(1))
    # the summed loss gives plane 0 exactly the gradient of its own loss: fitting together = fitting alone
    fitter.loss_module(fitter.planes, rays, targets.bounds)["loss"].sum().backward()
    alone = init[:1].clone().requires_grad_(True)
    first = RayBatch(*(x[:1] for x in (rays.origins, rays.dirs, rays.near, rays.far, rays.rgb, rays.fg)))
    fitter.loss_module(alone, first, targets.bounds[:1])["loss"].sum().backward()
    torch.testing.assert_close(fitter.planes.grad[:1], alone.grad, atol=1e-9, rtol=1e-4)
    parts = fitter.step()
    assert set(parts) == {"loss", "mse", "acc", "tv", "l1"} and parts["loss"].shape == (2,)
    assert fitter.step_count == 1 and not fitter.planes.detach().equal(init)
    assert float(fitter.planes.detach().abs().max()) <= 1.0
    assert not any(p.requires_grad for p in decoder.parameters())


def test_empty_mask_is_an_error(tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    mask = root / "seq_000001" / "person-pants" / "mask" / "camera0003" / "0000.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(mask)
    with pytest.raises(InputFileError, match=r"person-pants/mask/camera0003/0000\.png: the mask is empty"):
        fit_stage_a(_cfg(root), tmp_path / "run")


def test_fit_cli(tiny_data, tmp_path):
    runner = CliRunner()
    args = ["--config", "tiny", "--set", f"data.root={tiny_data}", "--out", str(tmp_path)]
    result = runner.invoke(app, ["fit", "--stage", "a", *args])
    assert result.exit_code == 0, result.output
    assert "store_a" in result.output
    result = runner.invoke(app, ["fit", "--stage", "b", *args])
    assert result.exit_code == 0, result.output
    assert open_store(tmp_path / "store_b").subjects == ["seq_000000", "seq_000001"]
    result = runner.invoke(app, ["fit", "--stage", "b", *args[:-2], "--out", str(tmp_path / "x"),
                                 "--store", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "not a tri-plane store" in result.output

"""Issue 14: fail loud on NaN and nonsense (cameras, losses, weights, planes), and name every bad file."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny_models import make_tiny_models

from humanliff.cli import app
from humanliff.config import load_config
from humanliff.data.synth import synthesize_dataset
from humanliff.ema_file import read_ema, write_ema
from humanliff.errors import InputFileError
from humanliff.store import open_store
from humanliff.training.fit_a import StageAFitter
from humanliff.training.train import DiffusionTrainer, train


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    ema, store, _ = make_tiny_models(tmp_path_factory.mktemp("models"))
    return ema, store


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthesize_dataset(tmp_path_factory.mktemp("data") / "ds", subjects=2, views=4, resolution=32, seed=0,
                              workers=1)


def _one_error(result, *parts):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.split("\n") if line.startswith("error: ")]
    assert len(lines) == 1 and all(p in lines[0] for p in parts), result.output
    assert "Traceback" not in result.output


def _fit_args(root, out, *sets):
    items = [f"data.root={root}", "fit.rays_per_image=16", *sets]
    return ["fit", "--stage", "a", "--config", "tiny", *[x for s in items for x in ("--set", s)], "--device", "cpu",
            "--out", str(out)]


@pytest.mark.parametrize("field, value, problem", [
    ("K", [[0, 0, 0], [0, 0, 0], [0, 0, 0]], "K is not invertible"),
    ("T", [0.0, float("nan"), 2.0], "T holds NaN"),
    ("R", [[2, 0, 0], [0, 1, 0], [0, 0, 1]], "R is not a rotation"),
])
def test_bad_cameras_fail_data_check_and_fit(data, tmp_path, field, value, problem):
    root = tmp_path / "ds"
    shutil.copytree(data, root)
    path = root / "seq_000001" / "cameras.json"
    cameras = json.loads(path.read_text())
    cameras["camera0002"][field] = value
    path.write_text(json.dumps(cameras))
    check = CliRunner().invoke(app, ["data", "check", "--config", "tiny", str(root)])
    assert check.exit_code == 1 and f"cameras.json: entry 'camera0002': {problem}" in check.output, check.output
    fit = CliRunner().invoke(app, _fit_args(root, tmp_path / "fit"))
    _one_error(fit, "cameras.json", problem)
    assert not (tmp_path / "fit").exists()  # a failed fit leaves no folder and no config.yaml


def _nan_at(step):
    """A ``train_step`` whose loss turns NaN at optimizer step ``step``."""
    original = DiffusionTrainer.train_step

    def train_step(self, *args, **kwargs):
        loss, grad_norm = original(self, *args, **kwargs)
        return (loss * float("nan") if self.step == step else loss), grad_norm

    return train_step


def test_train_stops_at_the_first_nan_loss_keeping_the_checkpoint(models, tmp_path, monkeypatch):
    _, store = models
    monkeypatch.setattr(DiffusionTrainer, "train_step", _nan_at(2))
    args = ["train", "--config", "tiny", "--set", "train.checkpoint_every=1", "--set", "train.microbatch=0",
            "--store", str(store), "--out", str(tmp_path / "run"), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    _one_error(result, "the loss is not finite", "at step 2", "checkpoint.pt (step 1) is kept")
    assert "train:" in result.output  # the progress bar ran; the error line still starts fresh
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 1


def test_fit_stops_at_the_first_nan_loss(data, tmp_path, monkeypatch):
    original = StageAFitter.step

    def step(self):
        parts = original(self)
        if self.state.step == 3:
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(StageAFitter, "step", step)
    result = CliRunner().invoke(app, _fit_args(data, tmp_path / "fit", "fit.iterations_a=6"))
    _one_error(result, "fit A", "at step 3", "checkpoint_a (step 2) is kept")
    assert not (tmp_path / "fit" / "config.yaml").exists() and not (tmp_path / "fit" / "store_a").exists()
    assert torch.load(tmp_path / "fit" / "checkpoint_a" / "state.pt", weights_only=True)["step"] == 2


def test_non_finite_weights_and_planes_are_refused(models, tmp_path):
    ema, store = models
    blob = read_ema(ema)
    name = next(iter(blob["state_dict"]))
    state = {**blob["state_dict"], name: blob["state_dict"][name].clone().fill_(float("inf"))}
    write_ema(tmp_path / "ema.pt", state, blob["config"], blob["store_manifest"])
    sets = ["--set", "sample.image_size=8", "--set", "sample.turntable_frames=1", "--set", "sample.views=1"]
    base = ["generate", "--config", "tiny", *sets, "--device", "cpu", "--humans", "1", "--steps", "1"]
    result = CliRunner().invoke(app, [*base, "--unet", str(tmp_path / "ema.pt"), "--store", str(store), "--out",
                                      str(tmp_path / "g")])
    _one_error(result, "ema.pt", "the UNet weights hold NaN or infinite values", name)
    assert not (tmp_path / "g").exists()
    nan_store = tmp_path / "store"
    shutil.copytree(store, nan_store)
    planes = np.load(nan_store / "planes.npy", mmap_mode="r+")
    planes[1, 2, 0, 0, 0] = np.nan
    planes.flush()
    del planes
    with pytest.raises(InputFileError, match="planes.npy: the tri-planes hold NaN"):
        train(load_config("tiny"), nan_store, tmp_path / "run")
    with pytest.raises(InputFileError, match="planes.npy: the planes of subject 1 layer 2 hold NaN"):
        open_store(nan_store).layer(1, 2)
    decoder = torch.load(nan_store / "decoder.pt", weights_only=True)
    first = next(iter(decoder["state_dict"]))
    decoder["state_dict"][first] = decoder["state_dict"][first] * float("nan")
    torch.save(decoder, nan_store / "decoder.pt")
    with pytest.raises(InputFileError, match="decoder.pt: the decoder weights hold NaN"):
        open_store(nan_store).load_decoder()


def test_corrupt_checkpoint_a_on_resume_is_named(data, tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, _fit_args(data, tmp_path / "fit")).exit_code == 0
    config = (tmp_path / "fit" / "config.yaml").read_bytes()
    longer = "fit.iterations_a=6"
    cases = {"truncated": ("state.pt", "state.pt: not a readable torch checkpoint"),
             "missing": ("planes.npy", "planes.npy: missing or unreadable")}
    for name, (file, message) in cases.items():
        run = tmp_path / name
        shutil.copytree(tmp_path / "fit", run)
        path = run / "checkpoint_a" / file
        if name == "truncated":
            path.write_bytes(path.read_bytes()[:100])
        else:
            path.unlink()
        _one_error(runner.invoke(app, _fit_args(data, run, longer)), message)
        assert (run / "config.yaml").read_bytes() == config  # the failed resume rewrote nothing
    seed = runner.invoke(app, _fit_args(data, tmp_path / "fit", longer, "fit.seed=5"))
    _one_error(seed, "the run was started with fit.seed=0, the config now says 5", "--resume-anyway")


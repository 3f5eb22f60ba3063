"""Issue 14: output folders that never destroy a user's data, checks before the compute, one-line errors.

The reproductions of the issue are the recipes: ``--out .``, an input given as ``--out``, a foreign
non-empty folder, ``--force``, files, disks and devices, config ranges, bad counts on the command line.
"""

import shutil
from collections import namedtuple

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import make_tiny_models

from humanliff.cli import app
from humanliff.cli.generation_commands import generate_command, run_command
from humanliff.config import load_config
from humanliff.errors import HumanLiffError
from humanliff.io import MARKER, atomic_path, recover_swap, write_marker
from humanliff.run_folder import LOCK_FILE, hold_run_folder

FAST = ["sample.views=1", "sample.turntable_frames=1", "sample.image_size=8", "sample.mesh_resolution=4",
        "render.occupancy_resolution=0"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    ema, store, _ = make_tiny_models(tmp_path_factory.mktemp("models"))
    return ema, store


def _generate(ema, store, out, *extra):
    sets = [x for item in FAST for x in ("--set", item)]
    return CliRunner().invoke(app, ["generate", "--config", "tiny", *sets, "--unet", str(ema), "--store",
                                    str(store), "--out", str(out), "--device", "cpu", "--humans", "1",
                                    "--steps", "1", "--layers", "0-0", *extra])


def _one_error(result, *parts):
    """Exit code 1 and one ``error:`` line that holds every part."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.split("\n") if line.startswith("error: ")]
    assert len(lines) == 1 and all(p in lines[0] for p in parts), result.output
    assert "Traceback" not in result.output


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_dot_and_parent_of_cwd_are_refused(models, tmp_path, monkeypatch):
    ema, store = models
    sandbox = tmp_path / "sb" / "inner"
    sandbox.mkdir(parents=True)
    (sandbox / "important.txt").write_text("keep")
    monkeypatch.chdir(sandbox)
    _one_error(_generate(ema, store, "."), "is the working directory")
    _one_error(_generate(ema, store, ".."), "contains the working directory")
    assert (sandbox / "important.txt").read_text() == "keep"


def test_an_input_as_out_is_refused(models, tmp_path):
    ema, store = models
    before = _tree(store)
    _one_error(_generate(ema, store, store), "is an input of this command")
    _one_error(_generate(ema, store, ema.parent), "contains the input")
    _one_error(_generate(ema, store, store / "inside"), "lies inside the input")
    pack = CliRunner().invoke(app, ["model", "pack", "--unet", str(ema), "--store", str(store), "--out",
                                    str(store)])
    _one_error(pack, "is an input of this command")
    assert _tree(store) == before and ema.is_file()


def test_foreign_folder_is_refused_and_force_replaces_ours(models, tmp_path):
    ema, store = models
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("user data")
    _one_error(_generate(ema, store, foreign, "--force"), "not written by humanliff")
    synth = CliRunner().invoke(app, ["data", "synth", "--config", "tiny", "--out", str(foreign)])
    _one_error(synth, "not written by humanliff")
    assert (foreign / "notes.txt").read_text() == "user data"
    out = tmp_path / "gen"
    assert _generate(ema, store, out).exit_code == 0
    assert (out / MARKER).is_file()
    (out / "stale.txt").write_text("from an older run")
    _one_error(_generate(ema, store, out), "exists (written by humanliff); pass --force")
    assert _generate(ema, store, out, "--force").exit_code == 0
    assert not (out / "stale.txt").exists() and (out / "planes.npz").is_file()
    assert not list(tmp_path.glob(".gen.*"))


def test_generate_and_run_default_to_distinct_folders():
    generate, run = (next(p.default for p in cmd.params if p.name == "out_dir")
                     for cmd in (generate_command, run_command))
    assert generate != run


def test_out_file_unwritable_and_full_disk_fail_before_sampling(models, tmp_path, monkeypatch):
    ema, store = models
    (tmp_path / "file").write_text("x")
    _one_error(_generate(ema, store, tmp_path / "file"), "is an existing file")
    _one_error(_generate(ema, store, tmp_path / "file" / "sub"), "is a file, not a folder")
    monkeypatch.setattr("humanliff.run_folder.os.access", lambda *_: False)
    _one_error(_generate(ema, store, tmp_path / "ro" / "out"), "cannot write in", str(tmp_path))
    monkeypatch.undo()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("humanliff.run_folder.shutil.disk_usage", lambda _: usage(1 << 30, 1 << 30, 1000))
    monkeypatch.setattr("humanliff.pipeline.sample_layers", lambda *a, **k: pytest.fail("sampled"))
    _one_error(_generate(ema, store, tmp_path / "full"), "needs about", "MB free")
    assert not (tmp_path / "full").exists()


def test_device_checks():
    runner = CliRunner()
    _one_error(runner.invoke(app, ["generate", "--device", "foo"]), "--device foo: not a device")
    import torch

    if not torch.cuda.is_available():
        _one_error(runner.invoke(app, ["generate", "--device", "cuda"]), "--device cuda: CUDA is not available")


@pytest.mark.parametrize("item, allowed", [
    ("sample.image_size=0", "at least 8"), ("sample.views=-1", "at least 1"),
    ("sample.turntable_frames=0", "at least 1"), ("sample.mesh_resolution=0", "at least 2"),
    ("render.n_samples=0", "at least 1"), ("train.batch_size=0", "at least 1"), ("train.steps=0", "at least 1"),
    ("train.log_every=0", "at least 1"), ("fit.log_every=0", "at least 1"),
    ("train.checkpoint_every=0", "at least 1"), ("fit.checkpoint_every=-1", "at least 0"),
    ("fit.batch_images=0", "at least 1"), ("fit.rays_per_image=0", "at least 1"),
    ("triplane.resolution=0", "at least 2"), ("sample.precision=fp8", "one of bf16, fp32"),
    ("sample.eta=-0.5", "at least 0"), ("train.lr=-1", "greater than 0"), ("fit.lr_planes=0", "greater than 0"),
    ("fit.foreground_fraction=2", "[0, 1]"), ("sample.sampler=euler", "one of ddpm"),
])
def test_config_ranges_name_key_and_range(item, allowed):
    key = item.split("=")[0]
    with pytest.raises(HumanLiffError, match="not allowed") as err:
        load_config("tiny", [item])
    assert f"{key}=" in str(err.value) and f"(allowed: {allowed}" in str(err.value)


def test_config_range_in_a_yaml_file_and_on_the_cli(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sample: {views: 0}\n")
    with pytest.raises(HumanLiffError, match=r"bad.yaml: sample.views=0 is not allowed"):
        load_config(path)
    _one_error(CliRunner().invoke(app, ["train", "--config", "tiny", "--set", "train.steps=0", "--store", "s",
                                        "--out", str(tmp_path / "r")]), "train.steps=0", "at least 1")
    assert not (tmp_path / "r").exists()


def test_bad_counts_on_the_command_line(models, tmp_path):
    ema, store = models
    runner = CliRunner()
    _one_error(runner.invoke(app, ["run", str(tmp_path), "--steps", "0"]), "--steps 0: must be at least 1")
    _one_error(_generate(ema, store, tmp_path / "g", "--steps", "0"), "--steps 0: must be at least 1")
    _one_error(runner.invoke(app, ["model", "pack", "--unet", str(ema), "--store", str(store), "--out",
                                   str(tmp_path / "p"), "--subjects", "-1"]), "--subjects -1: must be at least 1")
    for option, value in (("--views", "0"), ("--size", "-1")):
        result = runner.invoke(app, ["render", "--config", "tiny", f"{store}:0:0", "--out",
                                     str(tmp_path / "r.png"), option, value])
        _one_error(result, f"{option} {value}: must be at least")


def test_run_folder_lock_names_the_holder(tmp_path):
    import os

    with hold_run_folder(tmp_path / "run") as run:
        assert (run / MARKER).is_file()
        assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())
        busy = rf"in use by another humanliff process \(pid {os.getpid()}\)"
        with pytest.raises(HumanLiffError, match=busy), hold_run_folder(run):
            pass
    with hold_run_folder(run):  # released
        pass
    with pytest.raises(RuntimeError), hold_run_folder(tmp_path / "fails"):
        raise RuntimeError
    assert not (tmp_path / "fails").exists()  # a folder made for a failed run is not left behind


def test_interrupted_swaps_are_finished_or_rolled_back(tmp_path):
    def folder(path, text):
        path.mkdir()
        (path / "f").write_text(text)

    target = tmp_path / "out"
    folder(tmp_path / ".out.999999999-a.old", "old")  # killed after renaming the old folder aside
    folder(tmp_path / ".out.999999999-a.tmp", "new")
    recover_swap(target)
    assert (target / "f").read_text() == "new" and len(list(tmp_path.iterdir())) == 1
    shutil.rmtree(target)
    folder(tmp_path / ".out.999999999-b.old", "old")  # no new folder: roll back
    recover_swap(target)
    assert (target / "f").read_text() == "old" and len(list(tmp_path.iterdir())) == 1
    folder(tmp_path / ".out.999999999-c.old", "older")  # killed before deleting the old folder
    folder(tmp_path / ".out.999999999-d.tmp", "half written")  # a dead writer's temporary
    folder(tmp_path / ".out.partial.999999999-e.old", "another target's")
    recover_swap(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial.999999999-e.old", "out"]
    assert (target / "f").read_text() == "old"
    with atomic_path(target) as tmp:
        folder(tmp, "replaced")
    assert sorted(_tree(target)) == [MARKER, "f"] and (target / "f").read_text() == "replaced"


def test_resume_refuses_another_seed_unless_told(models, tmp_path):
    from humanliff.training.train import train

    _, store = models
    cfg = load_config("tiny", ["train.steps=1", "train.microbatch=0"])
    train(cfg, store, tmp_path / "run")
    other = load_config("tiny", ["train.steps=2", "train.microbatch=0", "train.seed=1"])
    with pytest.raises(HumanLiffError, match=r"started with train.seed=0, the config now says 1; pass --resume"):
        train(other, store, tmp_path / "run")
    assert train(other, store, tmp_path / "run", resume_anyway=True).is_file()


def test_zero_byte_planes_and_bad_manifest_values_are_named(models, tmp_path):
    import json

    ema, store = models
    broken = tmp_path / "store"
    shutil.copytree(store, broken)
    (broken / "planes.npy").write_bytes(b"")
    _one_error(_generate(ema, broken, tmp_path / "g"), "planes.npy: not a readable .npy array")
    shutil.copy(store / "planes.npy", broken / "planes.npy")
    manifest = json.loads((store / "manifest.json").read_text())
    for key, value in (("resolution", "abc"), ("layers", "four"), ("bounds", "wide")):
        (broken / "manifest.json").write_text(json.dumps({**manifest, key: value}))
        _one_error(_generate(ema, broken, tmp_path / "g"), "manifest.json", f"'{key}'")
    assert np.load(store / "planes.npy").size


def test_file_outputs_never_land_inside_or_on_an_input(tmp_path):
    """render and data preview write one file: refused inside the store / dataset, on an input, or on a folder."""
    _, store, _ = make_tiny_models(tmp_path)
    before = sorted(p.name for p in store.iterdir())
    runner = CliRunner()
    inside = runner.invoke(app, ["render", f"{store}:a:0", "--out", str(store / "view.png"), "--config", "tiny"])
    assert inside.exit_code == 1 and f"lies inside the input {store}" in inside.output
    folder = runner.invoke(app, ["render", f"{store}:a:0", "--out", str(tmp_path), "--config", "tiny"])
    assert folder.exit_code == 1 and "is a folder; give a file name" in folder.output
    (tmp_path / "mine.png").write_text("the user's")
    mine = runner.invoke(app, ["render", f"{store}:a:0", "--out", str(tmp_path / "mine.png"), "--config", "tiny"])
    assert mine.exit_code == 1 and "exists; nothing was changed" in mine.output
    assert (tmp_path / "mine.png").read_text() == "the user's"
    (tmp_path / "data").mkdir()
    sheet = runner.invoke(app, ["data", "preview", str(tmp_path / "data"), "--out", str(tmp_path / "data" / "s.png")])
    assert sheet.exit_code == 1 and "lies inside the input" in sheet.output
    assert sorted(p.name for p in store.iterdir()) == before and not any((tmp_path / "data").iterdir())


def test_eval_outputs_are_guarded_before_any_work(models, tmp_path, monkeypatch):
    """eval gen and eval recon: no foreign folder, no input, not the working directory, no folder where their
    files go; a user's metrics.json is never replaced."""
    _, store = models
    runner = CliRunner()
    user = tmp_path / "mine"
    user.mkdir()
    (user / "metrics.json").write_text("the user's")
    gen = ["eval", "gen", str(tmp_path / "generated"), "--store", str(store), "--out"]
    _one_error(runner.invoke(app, [*gen, str(user)]), "not written by humanliff")
    _one_error(runner.invoke(app, [*gen, str(store)]), "is an input of this command")
    _one_error(runner.invoke(app, [*gen, str(tmp_path / "generated" / "eval")]), "lies inside the input")
    ours = tmp_path / "ours"
    (ours / "renders.png").mkdir(parents=True)
    (ours / "side_by_side.png").mkdir()
    write_marker(ours)
    _one_error(runner.invoke(app, [*gen, str(ours)]), "renders.png is a folder")
    recon = ["eval", "recon", "--config", "tiny", "--store", str(store), "--out", str(ours)]
    monkeypatch.setattr("humanliff.evaluation.recon.evaluate_recon", lambda *a, **k: pytest.fail("evaluated"))
    _one_error(runner.invoke(app, recon), "side_by_side.png is a folder")
    monkeypatch.chdir(user)
    _one_error(runner.invoke(app, [*gen, "."]), "is the working directory")
    assert (user / "metrics.json").read_text() == "the user's"

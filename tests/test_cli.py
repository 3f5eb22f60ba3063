"""The command line as a thin layer: its help imports no torch, its errors come from the library calls it
makes (``humanliff.workflows``, ``humanliff.Pipeline``), and every layout check is ``store.check_layout``."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import make_tiny_models

from humanliff import workflows
from humanliff.cli import app
from humanliff.config import load_config
from humanliff.errors import HumanLiffError
from humanliff.store import create_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny ema.pt and its store (16^2 planes), plus a store of 8^2 planes that fits neither."""
    root = tmp_path_factory.mktemp("models")
    ema, store, decoder = make_tiny_models(root)
    cfg = load_config("tiny")
    bounds = np.array([[[-0.5, -1.0, -0.3], [0.5, 1.0, 0.3]]], np.float32)
    small = create_store(root / "small", ["a"], bounds, 8, 27, decoder.state_dict(),
                         dataclasses.asdict(cfg.decoder), cfg.to_dict())
    return ema, store, small.path


def test_help_imports_no_torch():
    code = ("import sys; from humanliff.cli import app; app(['generate', '--help'], standalone_mode=False); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--sampler [ddpm|ddim|dpmpp|dpmpp_sde|distilled]" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_python_m_humanliff_cli_runs():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "humanliff.cli", "--version"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0 and "version" in done.stdout, done.stderr


def test_run_imports_no_other_command_module_nor_yaml():
    """``humanliff run`` imports its command's module alone (the group is lazy) and, with its pipeline
    modules, no yaml (nothing it reads is YAML without --set): start-up time."""
    code = ("import sys; from humanliff.cli import app; app(['run', '--help'], standalone_mode=False); "
            "import humanliff.pipeline, humanliff.run_pipeline, humanliff.generation_result; "
            "print(sorted(m for m in sys.modules if m.startswith('humanliff.cli.') or m.split('.')[0] == 'yaml'))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(
        ["humanliff.cli.app", "humanliff.cli.generation_commands", "humanliff.cli.options"])


def test_every_command_is_registered():
    ctx = click.Context(app)
    found = {name: app.get_command(ctx, name) for name in app.list_commands(ctx)}
    assert all(cmd.name == name for name, cmd in found.items())
    commands = {name: sorted(getattr(cmd, "commands", {})) for name, cmd in found.items()}
    assert commands == {"data": ["check", "preview", "synth"], "demo": [], "distill": [],
                        "eval": ["gen", "recon"], "export": [], "fit": [], "generate": [], "model": ["pack"],
                        "render": [], "run": [], "store": ["import"], "train": [], "view": []}


def test_export_refuses_a_store_of_another_layout(models, tmp_path):
    ema, _, small = models
    result = CliRunner().invoke(app, ["export", "--unet", str(ema), "--store", str(small), "--out",
                                      str(tmp_path / "arts"), "--formats", "onnx", "--device", "cpu"])
    assert result.exit_code == 1
    assert f"error: {small}: tri-planes are 27x8^2 but the UNet in {ema} expects 27x16^2" in result.output
    assert not (tmp_path / "arts").exists()


def test_generate_from_refuses_a_store_of_another_layout(models, tmp_path):
    ema, store, small = models
    result = CliRunner().invoke(app, ["generate", "--unet", str(ema), "--store", str(store), "--from",
                                      f"{small}:a:0", "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 1
    assert f"error: {small}: tri-planes are 27x8^2 but the UNet of {ema} expects 27x16^2" in result.output
    assert not (tmp_path / "out").exists()


def test_render_refuses_a_bad_reference_before_any_work(tmp_path):
    with pytest.raises(HumanLiffError, match="is not of the form STORE:SUBJECT:LAYER"):
        workflows.render("nowhere", tmp_path / "x.png")
    result = CliRunner().invoke(app, ["render", "store:a:9", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "error: 'store:a:9': LAYER must be 0..3" in result.output


def test_data_commands_match_the_python_calls(tmp_path):
    data = tmp_path / "data"
    runner = CliRunner()
    made = runner.invoke(app, ["data", "synth", "--config", "tiny", "--out", str(data), "--subjects", "1",
                               "--views", "2", "--resolution", "16"])
    assert made.exit_code == 0, made.output
    assert workflows.check_data(data, config="tiny") == ([], 1, "synbody")
    checked = runner.invoke(app, ["data", "check", "--config", "tiny", str(data)])
    assert checked.exit_code == 0 and f"ok: {data} (1 subjects, synbody layout)" in checked.output
    (data / "human_list.txt").write_text("missing_subject\n")
    problems, _, _ = workflows.check_data(data, config="tiny")
    bad = runner.invoke(app, ["data", "check", "--config", "tiny", str(data)])
    assert bad.exit_code == 1 and problems and all(p in bad.output for p in problems)
    with pytest.raises(HumanLiffError, match="synth.subjects=0 is not allowed"):
        workflows.synth_data(tmp_path / "other", config="tiny", subjects=0)


def test_demo_preset_follows_the_device():
    assert workflows.demo_preset("tiny", "cuda") == "tiny"
    assert workflows.demo_preset(None, "cpu") == "demo"


@pytest.mark.parametrize("layout,listing", [("synbody", "human_list.txt"), ("tightcap", "TightCap_human_list.txt")])
def test_store_import_reads_boxes_through_the_layout(tmp_path, layout, listing):
    from humanliff.training.import_original import dataset_bounds

    (tmp_path / listing).write_text("s1\ns0\n")
    for i, name in enumerate(["s0", "s1"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "bounds.json").write_text(json.dumps({"min": [-1, -2, -i], "max": [1, 2, 3]}))
    data = load_config(None, [f"data.root={tmp_path}", f"data.layout={layout}", "data.canonical=false"]).data
    names, boxes = dataset_bounds(data)
    assert names == ["s1", "s0"]
    np.testing.assert_array_equal(boxes["s1"], [[-1, -2, -1], [1, 2, 3]])

"""The default model's distilled student: found by name, by ``--sampler distilled`` without ``--unet``, and
exported for ``run`` under a key of its own; refused in one line when it is not installed."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import humanliff.pretrained as pretrained
from humanliff.cli import app
from humanliff.cli.options import asks_for_student
from humanliff.ema_file import EMA_FILE, read_ema, read_schedule, write_ema
from humanliff.errors import HumanLiffError
from humanliff.export import default as export_default
from humanliff.generate import resolve_model
from humanliff.runtime.schedule import DistilledSchedule
from humanliff.store import open_store

TINY_OUTPUT = ["--humans", "1", "--layers", "0", "--views", "1", "--size", "16",
               "--set", "sample.turntable_frames=1", "--set", "sample.mesh_resolution=8",
               "--set", "render.n_samples=4", "--set", "render.n_importance=4"]


@pytest.fixture
def student(tmp_path, monkeypatch):
    """A one-call student in the shipped student's place: the default model's weights with a schedule."""
    blob = torch.load(pretrained.DEFAULT_MODEL / EMA_FILE, map_location="cpu", weights_only=True)
    config = {**blob["config"], "sample": {**blob["config"]["sample"], "sampler": "distilled", "steps": 1}}
    schedule = DistilledSchedule("dmd", "ddim", (999,), "default", 20)
    folder = tmp_path / "student"
    folder.mkdir()
    write_ema(folder / EMA_FILE, blob["state_dict"], config, blob["store_manifest"],
              {"distilled": schedule.to_record()})
    monkeypatch.setattr(pretrained, "DEFAULT_STUDENT", folder)
    return folder / EMA_FILE


def test_default_distilled_source_and_cli_sampler(student, tmp_path):
    assert resolve_model("default-distilled", None) == (student, pretrained.DEFAULT_MODEL / "store")
    assert resolve_model(None, None)[0] == pretrained.DEFAULT_MODEL / EMA_FILE
    with pytest.raises(HumanLiffError, match="the default model has its own store"):
        resolve_model("default-distilled", tmp_path)
    done = CliRunner().invoke(app, ["generate", "--sampler", "distilled", "--out", str(tmp_path / "gen"),
                                    "--device", "cpu", *TINY_OUTPUT])
    assert done.exit_code == 0, done.output
    sample = json.loads((tmp_path / "gen" / "generation.json").read_text())["sample"]
    assert sample["sampler"] == "distilled" and sample["steps"] == 1


def test_run_exports_the_student_under_its_own_key(student, tmp_path, monkeypatch):
    exported = []
    monkeypatch.setattr(export_default, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(export_default, "export_artifacts", lambda ema, store, folder, *a, **k: exported.append(
        (ema, folder)))
    student_folder = export_default.default_artifacts("cpu", distilled=True)
    teacher_folder = export_default.default_artifacts("cpu")
    assert exported == [(student, student_folder), (pretrained.DEFAULT_MODEL / EMA_FILE, teacher_folder)]
    assert student_folder.name.startswith("default-distilled-") and student_folder.name.endswith("-cpu")
    assert teacher_folder.name.startswith("default-") and student_folder != teacher_folder


def test_missing_student_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "DEFAULT_STUDENT", tmp_path / "absent")
    result = CliRunner().invoke(app, ["generate", "--sampler", "distilled", "--out", str(tmp_path / "gen"),
                                      "--device", "cpu", *TINY_OUTPUT])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "no distilled student of the default model is installed" in result.output
    assert not (tmp_path / "gen").exists()


def test_shipped_student_fits_the_default_model():
    """The student in the package: 4 calls a layer, the teacher's architecture, fp16, the default store's subjects."""
    ema, store = pretrained.default_model(distilled=True)
    blob, teacher = read_ema(ema), read_ema(pretrained.default_model()[0])
    schedule = read_schedule(ema)
    assert schedule is not None and schedule.steps == 4 and schedule.method == "dmd"
    assert blob["config"]["sample"]["sampler"] == "distilled" and blob["config"]["sample"]["steps"] == 4
    assert blob["config"]["unet"] == teacher["config"]["unet"]
    assert {k: v.shape for k, v in blob["state_dict"].items()} == {k: v.shape for k, v in
                                                                  teacher["state_dict"].items()}
    assert {v.dtype for v in blob["state_dict"].values()} == {torch.float16}
    assert blob["store_manifest"]["subjects"] == open_store(store).subjects


def test_asks_for_student_reads_the_option_then_the_last_override():
    assert asks_for_student("distilled", ())
    assert asks_for_student(None, ("sample.steps=4", "sample.sampler=distilled"))
    with pytest.raises(HumanLiffError, match="unknown key 'sampler '"):  # as the pipeline would refuse it
        asks_for_student(None, ("sample.sampler = distilled",))
    assert not asks_for_student(None, ("sample.sampler=distilled", "sample.sampler=ddim"))
    assert not asks_for_student("dpmpp", ("sample.sampler=distilled",))
    assert not asks_for_student(None, ())

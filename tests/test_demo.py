"""``humanliff demo``: every stage's output on tiny sizes, the summary, resuming, a changed config."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from humanliff import demo
from humanliff.cli import app
from humanliff.config import load_config
from humanliff.errors import HumanLiffError

FAST = ["sample.batch=1", "train.steps=2", "fit.iterations_a=2", "sample.views=1",
        "sample.turntable_frames=2", "sample.image_size=16", "sample.mesh_resolution=12",
        "render.occupancy_resolution=0", "sample.steps=2"]
STAGES = ["data", "fit_a", "fit_b", "eval", "train", "generate"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    cfg = load_config("tiny", FAST)
    return cfg, out, demo.run_demo(cfg, out, device="cpu")


def test_demo_writes_every_stage(first_run):
    _, out, summary = first_run
    for path in ["data/human_list.txt", "fit/store_a/planes.npy", "fit/store_b/planes.npy",
                 "eval/metrics.json", "train/ema.pt", "generated/contact_sheet.png",
                 "generated/turntable/human_000.gif",
                 "config.yaml"]:
        assert (out / path).is_file(), path
    saved = json.loads((out / "summary.json").read_text())
    assert list(saved["stages"]) == STAGES
    assert all(not s["skipped"] and s["seconds"] >= 0 for s in saved["stages"].values())
    assert set(saved["recon"]) == {"0", "1", "2", "3"} and all("psnr" in v for v in saved["recon"].values())
    assert len(saved["paths"]["turntables"]) == 1
    glbs = sorted((out / "generated").glob("layer_*/human_*.glb"))
    assert [Path(p) for p in saved["paths"]["meshes"]] == glbs  # exactly the meshes it wrote
    assert sorted((out / "generated").glob("layer_*/human_*.ply")) == [p.with_suffix(".ply") for p in glbs]
    assert summary["message"].startswith("demo done in ")
    assert f"contact sheet:              {out / 'generated' / 'contact_sheet.png'}" in summary["message"]
    assert f"viewer (open in a browser): {out / 'generated' / 'viewer.html'}" in summary["message"]


def test_second_call_skips_finished_stages(first_run, monkeypatch):
    cfg, out, _ = first_run

    def fail(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    names = ("synthesize_from_config", "fit_stage_a", "fit_stage_b", "evaluate_recon", "train", "generate")
    for name in names:
        monkeypatch.setattr(demo, name, fail)
    summary = demo.run_demo(cfg, out, device="cpu")
    assert all(summary["stages"][s]["skipped"] for s in STAGES)
    assert summary["recon"] == json.loads((out / "eval" / "metrics.json").read_text())["layers"]


def test_interrupted_stage_runs_again_and_later_ones_follow(first_run, tmp_path, monkeypatch):
    cfg, out, _ = first_run
    copy = tmp_path / "moved_demo"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "eval")
    calls = []
    monkeypatch.setattr(demo, "synthesize_from_config", lambda *a: calls.append("data"))
    monkeypatch.setattr(demo, "train", lambda *a: calls.append("train"))
    monkeypatch.setattr(demo, "generate", lambda *a, **k: calls.append("generate"))
    summary = demo.run_demo(cfg, copy, device="cpu")
    assert calls == ["train", "generate"]
    assert [s for s in STAGES if not summary["stages"][s]["skipped"]] == ["eval", "train", "generate"]
    assert (copy / "eval" / "metrics.json").is_file()
    assert not (copy / "train").exists() and not (copy / "generated").exists()


def test_other_config_in_the_same_folder_is_refused(first_run):
    cfg, out, _ = first_run
    with pytest.raises(HumanLiffError, match="another config"):
        demo.run_demo(cfg.with_overrides(["train.steps=5"]), out, device="cpu")


def test_cli_demo_picks_the_preset_and_prints_the_final_line(first_run, tmp_path, monkeypatch):
    seen = {}

    def fake(cfg, out_dir, device):
        seen.update(steps=cfg.train.steps, out=out_dir, device=device)
        return {"message": "demo done in 0.1 min: contact sheet x"}

    monkeypatch.setattr(demo, "run_demo", fake)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--config", "tiny",
                                      "--set", "train.steps=7", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("demo done in 0.1 min: contact sheet x")
    assert seen == {"steps": 7, "out": str(tmp_path / "d"), "device": "cpu"}
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--config", "nope"])
    assert result.exit_code == 1 and "no such config" in result.output


def test_cli_demo_refuses_the_working_directory_and_foreign_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "run_demo", lambda cfg, out_dir, device: pytest.fail("the demo ran"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "important.txt").write_text("keep")
    result = CliRunner().invoke(app, ["demo", "--out", ".", "--config", "tiny"])
    assert result.exit_code == 1 and "is the working directory" in result.output
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    result = CliRunner().invoke(app, ["demo", "--out", str(foreign), "--config", "tiny"])
    assert result.exit_code == 1 and "was not written by humanliff" in result.output
    assert (tmp_path / "important.txt").read_text() == "keep" and (foreign / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["important.txt", "mine"]

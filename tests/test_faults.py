"""Fault injection and races (issue 14): a process killed at every write step of checkpointing and of the
output swap loses nothing, and its re-run ends equal to an uninterrupted run; writers racing on one
target all succeed; a run folder has one writer at a time.

Kill points come from ``HUMANLIFF_FAULT=<point>:<k>`` (``humanliff.io.fault_point``): the k-th write step
of ``checkpoint`` or ``swap`` sends SIGKILL to the process. The commands run in forked children of one
subprocess (``fault_driver.py``), so torch is imported once per batch of runs.
"""

import dataclasses
import functools
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_models

from humanliff.config import Config, load_config
from humanliff.ema_file import read_ema
from humanliff.errors import HumanLiffError
from humanliff.io import MARKER, atomic_path, recover_swap, removed_if_killed
from humanliff.output_sizes import dataset_bytes, fit_bytes, generation_bytes
from humanliff.run_folder import hold_run_folder
from humanliff.store import open_store

DRIVER = Path(__file__).with_name("fault_driver.py")
TRAIN_SETS = ["train.steps=2", "train.checkpoint_every=2", "train.microbatch=0", "train.batch_size=2"]
TRAIN_KILL_POINTS = 4
"""One save (step 2) of ema.pt, then checkpoint.pt, each file with two steps (written, renamed)."""
SWAP_KILL_POINTS = 4
"""Before renaming the old folder aside, after it, after renaming the new one in, after deleting the old."""
FIT_KILL_POINTS = 7
"""Two checkpoint_a saves (step 1 and the final one at step 2): folder swaps of three steps (nothing to
rename aside yet) and four."""
STORE_A_KILL_POINTS = 4
"""store_a: created (zero planes), then its swap's three steps (planes written, renamed in, done)."""
STORE_B_KILL_POINTS = 4
"""store_b.partial, updated in place: one layer's planes written (before its manifest and checkpoint)."""
FIT_SETS = ["fit.rays_per_image=16", "fit.iterations_a=2", "fit.checkpoint_every=1"]
GEN_SETS = ["sample.views=1", "sample.turntable_frames=1", "sample.image_size=8", "sample.mesh_resolution=4",
            "render.occupancy_resolution=0"]


def _drive(tmp_path: Path, jobs: list[dict]) -> list[dict]:
    plan = tmp_path / f"jobs_{time.monotonic_ns()}.json"
    plan.write_text(json.dumps(jobs))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DRIVER.parent), *sys.path])}
    done = subprocess.run([sys.executable, str(DRIVER), str(plan)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sets(items: list[str]) -> list[str]:
    return [x for item in items for x in ("--set", item)]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    ema, store, _ = make_tiny_models(tmp_path_factory.mktemp("models"))
    return ema, store


KILLED = {"signal": signal.SIGKILL}


def test_kill_at_every_checkpoint_write_of_train(models, tmp_path):
    _, store = models
    args = ["train", "--config", "tiny", *_sets(TRAIN_SETS), "--store", str(store), "--device", "cpu", "--out"]
    points = range(1, TRAIN_KILL_POINTS + 2)
    results = _drive(tmp_path, [{"args": [*args, "ref"], "fault": None}] +
                     [{"args": [*args, f"run{k}"], "fault": f"checkpoint:{k}"} for k in points])
    assert results == [{"exit": 0}] + [KILLED] * TRAIN_KILL_POINTS + [{"exit": 0}]
    for k in points[:-1]:
        run = tmp_path / f"run{k}"
        assert (run / "checkpoint.pt").is_file() == (k == 4), k  # renamed in at the last point
        if k >= 2:  # ema.pt was renamed in
            assert read_ema(run)["state_dict"].keys(), k
    reruns = _drive(tmp_path, [{"args": [*args, f"run{k}"], "fault": None} for k in points])
    assert reruns == [{"exit": 0}] * len(points)
    ref = read_ema(tmp_path / "ref")["state_dict"]
    ref_model = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)["model"]
    for k in points:
        run = tmp_path / f"run{k}"
        assert _states_equal(read_ema(run)["state_dict"], ref), k
        assert _states_equal(torch.load(run / "checkpoint.pt", weights_only=True)["model"], ref_model), k
        assert not [p.name for p in run.iterdir() if p.name.endswith((".tmp", ".old"))], k


def test_kill_at_every_step_of_the_output_swap(models, tmp_path):
    ema, store = models
    args = ["generate", "--config", "tiny", *_sets(GEN_SETS), "--unet", str(ema), "--store", str(store),
            "--device", "cpu", "--humans", "1", "--steps", "1", "--layers", "0-1", "--force", "--out"]
    points = range(1, SWAP_KILL_POINTS + 2)
    first = _drive(tmp_path, [{"args": [*args, "old", "--seed", "0"], "fault": None},
                              {"args": [*args, "ref", "--seed", "1"], "fault": None}])
    assert first == [{"exit": 0}] * 2
    old, ref = _tree(tmp_path / "old"), _tree(tmp_path / "ref")
    assert old != ref and MARKER in ref
    sample = load_config("tiny", GEN_SETS).sample
    _assert_estimate(generation_bytes(sample, 1, 16, 2), tmp_path / "ref")
    for k in points:
        shutil.copytree(tmp_path / "old", tmp_path / f"out{k}")
    results = _drive(tmp_path, [{"args": [*args, f"out{k}", "--seed", "1"], "fault": f"swap:{k}"}
                                for k in points])
    assert results == [KILLED] * SWAP_KILL_POINTS + [{"exit": 0}]
    for k in points:
        recover_swap(tmp_path / f"out{k}")  # what the next command does first
        assert _tree(tmp_path / f"out{k}") in (old, ref), k  # one whole folder, never none or a mix
        assert not list(tmp_path.glob(f".out{k}.*")), k
    reruns = _drive(tmp_path, [{"args": [*args, f"out{k}", "--seed", "1"], "fault": None} for k in points])
    assert reruns == [{"exit": 0}] * len(points)
    assert all(_tree(tmp_path / f"out{k}") == ref for k in points)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny dataset and an uninterrupted stage-A fit of it (``ref``)."""
    root = tmp_path_factory.mktemp("fitted")
    data = ["data", "synth", "--config", "tiny", "--set", "synth.views=4", "--out", "data"]
    assert _drive(root, [{"args": data, "fault": None},
                         {"args": _fit_args(root, "a", "ref"), "fault": None}]) == [{"exit": 0}] * 2
    return root


def _fit_args(root: Path, stage: str, out: str, *extra: str) -> list[str]:
    return ["fit", "--stage", stage, "--config", "tiny", "--set", f"data.root={root / 'data'}", *_sets(FIT_SETS),
            *extra, "--device", "cpu", "--out", out]


def _assert_estimate(estimate: int, folder: Path) -> None:
    """The disk estimate is within 25 % of what the folder holds."""
    real = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert 0.75 * real <= estimate <= 1.25 * real, (estimate, real, folder)


def _fit_config(root: Path) -> Config:
    return load_config("tiny", [f"data.root={root / 'data'}", *FIT_SETS])


def test_disk_estimates_of_data_and_fit_match_the_real_sizes(fitted):
    _assert_estimate(dataset_bytes(dataclasses.replace(load_config("tiny").synth, views=4)), fitted / "data")
    _assert_estimate(fit_bytes(_fit_config(fitted), "a", peak=False), fitted / "ref")
    assert fit_bytes(_fit_config(fitted), "a") > fit_bytes(_fit_config(fitted), "a", peak=False)


def test_kill_at_every_checkpoint_and_store_write_of_fit_stage_a(fitted, tmp_path):
    args = functools.partial(_fit_args, fitted, "a")
    kills = [("checkpoint", k) for k in range(1, FIT_KILL_POINTS + 2)]
    kills += [("store", k) for k in range(1, STORE_A_KILL_POINTS + 2)]
    results = _drive(tmp_path, [{"args": args(f"{p}{k}"), "fault": f"{p}:{k}"} for p, k in kills])
    assert results == ([KILLED] * FIT_KILL_POINTS + [{"exit": 0}] + [KILLED] * STORE_A_KILL_POINTS
                       + [{"exit": 0}])
    for point, k in kills:
        fit = tmp_path / f"{point}{k}"
        if (point == "checkpoint" and k > FIT_KILL_POINTS) or (point == "store" and k > STORE_A_KILL_POINTS):
            continue
        assert not (fit / "config.yaml").exists(), k  # written only when the fit has succeeded
        recover_swap(fit / "checkpoint_a")
        if point == "store" or k >= 2:  # the first checkpoint_a was renamed in: it is never lost again
            assert torch.load(fit / "checkpoint_a" / "state.pt", weights_only=True)["step"] >= 1, k
        if point == "store" and k >= 4:  # store_a renamed in, whole
            assert open_store(fit / "store_a").planes.any(), k
    reruns = _drive(tmp_path, [{"args": args(f"{p}{k}"), "fault": None} for p, k in kills])
    assert reruns == [{"exit": 0}] * len(kills)
    ref = np.load(fitted / "ref" / "store_a" / "planes.npy")
    for point, k in kills:
        fit = tmp_path / f"{point}{k}"
        np.testing.assert_array_equal(np.load(fit / "store_a" / "planes.npy"), ref)
        assert not [p.name for p in fit.iterdir() if p.name.endswith((".tmp", ".old"))], (point, k)


def test_kill_at_every_layer_write_of_fit_stage_b(fitted, tmp_path):
    def args(out: str) -> list[str]:
        return _fit_args(fitted, "b", out, "--store", str(fitted / "ref" / "store_a"))

    points = range(1, STORE_B_KILL_POINTS + 2)
    jobs = [{"args": args("ref"), "fault": None}]
    jobs += [{"args": args(f"b{k}"), "fault": f"store:{k}"} for k in points]
    jobs += [{"args": args(f"b{k}"), "fault": None} for k in points]  # the re-runs, in the same process
    results = _drive(tmp_path, jobs)
    assert results == [{"exit": 0}] + [KILLED] * STORE_B_KILL_POINTS + [{"exit": 0}] * (1 + len(points))
    _assert_estimate(fit_bytes(_fit_config(fitted), "b", peak=False), tmp_path / "ref")
    ref = np.load(tmp_path / "ref" / "store_b" / "planes.npy")
    assert (np.abs(ref).max(axis=(2, 3, 4)) > 0).all()  # every subject's every layer was fitted
    for k in points:
        fit = tmp_path / f"b{k}"
        np.testing.assert_array_equal(np.load(fit / "store_b" / "planes.npy"), ref)
        assert sorted(p.name for p in fit.iterdir() if p.name.startswith(("store_b", "."))) == \
            [".humanliff", ".lock", "store_b"], k


def test_an_abort_inside_export_leaves_no_temporary_folder(models, tmp_path):
    ema, store = models
    args = ["export", "--unet", str(ema), "--store", str(store), "--formats", "ep", "--device", "cpu", "--out",
            "artifacts"]
    aborted = _drive(tmp_path, [{"args": args, "fault": None, "abort": "humanliff.export.artifacts:export_network"}])
    assert aborted == [{"signal": signal.SIGABRT}]  # exit code 134 in a shell
    deadline = time.monotonic() + 30
    while [p for p in tmp_path.iterdir() if p.name.startswith(".artifacts.")] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(p.name for p in tmp_path.iterdir() if "artifacts" in p.name) == []
    with removed_if_killed(tmp_path / "kept"):  # the normal end keeps it
        (tmp_path / "kept").mkdir()
    assert (tmp_path / "kept").is_dir()


def _writer(target: str, writer: int, writes: int, failures) -> None:
    for i in range(writes):
        try:
            with atomic_path(target) as tmp:
                tmp.mkdir()
                (tmp / "a").write_text(f"{writer} {i}")
                (tmp / "b").write_text(f"{writer} {i}")
        except OSError:
            failures.value += 1


def test_writers_racing_on_one_folder_all_succeed(tmp_path):
    ctx = multiprocessing.get_context("fork")
    failures = ctx.Value("i", 0)
    target = tmp_path / "out"
    procs = [ctx.Process(target=_writer, args=(str(target), w, 20, failures)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert failures.value == 0 and all(p.exitcode == 0 for p in procs)
    assert (target / "a").read_text() == (target / "b").read_text()  # one whole write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _hold(folder: str, ready, release) -> None:
    with hold_run_folder(folder):
        ready.set()
        release.wait(60)


def test_a_second_writer_of_a_run_folder_gets_the_holder_pid(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "run"), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(HumanLiffError, match=rf"in use by another humanliff process \(pid {holder.pid}\)"), \
                hold_run_folder(tmp_path / "run"):
            pass
    finally:
        release.set()
        holder.join()
    with hold_run_folder(tmp_path / "run"):
        pass

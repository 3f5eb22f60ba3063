"""Diffusion training: LR, data order, EMA, micro-batches, resume, DDP (gloo), compile switch, errors, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from humanliff.cli import app
from humanliff.config import Config, TrainConfig, load_config
from humanliff.errors import HumanLiffError, InputFileError
from humanliff.io import atomic_path
from humanliff.models.checkpoint import load_ema, read_store_manifest
from humanliff.models.unet import AttentionBlock, ResBlock
from humanliff.store import create_store
from humanliff.training.checkpoint import CHECKPOINT
from humanliff.training.distributed import DistInfo
from humanliff.training.ema import EMA
from humanliff.training.train import (
    SNAPSHOTS,
    DiffusionTrainer,
    LayerPairs,
    annealed_lr,
    item_positions,
    items_at,
    snapshot_path,
    train,
)

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _tiny(*overrides: str) -> Config:
    return load_config("tiny", overrides)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three subjects of 16x16 tri-planes (the tiny preset's size)."""
    path = tmp_path_factory.mktemp("store") / "store"
    unit = np.array([[-1, -1, -1], [1, 1, 1]], np.float32)
    with atomic_path(path) as tmp:
        created = create_store(tmp, ["s0", "s1", "s2"], np.stack([unit] * 3), 16, 27, {"w": torch.zeros(1)},
                               {"kind": "fused"}, _tiny().to_dict())
        rng = np.random.default_rng(0)
        created.planes[:] = rng.uniform(-0.5, 0.5, created.planes.shape).astype(np.float16)
        created.planes.flush()
    return path


def _state(path):
    return torch.load(path, weights_only=True)


def test_annealed_lr_is_the_originals():
    cfg = TrainConfig()
    lrs = [annealed_lr(cfg, s) for s in (0, 50_000, 100_000, 300_000)]
    assert lrs == pytest.approx([5e-5, 3e-5, 1e-5, 1e-5])
    assert annealed_lr(TrainConfig(lr_anneal_steps=0), 10**6) == 5e-5


def test_item_order_is_a_permutation_per_epoch_split_over_ranks():
    n, per_rank, world = 12, 2, 3
    seen = [items_at(item_positions(step, per_rank, rank, world), n, seed=0)
            for step in range(2) for rank in range(world)]
    assert sorted(np.concatenate(seen).tolist()) == list(range(n))
    assert not np.array_equal(items_at(np.arange(n), n, 0), items_at(np.arange(n, 2 * n), n, 0))
    assert np.array_equal(items_at(np.arange(5, 9), n, 0), items_at(np.arange(n), n, 0)[5:9])


def test_layer_pairs_condition_on_the_previous_layer(store):
    planes = np.load(store / "planes.npy", mmap_mode="r")
    pairs = LayerPairs(planes, torch.device("cpu"))
    x0, x_cond, y = pairs.batch(np.array([4 * 2 + 3, 4 * 1 + 0]))
    assert len(pairs) == 12 and y.tolist() == [3, 0] and x0.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x0[0], torch.from_numpy(planes[2, 3].astype(np.float32)))
    assert torch.equal(x_cond[0], torch.from_numpy(planes[2, 2].astype(np.float32)))
    assert not x_cond[1].any()
    on_device = LayerPairs(planes, torch.device("cpu"), on_device=True).batch(np.array([11, 4]))
    assert all(torch.equal(a, b) for a, b in zip(on_device, (x0, x_cond, y), strict=True))


def test_ema_update():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, 0.9)
    before = [p.clone() for p in ema.params]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for old, new, live in zip(before, ema.params, model.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * live)
    assert set(ema.state_dict(model)) == {"weight", "bias"}


def _batch(y):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 27, 16, 16, generator=g) - 0.5
    return x0, torch.rand(4, 27, 16, 16, generator=g) - 0.5, torch.tensor(y)


def _one_step(cfg, y=(0, 1, 2, 3), randomize=False):
    trainer = DiffusionTrainer(cfg, CPU)
    if randomize:  # the zero-initialized convs would hide the condition from the first step's gradients
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    loss, grad_norm = trainer.train_step(*_batch(list(y)))
    return trainer, float(loss), float(grad_norm)


def test_microbatches_average_to_the_full_batch():
    whole, loss_a, norm_a = _one_step(_tiny("train.microbatch=0"))
    split, loss_b, norm_b = _one_step(_tiny("train.microbatch=1"))
    assert loss_a == pytest.approx(loss_b, rel=1e-5) and norm_a == pytest.approx(norm_b, rel=1e-4)
    for a, b in zip(whole.model.parameters(), split.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert whole.step == 1 and 0.5 < loss_a < 1.5


def test_condition_noise_applies_above_layer_0_only():
    base, loss_a, _ = _one_step(_tiny(), y=(0, 0, 0, 0), randomize=True)
    noisy, loss_b, _ = _one_step(_tiny("train.cond_noise=0.5"), y=(0, 0, 0, 0), randomize=True)
    assert loss_a == loss_b
    for a, b in zip(base.model.parameters(), noisy.model.parameters(), strict=True):
        assert torch.equal(a, b)
    base, loss_a, _ = _one_step(_tiny(), y=(1, 1, 2, 3), randomize=True)
    noisy, loss_b, _ = _one_step(_tiny("train.cond_noise=0.5"), y=(1, 1, 2, 3), randomize=True)
    assert loss_a != loss_b
    assert not all(torch.equal(a, b) for a, b in zip(base.model.parameters(), noisy.model.parameters(),
                                                      strict=True))


def test_bf16_step_runs_and_learns_something():
    trainer, loss, grad_norm = _one_step(_tiny("train.precision=bf16"))
    assert np.isfinite(loss) and grad_norm > 0
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_compile_switch_wraps_the_model(monkeypatch):
    calls = []
    real = torch.compile

    def fake_compile(module, **kwargs):
        calls.append(module)
        return real(module, backend="eager")

    monkeypatch.setattr(torch, "compile", fake_compile)
    trainer, loss, _ = _one_step(_tiny("train.compile=true"))
    assert calls == [trainer.model] and np.isfinite(loss)


def test_compile_blocks_wraps_each_block_with_the_same_math(monkeypatch):
    calls = []
    real = torch.compile

    def fake_compile(fn, **kwargs):
        calls.append((fn.__self__, kwargs))
        return real(fn, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", fake_compile)
    torch._dynamo.reset()
    trainer, loss, grad_norm = _one_step(_tiny("train.compile=true", "train.compile_scope=blocks"), randomize=True)
    blocks = [m for m in trainer.model.modules() if isinstance(m, (ResBlock, AttentionBlock))]
    assert [m for m, _ in calls] == blocks and all(kw == {"dynamic": False} for _, kw in calls)
    assert trainer.forward is trainer.model and not trainer.graphed  # the CPU runs no CUDA graph
    assert torch._dynamo.config.recompile_limit >= 256
    _, plain_loss, plain_norm = _one_step(_tiny(), randomize=True)
    assert loss == plain_loss and grad_norm == pytest.approx(plain_norm, rel=1e-6)
    torch._dynamo.reset()


def test_snapshot_every_keeps_the_ema_along_the_run(store, tmp_path):
    """``train.snapshot_every=2`` of 4 steps: ``snapshots/ema_<step>.pt`` at steps 2 and 4, each a complete
    ``ema.pt`` (the last one the run's own)."""
    ema = train(_tiny("train.snapshot_every=2"), store, tmp_path / "a")
    snaps = sorted((tmp_path / "a" / SNAPSHOTS).iterdir())
    assert [p.name for p in snaps] == ["ema_0000002.pt", "ema_0000004.pt"] and snaps[1] == snapshot_path(
        tmp_path / "a", 4)
    first, last, final = (load_ema(p)[0].state_dict() for p in (*snaps, ema))
    assert all(torch.equal(last[k], final[k]) for k in final)
    assert any(not torch.equal(first[k], final[k]) for k in final)


def test_train_writes_a_run_and_resumes_exactly(store, tmp_path):
    straight = train(_tiny(), store, tmp_path / "a")
    run = tmp_path / "a"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.yaml", "ema.pt",
                                                     "train_log.jsonl"]
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(0.5 < r["loss"] < 1.5 for r in log)
    assert all(r["items_per_s"] > 0 for r in log)
    unet, cfg = load_ema(straight)
    assert cfg == _tiny() and cfg.unet.model_channels == 32
    assert read_store_manifest(run)["subjects"] == ["s0", "s1", "s2"]
    assert _state(run / CHECKPOINT)["step"] == 4

    train(_tiny("train.steps=2"), store, tmp_path / "b")
    assert _state(tmp_path / "b" / CHECKPOINT)["step"] == 2
    with open(tmp_path / "b" / "train_log.jsonl", "a") as f:  # a killed run logged past its checkpoint
        f.write(json.dumps({"step": 3, "loss": 9.0}) + "\n" + '{"step": 4, "lo')
    train(_tiny(), store, tmp_path / "b")
    resumed = [json.loads(line) for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [1, 2, 3, 4] and resumed[2]["loss"] != 9.0
    a, b = _state(run / CHECKPOINT), _state(tmp_path / "b" / CHECKPOINT)
    assert set(a) == {"model", "ema", "optimizer", "step", "rng", "config"} and b["step"] == 4
    assert a["optimizer"]["state"] and a["rng"]["torch"].dtype == torch.uint8
    torch.testing.assert_close(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"],
                               rtol=0, atol=1e-9)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-7)
        torch.testing.assert_close(a["ema"][key], b["ema"][key], rtol=0, atol=1e-7)


def _torchrun_train(store, out, logs, attempts=2):
    """``humanliff train`` under torchrun, two gloo ranks on the CPU, each rank's output in ``logs``.

    A launch in which a rank was killed by a signal before the run finished (gloo's TCP transport on a
    starved 2-core machine, once in CI) is launched once more: it resumes from what was written, and the
    result must still match one process. Anything else fails at once, with every rank's own stderr.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(attempts):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--redirects", "3", "--log-dir", str(logs / str(attempt)),
               "-m", "humanliff.cli", "train", "--config", "tiny", "--set", "train.steps=2",
               "--set", "train.batch_size=2", "--set", "train.microbatch=1", "--store", str(store),
               "--out", str(out), "--device", "cpu"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        if done.returncode == 0:
            return
        ranks = "\n".join(f"--- {p.relative_to(logs)}\n{p.read_text()[-3000:]}"
                          for p in sorted(logs.glob(f"{attempt}/**/*.log")))
        codes = [int(code) for code in re.findall(r"exitcode\s*:\s*(-?\d+)", done.stderr)]
        signalled = bool(codes) and all(code < 0 for code in codes)
        if not signalled or attempt == attempts - 1:
            pytest.fail(f"torchrun exited {done.returncode}\n{ranks}\n--- launcher\n{done.stderr[-1500:]}")
        print(f"attempt {attempt}: a rank was killed by a signal, launching again\n{ranks}")


def test_ddp_gloo_matches_one_process(store, tmp_path):
    """Two ranks with half the batch each give the model of one rank with the whole batch."""
    train(_tiny("train.steps=2", "train.microbatch=0"), store, tmp_path / "one")
    _torchrun_train(store, tmp_path / "two", tmp_path / "logs")
    one, two = _state(tmp_path / "one" / CHECKPOINT), _state(tmp_path / "two" / CHECKPOINT)
    assert two["config"]["train"]["batch_size"] == 2
    for key in one["model"]:
        torch.testing.assert_close(one["model"][key], two["model"][key], rtol=1e-4, atol=1e-6)


def test_bad_inputs(store, tmp_path):
    with pytest.raises(InputFileError, match=r"tri-planes are 27x16\^2 but the model's config .* expects 27x32\^2"):
        train(_tiny("triplane.resolution=32"), store, tmp_path / "r")
    with pytest.raises(HumanLiffError, match="train.precision='fp16' is not allowed \\(allowed: one of bf16, fp32"):
        _tiny("train.precision=fp16")
    with pytest.raises(HumanLiffError, match="batch_size 4 is not a multiple of train.microbatch 3"):
        DiffusionTrainer(_tiny("train.microbatch=3"), CPU)
    train(_tiny("train.steps=1"), store, tmp_path / "run")
    with pytest.raises(InputFileError, match=r"checkpoint.pt: the run was started with unet.num_heads=2, "):
        train(_tiny("unet.num_heads=4"), store, tmp_path / "run")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CHECKPOINT).write_bytes(b"junk")
    with pytest.raises(InputFileError, match="not a readable torch checkpoint"):
        train(_tiny(), store, tmp_path / "bad")
    with pytest.raises(InputFileError, match="not a tri-plane store"):
        train(_tiny(), tmp_path, tmp_path / "x")


def test_cli_train(store, tmp_path):
    result = CliRunner().invoke(app, ["train", "--config", "tiny", "--set", "train.steps=1",
                                      "--store", str(store), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "ema.pt").is_file() and "ema.pt" in result.output
    result = CliRunner().invoke(app, ["train", "--store", str(store), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "error:" in result.output
    assert "but the model's config (use the config the store was fitted with) expects 27x256^2" in result.output

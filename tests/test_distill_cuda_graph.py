"""Distillation steps replayed as a CUDA graph against the same steps run eagerly, on a GPU.

Each method distils the tiny teacher twice (fp32, eager UNet), with and without ``train.cuda_graph``; the logged
losses, the student and its EMA must agree. The progressive run crosses a round, whose new student, EMA and
moments need a second capture; DMD's fake denoiser and its optimizer step inside the same graph. Skipped without CUDA.
"""

import json

import pytest
import torch
from tiny_models import make_tiny_models

from humanliff.training import step_graph
from humanliff.training.distill import distill

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

RUN = ("train.steps=6", "distill.teacher_steps=8", "train.log_every=1", "train.checkpoint_every=100",
       "train.precision=fp32", "train.compile=false", "train.batch_size=4", "train.lr=1e-3", "train.lr_final=1e-3")

EXTRA = {"dmd": ("distill.fake_updates=2", "distill.regression=0.25")}
"""Per method: the settings that exercise all of it (DMD: two fake updates a step and the regression)."""


@pytest.mark.parametrize(("method", "captures"), [("consistency", 1), ("progressive", 2), ("dmd", 1)])
def test_graphed_distillation_matches_eager(tmp_path, monkeypatch, method, captures):
    ema, store, _ = make_tiny_models(tmp_path)
    made = []
    capture = step_graph.capture_cuda_graph

    def counted(*args, **kwargs):
        made.append(1)
        return capture(*args, **kwargs)

    monkeypatch.setattr(step_graph, "capture_cuda_graph", counted)
    runs = {}
    for graph in (False, True):
        out = tmp_path / f"graph_{graph}"
        distill(ema, store, out, method=method, steps=2, device="cuda",
                overrides=(*RUN, f"train.cuda_graph={str(graph).lower()}", *EXTRA.get(method, ())))
        losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
        runs[graph] = losses, torch.load(out / "checkpoint.pt", weights_only=False)
    assert len(made) == captures  # the progressive round made a new graph
    (eager_losses, eager), (graphed_losses, graphed) = runs[False], runs[True]
    assert len(graphed_losses) == 6 and graphed_losses == pytest.approx(eager_losses, rel=1e-3)
    assert eager_losses[0] != pytest.approx(eager_losses[-1], rel=1e-6)  # the steps changed the student
    for key in eager["model"]:
        torch.testing.assert_close(graphed["model"][key], eager["model"][key], rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(graphed["ema"][key], eager["ema"][key], rtol=1e-3, atol=1e-5)
        if method == "dmd":  # the fake denoiser's updates are in the graph too
            torch.testing.assert_close(graphed["extra"]["fake"][key], eager["extra"]["fake"][key], rtol=1e-3,
                                       atol=1e-5)

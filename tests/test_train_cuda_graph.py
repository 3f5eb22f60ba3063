"""The diffusion step replayed as a CUDA graph against the same step run eagerly, on a GPU.

Same weights, data and draws: the losses, gradient norms, weights, EMA and optimizer state of 5 steps must
agree (fp32; atomics in cuDNN's weight gradients allow tiny differences), the learning rate must follow the
anneal inside the graph, and the checkpoint must keep a float learning rate. Skipped without CUDA.
"""

import pytest
import torch

from humanliff.config import load_config
from humanliff.training.distributed import DistInfo
from humanliff.training.train import DiffusionTrainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _run(graph: bool) -> tuple[DiffusionTrainer, list[float]]:
    cfg = load_config("tiny", [f"train.cuda_graph={str(graph).lower()}", "train.microbatch=2", "train.lr=1e-3",
                               "train.lr_final=1e-4", "train.lr_anneal_steps=4", "train.ema_rate=0.5"])
    device = torch.device("cuda")
    trainer = DiffusionTrainer(cfg, DistInfo(rank=0, world_size=1, local_rank=0, device=device))
    assert trainer.graphed is graph
    g = torch.Generator(device).manual_seed(0)
    with torch.no_grad():  # the zero-initialized convs would hide most weights from the first steps
        for p in trainer.model.parameters():
            p.copy_(0.05 * torch.randn(p.shape, device=device, generator=g))
        trainer.ema.params = [p.detach().clone() for p in trainer.model.parameters()]
    record = []
    for step in range(5):
        x0 = (torch.rand(4, 27, 16, 16, device=device, generator=g) - 0.5).contiguous(
            memory_format=torch.channels_last)
        x_cond = torch.rand(x0.shape, device=device, generator=g) - 0.5
        y = torch.tensor([0, 1, 2, 3], device=device)
        loss, grad_norm = trainer.train_step(x0, x_cond, y, keys=torch.arange(4).numpy() + 4 * step)
        record += [float(loss), float(grad_norm)]
    return trainer, record


def test_graphed_step_matches_the_eager_step():
    eager, eager_record = _run(False)
    graphed, graphed_record = _run(True)
    assert graphed.graph.graph is not None  # captured at the second step, replayed after
    assert graphed_record == pytest.approx(eager_record, rel=1e-4)
    for a, b in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(eager.ema.params, graphed.ema.params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    state_a, state_b = eager.optimizer.state_dict(), graphed.optimizer.state_dict()
    for key in state_a["state"]:
        torch.testing.assert_close(state_a["state"][key]["exp_avg_sq"], state_b["state"][key]["exp_avg_sq"],
                                   rtol=1e-4, atol=1e-12)
        assert float(state_b["state"][key]["step"]) == 5
    group = state_b["param_groups"][0]
    assert isinstance(group["lr"], float) and group["lr"] == pytest.approx(1e-4)
    assert float(graphed.lr) == pytest.approx(1e-4)  # the graph's lr followed the anneal to its end

"""The stage-A step replayed as a CUDA graph against the same step run eagerly, on a GPU.

Same data, seeds and draws (the state's generator is registered with the graph, so every replay draws
new planes, views, rays and jitter); no eager step after the first syncs with the host; the loss terms of
6 steps, the decoder's weights, the planes and their moments must agree within the fused kernel's
atomics, the learning rates must follow the decay inside the graph, and the optimizer's state dict must
keep a float learning rate. Skipped without CUDA.
"""

import numpy as np
import pytest
import torch

from humanliff.config import load_config
from humanliff.data.synth import synthesize_dataset
from humanliff.models.decoder import build_decoder
from humanliff.training.fit import load_subjects, seeded_generator, subject_names, train_views
from humanliff.training.fit_a import StageAFitter, StageAState, decoder_optimizer
from humanliff.training.fit_step import RenderLoss, plane_targets
from humanliff.training.sparse_adam import RowAdam

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _run(cfg_overrides: list[str], graph: bool, steps: int = 6) -> tuple[StageAFitter, list[list[float]]]:
    cfg = load_config("tiny", [*cfg_overrides, f"fit.cuda_graph={str(graph).lower()}"])
    device = torch.device("cuda")
    names = subject_names(cfg)
    subjects = load_subjects(cfg, names)
    rows = [(s, layer) for s in range(len(subjects)) for layer in range(4)]
    targets = plane_targets([subjects[s] for s, _ in rows], [layer for _, layer in rows],
                            train_views(subjects, cfg), device, cfg.data)
    torch.manual_seed(0)
    decoder = build_decoder(cfg.decoder).to(device)
    table = RowAdam(torch.randn(len(targets), 27, cfg.triplane.resolution, cfg.triplane.resolution,
                                generator=torch.Generator().manual_seed(1)).to(device) * cfg.fit.init_std)
    state = StageAState(names, list(range(len(names))), table, decoder, decoder_optimizer(decoder, cfg),
                        seeded_generator(device, 7))
    fitter = StageAFitter(state, RenderLoss(decoder, cfg), targets, cfg)
    assert fitter.graphed is graph
    parts = [fitter.step()]
    torch.cuda.set_sync_debug_mode("error")  # after the first step (compiles): no step reads the device
    try:
        parts += [fitter.step() for _ in range(steps - 1)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return fitter, [[float(v.mean()) for v in p.values()] for p in parts]


def test_graphed_stage_a_step_matches_the_eager_step(tmp_path):
    root = tmp_path / "data"
    synthesize_dataset(root, subjects=2, views=8, resolution=64, seed=0, workers=1)
    overrides = [f"data.root={root}", "triplane.resolution=32", "fit.batch_images=4", "fit.rays_per_image=256",
                 "fit.precision=bf16", "fit.lr_decay=1", "render.n_samples=16", "render.n_importance=16",
                 "render.fused_kernel=true"]
    eager, eager_record = _run(overrides, graph=False)
    graphed, graphed_record = _run(overrides, graph=True)
    assert graphed.graph.graph is not None  # captured at the second step, replayed after
    assert len({round(r[0], 6) for r in graphed_record}) == len(graphed_record)  # new draws every replay
    np.testing.assert_allclose(graphed_record, eager_record, rtol=2e-3, atol=1e-6)
    for a, b in zip(eager.state.decoder.parameters(), graphed.state.decoder.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=1e-4)
    for name in ("table", "exp_avg", "exp_avg_sq", "steps"):
        torch.testing.assert_close(getattr(eager.state.table, name), getattr(graphed.state.table, name),
                                   rtol=2e-3, atol=1e-4)
    group = graphed.state.optimizer.state_dict()["param_groups"][0]
    assert isinstance(group["lr"], float)
    assert float(graphed.lr[0]) == pytest.approx(group["lr"])  # the graph's lr followed the decay
    assert float(graphed.lr[0]) < graphed.cfg.fit.lr_decoder

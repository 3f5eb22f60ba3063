"""Stage A on the fused Triton field (decoder gradients from the kernel) against the torch path, on a GPU.

A short stage A on a small synthetic dataset, once per path, same seed: the held-out PSNR of each layer
must agree within noise. Skipped without CUDA (the CPU tests of the kernel are in test_fused_field.py).
"""

import pytest
import torch

from humanliff.config import load_config
from humanliff.data.synth import synthesize_dataset
from humanliff.evaluation.recon import evaluate_recon
from humanliff.runtime import fused_field
from humanliff.training.fit_a import fit_stage_a

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_stage_a_fused_matches_torch_path(tmp_path, monkeypatch):
    trained_fields = []  # fused fields built with gradients into the decoder: the path under test ran
    real = fused_field.make_fused_field

    def counting(planes, weights, *args, **kwargs):
        trained_fields.append(weights.trainable)
        return real(planes, weights, *args, **kwargs)

    monkeypatch.setattr(fused_field, "make_fused_field", counting)
    root = tmp_path / "data"
    synthesize_dataset(root, subjects=2, views=8, resolution=64, seed=0, workers=1)
    psnr = {}
    for fused in (True, False):
        cfg = load_config("tiny", [f"data.root={root}", "triplane.resolution=32", "fit.iterations_a=400",
                                   "fit.batch_images=4", "fit.rays_per_image=512", "fit.precision=bf16",
                                   "fit.checkpoint_every=0", "fit.log_every=100", "render.n_samples=32",
                                   "render.n_importance=32", f"render.fused_kernel={str(fused).lower()}"])
        run = tmp_path / f"fused_{fused}"
        trained_fields.clear()
        store = fit_stage_a(cfg, run, device="cuda")
        assert any(trained_fields) is fused, trained_fields[:4]
        metrics = evaluate_recon(cfg, store, run / "eval", device=torch.device("cuda"))
        psnr[fused] = [metrics["layers"][str(layer)]["psnr"] for layer in range(4)]
    for layer, (fast, ref) in enumerate(zip(psnr[True], psnr[False], strict=True)):
        assert ref > 15.0, (layer, psnr)  # the torch path learned something
        assert abs(fast - ref) < 1.0, (layer, psnr)

"""The benchmark's original-path re-creations compute exactly what the original code computed."""

from pathlib import Path

import numpy as np
import torch

from benchmarks.original import original_sample_from_planes, use_einsum_attention
from humanliff.models.unet import UNet

DATA = Path(__file__).parent / "data"


def test_original_sample_from_planes_matches_golden():
    g = np.load(DATA / "nineplane.npz")
    planes = torch.from_numpy(g["planes"]).float()
    out = original_sample_from_planes(planes, torch.from_numpy(g["coords"]).float())
    np.testing.assert_allclose(out.numpy(), g["features"], rtol=1e-5, atol=1e-6)
    out_box = original_sample_from_planes(planes, torch.from_numpy(g["world"]).float(),
                                          torch.from_numpy(g["box"]).float())
    np.testing.assert_allclose(out_box.numpy(), g["features_box"], rtol=1e-5, atol=1e-6)


def test_einsum_attention_unet_matches_golden():
    g = torch.load(DATA / "unet_tiny.pt", weights_only=False)
    unet = UNet(**{k: v for k, v in g["config"].items() if k in UNet.__init__.__code__.co_varnames})
    unet.load_state_dict({k: v.float() for k, v in g["state_dict_fp16_exact"].items()}, strict=True)
    use_einsum_attention(unet.eval())
    with torch.no_grad():
        out = unet(g["x"], g["timesteps"], g["x_cond"], g["y"])
    rel = (out - g["out"]).norm() / g["out"].norm()
    assert rel < 1e-5

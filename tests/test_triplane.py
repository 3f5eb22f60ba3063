"""Nine-plane feature sampling against the original's golden output (tests/data/nineplane.npz)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from humanliff.runtime.triplane import normalize_points, sample_features

DATA = Path(__file__).parent / "data" / "nineplane.npz"


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    with np.load(DATA) as d:
        out = {k: torch.from_numpy(d[k]) for k in d.files}
    out["planes"] = out["planes"].reshape(2, 27, 16, 16)  # [B,3,9,R,R] -> [B,27,R,R]
    return out


def test_golden_normalized(golden):
    feats = sample_features(golden["planes"], golden["coords"])
    assert feats.shape == (2, 777, 27)
    torch.testing.assert_close(feats, golden["features"], rtol=1e-5, atol=1e-5)


def test_golden_world_with_box(golden):
    feats = sample_features(golden["planes"], golden["world"], golden["box"])
    torch.testing.assert_close(feats, golden["features_box"], rtol=1e-5, atol=1e-5)


def test_normalize_points_maps_box_to_unit_cube(golden):
    box = golden["box"]
    corners = normalize_points(box.clone(), box)  # rows: min corner, max corner
    torch.testing.assert_close(corners, torch.tensor([-1.0, 1.0])[None, :, None].expand(2, 2, 3))


def test_gradients_reach_planes_and_points(golden):
    planes = golden["planes"].clone().requires_grad_(True)
    points = (golden["coords"].clone() * 0.9).requires_grad_(True)
    sample_features(planes, points).square().sum().backward()
    assert torch.isfinite(planes.grad).all() and planes.grad.abs().sum() > 0
    assert torch.isfinite(points.grad).all() and points.grad.abs().sum() > 0


def test_channel_layout_group_shift():
    """Group 1 of plane XY is group 0 shifted by one grid step 1/R along u (x)."""
    res = 8
    planes = torch.zeros(1, 27, res, res)
    ramp = torch.linspace(0, 1, res).expand(res, res)  # varies along the last (u) axis
    planes[0, 0] = ramp
    planes[0, 3] = ramp
    pts = torch.tensor([[[0.1, 0.2, 0.3]]])
    shifted = pts + torch.tensor([1.0 / res, 0.0, 0.0])
    f = sample_features(planes, pts)
    torch.testing.assert_close(f[0, 0, 3], sample_features(planes, shifted)[0, 0, 0])


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="planes must be"):
        sample_features(torch.zeros(1, 26, 4, 4), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="points must be"):
        sample_features(torch.zeros(2, 27, 4, 4), torch.zeros(1, 5, 3))

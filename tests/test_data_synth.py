"""The synthetic layered humans: determinism, cameras, masks, bounds, and the loader round trip."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from humanliff.config import DataConfig
from humanliff.data.bounds import read_bounds
from humanliff.data.figures import figure_bounds, random_figure
from humanliff.data.loader import load_dataset, split_views
from humanliff.data.synth import synthesize_dataset
from humanliff.errors import HumanLiffError
from humanliff.runtime.cameras import project_points
from humanliff.runtime.layers import LAYER_NAMES


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synthesize_dataset(
        tmp_path_factory.mktemp("synth") / "ds", subjects=2, views=4, resolution=32, seed=3, workers=1
    )


def test_same_seed_same_bytes_other_seed_other_humans(dataset, tmp_path):
    again = synthesize_dataset(tmp_path / "again", subjects=2, views=4, resolution=32, seed=3, workers=1)
    other = synthesize_dataset(tmp_path / "other", subjects=1, views=4, resolution=32, seed=4, workers=1)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert len(files) == 3 + 2 * (2 + 4 * 4 * 2)  # human_list.txt, synth.json and the .humanliff marker
    assert all((dataset / f).read_bytes() == (again / f).read_bytes() for f in files)
    name = "seq_000000/person-pants-shirt-shoes/img/camera0000/0000.jpg"
    assert (dataset / name).read_bytes() != (other / name).read_bytes()
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left behind


def test_layout_bounds_and_cameras(dataset):
    assert (dataset / "human_list.txt").read_text().split() == ["seq_000000", "seq_000001"]
    subject = dataset / "seq_000001"
    bounds = read_bounds(subject / "bounds.json")
    lo, hi = figure_bounds(random_figure(np.random.default_rng([3, 1])))
    np.testing.assert_allclose(bounds[0], lo - [0.05, 0.10, 0.05], atol=1e-5)
    np.testing.assert_allclose(bounds[1], hi + [0.05, 0.10, 0.05], atol=1e-5)
    assert 1.5 <= hi[1] - lo[1] <= 1.95 and np.abs(lo + hi).max() < 1e-6  # a human, centred at the origin
    cams = json.loads((subject / "cameras.json").read_text())
    assert sorted(cams) == [f"camera{v:04d}" for v in range(4)]
    K, R, T = (torch.tensor([cams[f"camera{v:04d}"][k] for v in range(4)]) for k in "KRT")
    pixels, depth = project_points(K, R, T, torch.zeros(4, 1, 3))  # the box centre is the image centre
    assert torch.allclose(pixels, torch.full_like(pixels, 16.0), atol=1e-3) and (depth > 1.5).all()


def test_masks_agree_with_images_and_layers_grow(dataset):
    subjects = load_dataset(DataConfig(root=str(dataset)), progress=False)
    for s in subjects:
        assert s.images.shape == (4, 4, 32, 32, 3) and s.masks.shape == (4, 4, 32, 32)
        raw = np.stack(
            [
                np.asarray(Image.open(dataset / s.name / layer / "img" / f"camera{v:04d}" / "0000.jpg"))
                for layer in LAYER_NAMES
                for v in range(4)
            ]
        ).reshape(4, 4, 32, 32, 3)
        assert raw[~s.masks].max() <= 40  # black background (JPEG ringing only)
        assert (raw[s.masks].max(axis=-1) >= 10).mean() > 0.98  # mask pixels are lit (edges blend with black)
        assert (s.images[~s.masks] == 0).all()
        area = s.masks.sum(axis=(1, 2, 3))
        assert 0.05 < area[0] / s.masks[0].size < 0.6
        assert area[0] <= area[1] <= area[2] * 1.02 and area[2] <= area[3] * 1.02  # clothes add, never remove
        changed = (np.abs(s.images[3].astype(int) - s.images[0].astype(int)).sum(-1) > 60) & s.masks[0]
        assert changed.sum() > 0.3 * s.masks[0].sum()  # clothing colours differ clearly from skin


def test_loader_round_trips_the_generated_files(dataset):
    cfg = DataConfig(root=str(dataset), max_subjects=1, image_scaling=0.5)
    (subject,) = load_dataset(cfg, progress=False)
    cams = json.loads((dataset / "seq_000000" / "cameras.json").read_text())
    np.testing.assert_allclose(subject.K[2, :2], np.asarray(cams["camera0002"]["K"])[:2] * 0.5, rtol=1e-6)
    np.testing.assert_allclose(subject.R[2], cams["camera0002"]["R"], rtol=1e-6)
    assert subject.view_ids == [0, 1, 2, 3] and subject.images.shape == (4, 4, 16, 16, 3)
    assert subject.bounds.dtype == np.float32 and subject.masks.dtype == bool


def test_split_views():
    train, test = split_views(10, 4)
    assert test.tolist() == [0, 4, 8] and train.tolist() == [1, 2, 3, 5, 6, 7, 9]
    assert split_views(3, 0)[1].size == 0
    with pytest.raises(HumanLiffError, match="holdout_every"):
        split_views(3, 1)

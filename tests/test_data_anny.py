"""anny bodies with mesh garments: the garment geometry and the mesh renderer on a sphere (no anny needed),
the one-line error without anny, and a tiny anny dataset (skipped where anny is not installed)."""

import numpy as np
import pytest
import torch
import trimesh
from click.testing import CliRunner

from humanliff.cli import app
from humanliff.config import DataConfig
from humanliff.data import anny_body
from humanliff.data.anny_body import AnnyBody
from humanliff.data.check import check_dataset
from humanliff.data.garments import HEM_WIDTH, MeshPart, garment, vertex_normals
from humanliff.data.loader import load_dataset
from humanliff.data.primitives import Material
from humanliff.data.synth import synthesize_dataset
from humanliff.errors import HumanLiffError
from humanliff.runtime.cameras import sphere_cameras

RED, DARK = Material((0.9, 0.1, 0.1)), Material((0.2, 0.05, 0.05))


def _sphere_body() -> AnnyBody:
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    return AnnyBody(np.asarray(mesh.vertices), np.asarray(mesh.faces, dtype=np.int64),
                    np.zeros(len(mesh.vertices), dtype=int), {}, {})


def test_garment_is_an_offset_surface_with_a_rim_and_a_hem_band():
    body = _sphere_body()
    normals = vertex_normals(body.vertices, body.faces)
    cloth, hem = garment(body, normals, body.vertices[:, 1] > 0.0, 0.02, 1, RED, DARK)
    assert cloth.layer == hem.layer == 1 and cloth.material is RED and hem.material is DARK
    outer = cloth.vertices[np.unique(cloth.faces)]
    np.testing.assert_allclose(np.linalg.norm(outer, axis=1), 0.52, atol=2e-3)  # the gap, a smooth hem line
    assert outer[:, 1].min() > 0.0  # only over the covered vertices
    radii = np.linalg.norm(hem.vertices[np.unique(hem.faces)], axis=1)
    assert radii.min() == pytest.approx(0.504, abs=2e-3) and radii.max() == pytest.approx(0.52, abs=2e-3)
    band = hem.vertices[np.unique(hem.faces)]
    assert band[:, 1].max() < 0.5 * HEM_WIDTH + 0.1  # the hem hugs the open edge (y near 0), not the top
    top = trimesh.Trimesh(cloth.vertices, np.concatenate([cloth.faces, hem.faces]), process=False)
    assert len(trimesh.grouping.group_rows(np.sort(top.edges, axis=1), require_count=1)) > 0  # open inside


def test_mesh_layers_nest_and_the_outer_garment_is_seen():
    pytest.importorskip("embreex")
    from humanliff.data.meshcast import LayeredScene

    body = _sphere_body()
    normals = vertex_normals(body.vertices, body.faces)
    skin = MeshPart(body.vertices, body.faces, normals, 0, Material((0.8, 0.7, 0.6)))
    parts = [skin, *garment(body, normals, body.vertices[:, 1] > 0.1, 0.03, 1, RED, DARK)]
    K, R, T = (a.numpy() for a in sphere_cameras(torch.tensor([[-0.6] * 3, [0.6] * 3]), 1, 32))
    images, masks = LayeredScene(parts).render(K[0], R[0], T[0], 32)
    assert images.shape == (4, 32, 32, 3) and masks.shape == (4, 32, 32)
    assert (masks[1] >= masks[0]).all() and masks[1].sum() > masks[0].sum()  # the garment adds, never removes
    assert (masks[3] == masks[1]).all() and (images[3] == images[1]).all()  # nothing on layers 2 and 3
    reddish = (images[1, ..., 0].astype(int) - images[1, ..., 1] > 60) & masks[1]
    assert 0.1 < reddish.sum() / masks[1].sum() < 0.7  # the cloth covers one side, the skin shows elsewhere
    assert (images[~masks] == 0).all()


def test_bodies_anny_without_anny_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setattr(anny_body, "anny_available", lambda: False)
    result = CliRunner().invoke(app, ["data", "synth", "--config", "tiny", "--bodies", "anny",
                                      "--out", str(tmp_path / "ds")])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --bodies: anny is not installed (pip install humanliff[anny])"
    assert not (tmp_path / "ds").exists()


def test_unknown_bodies_name_the_choices(tmp_path):
    with pytest.raises(HumanLiffError, match="bodies must be one of primitives, anny"):
        synthesize_dataset(tmp_path / "ds", subjects=1, views=1, resolution=8, seed=0, bodies="smplx")


@pytest.fixture(scope="module")
def anny_dataset(tmp_path_factory):
    if not anny_body.anny_available():
        pytest.skip("anny is not installed (pip install humanliff[anny])")
    return synthesize_dataset(tmp_path_factory.mktemp("anny") / "ds", subjects=1, views=4, resolution=32,
                              seed=5, workers=1, bodies="anny")


def test_anny_dataset_checks_loads_and_its_layers_nest(anny_dataset):
    problems, count = check_dataset(DataConfig(root=str(anny_dataset)), progress=False)
    assert problems == [] and count == 1
    (s,) = load_dataset(DataConfig(root=str(anny_dataset)), progress=False)
    assert s.images.shape == (4, 4, 32, 32, 3) and s.masks.shape == (4, 4, 32, 32)
    height = s.bounds[1, 1] - s.bounds[0, 1] - 0.2  # SynBody's y padding
    assert 1.4 < height < 2.15 and np.abs(s.bounds.sum(axis=0)).max() < 0.25  # a person, centred
    for layer in range(1, 4):
        assert (s.masks[layer] >= s.masks[layer - 1]).all()  # each layer's mask contains the one below
    area = s.masks.sum(axis=(1, 2, 3))
    assert 0.03 < area[0] / s.masks[0].size < 0.5 and area[1] > area[0]
    changed = np.abs(s.images[3].astype(int) - s.images[0].astype(int)).sum(-1) > 60
    assert changed[s.masks[0]].mean() > 0.3  # clothes over much of the body, in other colours than skin
    assert (s.images[~s.masks] == 0).all()


def test_anny_dataset_is_deterministic_by_seed(anny_dataset, tmp_path):
    again = synthesize_dataset(tmp_path / "again", subjects=1, views=4, resolution=32, seed=5, workers=1,
                               bodies="anny")
    files = sorted(p.relative_to(anny_dataset) for p in anny_dataset.rglob("*") if p.is_file())
    assert len(files) == 3 + 2 + 4 * 4 * 2  # marker, human_list.txt, synth.json, bounds, cameras, 4 x 4 views x 2
    assert all((anny_dataset / f).read_bytes() == (again / f).read_bytes() for f in files)

"""Output writers: contact sheet, view grid, turntable GIF/MP4, PLY/GLB meshes with vertex colours."""

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh

from humanliff.config import load_config
from humanliff.errors import HumanLiffError
from humanliff.outputs.images import contact_sheet, save_png, to_uint8, view_grid
from humanliff.outputs.meshes import write_mesh
from humanliff.outputs.video import mp4_available, write_video
from humanliff.outputs.writer import write_generation
from humanliff.runtime.layers import LAYER_TITLES


def test_to_uint8_rounds_and_clips():
    out = to_uint8(np.array([[-0.5, 0.0, 0.5], [1.0, 2.0, 1 / 255]], np.float32))
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 0, 128], [255, 255, 1]]


def test_view_grid_places_images_row_major():
    images = np.stack([np.full((4, 6, 3), v, np.uint8) for v in (10, 20, 30, 40, 50)])
    grid = view_grid(images)
    assert grid.shape == (2 * 4, 3 * 6, 3)
    assert grid[0, 0, 0] == 10 and grid[0, 6, 0] == 20 and grid[4, 0, 0] == 40 and grid[4, 6, 0] == 50
    assert grid[4, 12, 0] == 0
    assert view_grid(images, columns=5).shape == (4, 30, 3)
    with pytest.raises(HumanLiffError, match="N, H, W, 3"):
        view_grid(np.zeros((4, 6, 3)))


def test_contact_sheet_layout_and_titles(tmp_path):
    rows, cols, h, w = 2, 4, 40, 30
    images = np.zeros((rows, cols, h, w, 3), np.uint8)
    images[1, 3] = 200
    sheet = contact_sheet(images, list(LAYER_TITLES))
    height, width, _ = sheet.shape
    margin, bar = width - cols * w, height - rows * h
    assert margin >= 48 and bar >= 16
    assert (sheet[bar + h:, margin + 3 * w:] == 200).all()
    assert (sheet[bar:bar + h, margin:margin + w] == 0).all()
    title_bar = sheet[:bar, margin:]
    assert (title_bar < 128).any(), "column titles are drawn"
    assert (sheet[bar:, :margin] < 128).any(), "row labels are drawn"
    path = save_png(tmp_path / "sheet.png", sheet)
    assert np.array_equal(iio.imread(path), sheet)
    with pytest.raises(HumanLiffError, match="3 column titles for 4 columns"):
        contact_sheet(images, list(LAYER_TITLES[:3]))


def test_gif_round_trip(tmp_path):
    frames = np.zeros((3, 16, 20, 3), np.uint8)
    frames[1, :, :10] = 255
    path = write_video(tmp_path / "turn.gif", frames, fps=10)
    back = iio.imread(path)
    assert back.shape == (3, 16, 20, 3)
    assert back[1, 0, 0, 0] == 255 and back[0, 0, 0, 0] == 0
    meta = iio.immeta(path)
    assert meta["loop"] == 0 and meta["duration"] == 100
    assert list(tmp_path.iterdir()) == [path]


def test_video_errors(tmp_path):
    with pytest.raises(HumanLiffError, match="unknown video type '.avi'"):
        write_video(tmp_path / "turn.avi", np.zeros((2, 4, 4, 3)))
    with pytest.raises(HumanLiffError, match="expected frames"):
        write_video(tmp_path / "turn.gif", np.zeros((4, 4, 3)))
    if not mp4_available():
        with pytest.raises(HumanLiffError, match="imageio-ffmpeg"):
            write_video(tmp_path / "turn.mp4", np.zeros((2, 4, 4, 3)))
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not mp4_available(), reason="imageio-ffmpeg is not installed")
def test_mp4_written(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (5, 32, 48, 3), dtype=np.uint8)
    path = write_video(tmp_path / "turn.mp4", frames)
    assert path.stat().st_size > 0
    assert iio.imread(path, plugin="FFMPEG", index=None).shape[1:] == (32, 48, 3)


@pytest.mark.parametrize("suffix", [".ply", ".glb"])
def test_mesh_round_trip_with_colours(tmp_path, suffix):
    sphere = trimesh.creation.icosphere(subdivisions=1)
    colors = (np.abs(sphere.vertices) * 255).astype(np.uint8)
    path = write_mesh(tmp_path / f"layer{suffix}", sphere.vertices, sphere.faces, colors)
    back = trimesh.load(path, force="mesh", process=False)
    assert back.vertices.shape == (42, 3) and back.faces.shape == (80, 3)
    np.testing.assert_allclose(back.vertices, sphere.vertices, atol=1e-6)
    np.testing.assert_array_equal(back.visual.vertex_colors[:, :3], colors)


def test_mesh_errors(tmp_path):
    v = np.zeros((3, 3))
    f = np.array([[0, 1, 2]])
    with pytest.raises(HumanLiffError, match="unknown mesh type '.stl'"):
        write_mesh(tmp_path / "m.stl", v, f)
    with pytest.raises(HumanLiffError, match="mesh is empty"):
        write_mesh(tmp_path / "m.ply", v, np.zeros((0, 3), np.int64))
    with pytest.raises(HumanLiffError, match="colours"):
        write_mesh(tmp_path / "m.ply", v, f, np.zeros((2, 3)))
    assert not list(tmp_path.iterdir())


def sphere_field_factory(planes):
    """A field without a decoder: a ball whose radius grows with the planes' mean, coloured by position."""
    radius = 0.3 + 0.1 * planes.mean()

    def field(points, viewdirs=None):
        sigma_raw = 20.0 * (radius - points.norm(dim=-1, keepdim=True))
        return (None if viewdirs is None else 4.0 * points), sigma_raw

    return field


@pytest.mark.parametrize(("views", "grid_cells"), [(2, (1, 2)), (3, (2, 2))])
def test_write_generation_folder(tmp_path, views, grid_cells):
    cfg = load_config("tiny", [f"sample.views={views}"])
    layers, batch = [1, 2, 3], 2
    planes = torch.arange(len(layers) * batch, dtype=torch.float32).reshape(len(layers), batch, 1, 1, 1)
    planes = planes.expand(-1, -1, 27, 4, 4) / 4.0
    bounds = torch.tensor([[-1.0, -2.0, -0.5], [1.0, 2.0, 0.5]])
    out = tmp_path / "gen"
    result = write_generation(out, planes, layers, sphere_field_factory, bounds, cfg.sample, cfg.render,
                              progress=False)
    assert result["folder"] == out and not list(tmp_path.glob(".gen.*"))
    saved = np.load(result["planes"])
    assert saved["planes"].dtype == np.float16 and saved["planes"].shape == (3, 2, 27, 4, 4)
    assert saved["layers"].tolist() == layers and np.array_equal(saved["bounds"], bounds.numpy())
    meta = json.loads(result["metadata"].read_text())
    assert meta["titles"] == ["+pants", "+shirt", "+shoes"] and meta["sample"]["views"] == views
    size = cfg.sample.image_size
    assert len(result["views"]) == batch * len(layers) * cfg.sample.views
    assert all(iio.imread(p).shape == (size, size, 3) for p in result["views"])
    grid = iio.imread(out / "layer_2" / "human_001.png")
    assert grid.shape == (grid_cells[0] * size, grid_cells[1] * size, 3)
    front = iio.imread(out / "layer_1" / "views" / "human_000_00.png")
    assert front[size // 2, size // 2].max() > 50 and front[0, 0].max() == 0, "a lit ball on black"
    sheet = iio.imread(result["contact_sheet"])
    assert sheet.shape[0] > batch * size and sheet.shape[1] > len(layers) * size
    gifs = [p for p in result["turntables"] if p.suffix == ".gif"]
    assert [p.name for p in gifs] == ["human_000.gif", "human_001.gif"]
    assert iio.imread(gifs[0]).shape == (cfg.sample.turntable_frames, size, len(layers) * size, 3)
    assert len(result["meshes"]) == 2 * batch * len(layers)
    small = trimesh.load(out / "layer_1" / "human_000.ply", process=False)
    big = trimesh.load(out / "layer_3" / "human_001.glb", force="mesh", process=False)
    assert len(small.faces) > 0 and small.visual.vertex_colors.shape == (len(small.vertices), 4)
    assert small.extents.max() < big.extents.max(), "the ball grows with the planes"
    np.testing.assert_array_less(bounds[0].numpy() - 1e-4, big.bounds[0])


def test_write_generation_rejects_mismatched_layers(tmp_path):
    cfg = load_config("tiny")
    with pytest.raises(HumanLiffError, match=r"planes must be \[L=2, B, C, R, R\], got \[3, 1, 27, 4, 4\]"):
        write_generation(tmp_path / "gen", torch.zeros(3, 1, 27, 4, 4), [0, 1], sphere_field_factory,
                         torch.tensor([[-1.0] * 3, [1.0] * 3]), cfg.sample, cfg.render)
    assert not list(tmp_path.iterdir())


def test_writer_imports_no_training_code():
    code = ("import sys, humanliff.outputs.writer; "
            "print(sorted(m for m in sys.modules if m.startswith(('humanliff.models', 'humanliff.training', "
            "'humanliff.data'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

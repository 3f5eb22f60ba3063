"""Meshes and turntables as assets: cleaned surfaces, the box-wall warning, the Khronos glTF validator,
turntable timing and backgrounds."""

import json
import logging
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from humanliff.config import load_config
from humanliff.outputs.images import composite, opaque
from humanliff.outputs.meshes import surface_mesh, write_mesh
from humanliff.outputs.video import write_video
from humanliff.outputs.writer import turntable_fps

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
VALIDATE_JS = """
const v = require('gltf-validator'); const fs = require('fs');
v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[1])))
 .then(r => console.log(JSON.stringify(r.issues))).catch(e => { console.error(String(e)); process.exit(2); });
"""


def blobs_field(points, viewdirs=None):
    """Density: a big sphere (radius 0.45 at level 10), a small one (radius 0.07 at x = 0.75) and a haze
    rising from 2 to 4 along x; colour = the view direction."""
    big = 200.0 * (0.5 - points.norm(dim=-1, keepdim=True))
    small = 200.0 * (0.12 - (points - torch.tensor([0.75, 0.0, 0.0])).norm(dim=-1, keepdim=True))
    sigma = torch.maximum(torch.maximum(big, small), 3.0 + points[..., :1])
    return (None if viewdirs is None else 4.0 * viewdirs), sigma


def test_surface_mesh_keeps_the_largest_components_and_warns_at_the_walls(caplog):
    def parts(level, keep):
        mesh = surface_mesh(blobs_field, BOX, 48, level, keep)
        return 0 if mesh is None else len(mesh.split(only_watertight=False))

    assert parts(10.0, 0.0) == 2 and parts(10.0, 0.1) == 1  # the small sphere has ~2.5 % of the faces
    assert surface_mesh(blobs_field, BOX, 24, 200.0, 0.0) is None  # the density never reaches 200
    with caplog.at_level(logging.WARNING):
        surface_mesh(blobs_field, BOX, 24, 10.0, 0.0, name="clean")
        assert "touches the box's walls" not in caplog.text
        surface_mesh(blobs_field, BOX, 24, 3.0, 0.0, name="hazy")  # the haze crosses 3 at x = 0, wall to wall
    assert "hazy: the surface at level 3 touches the box's walls" in caplog.text


def _validator() -> str:
    """The node command that can require ``gltf-validator`` (skip locally, fail on CI, when absent)."""
    node = shutil.which("node")
    found = node is not None and subprocess.run(
        [node, "-e", "require('gltf-validator')"], env=_node_env(), capture_output=True).returncode == 0
    if not found:
        reason = "needs node and the npm package gltf-validator (npm install -g gltf-validator; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return node


def _node_env() -> dict[str, str]:
    npm = shutil.which("npm")
    root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True).stdout.strip() if npm else ""
    return {**os.environ, "NODE_PATH": root}


def test_glb_passes_the_khronos_gltf_validator(tmp_path):
    node = _validator()
    mesh = surface_mesh(blobs_field, BOX, 32, 10.0, 0.05)
    glb = write_mesh(tmp_path / "human.glb", mesh.vertices, mesh.faces, mesh.visual.vertex_colors[:, :3])
    proc = subprocess.run([node, "-e", VALIDATE_JS, str(glb)], env=_node_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    issues = json.loads(proc.stdout)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]


def test_turntable_lasts_its_seconds_and_backgrounds(tmp_path):
    sample = load_config(None, ["sample.turntable_frames=24"]).sample
    assert sample.turntable_seconds == 3.0 and turntable_fps(sample) == 8.0
    rgb = np.zeros((2, 4, 4, 3), np.float32)
    acc = np.zeros((2, 4, 4), np.float32)
    rgb[:, 1:3, 1:3], acc[:, 1:3, 1:3] = 0.5, 1.0  # an opaque grey square on an empty background
    white, transparent = composite(rgb, acc, "white"), composite(rgb, acc, "transparent")
    assert (white[:, 0, 0] == 255).all() and (white[:, 1, 1] == 128).all()
    assert transparent.shape == (2, 4, 4, 4) and (transparent[:, 0, 0, 3] == 0).all()
    assert (opaque(transparent) == white).all() and (composite(rgb, acc, "black")[:, 0, 0] == 0).all()
    frames = np.concatenate([transparent, transparent])
    frames[1, 1, 1], frames[2, 2, 2], frames[3, 1, 2] = (255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255)
    gif = write_video(tmp_path / "t.gif", frames, fps=turntable_fps(sample))
    with Image.open(gif) as im:
        assert abs(im.info["duration"] - 125) <= 10 and "transparency" in im.info  # GIF counts in 10 ms
        assert im.n_frames == 4

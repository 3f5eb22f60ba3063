"""``humanliff view``: targets, the browser camera, live rendering on the CPU, and the viser page in chromium."""

import io
import math
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from tiny_models import make_tiny_models
from viewer_data import figure_field, tiny_generation

from humanliff.cli import app
from humanliff.config import RenderConfig
from humanliff.errors import HumanLiffError
from humanliff.runtime.cameras import look_at
from humanliff.viewer.live import Placed, browser_camera, render_placed
from humanliff.viewer.scene import open_target
from humanliff.viewer.server import CPU_NOTE, start_viewer


@pytest.fixture(scope="module")
def generation(tmp_path_factory):
    return tiny_generation(tmp_path_factory.mktemp("gen") / "gen", humans=2)["folder"]


def _viser_camera(position, target):
    """A viser camera (camera-to-world ``wxyz``, OpenCV axes) at ``position`` looking at ``target``."""
    from viser.transforms import SO3

    R, _ = look_at(torch.tensor(position), torch.tensor(target))
    return SO3.from_matrix(R.T.double().numpy()).wxyz


def test_browser_camera_projects_like_look_at():
    position, target = (0.5, 0.4, 3.0), (0.1, 0.0, 0.0)
    K, R, T, height, width = browser_camera(_viser_camera(position, target), position, math.radians(50), 1.5, 200)
    assert (height, width) == (200, 300)
    R_ref, T_ref = look_at(torch.tensor(position), torch.tensor(target))
    torch.testing.assert_close(R, R_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(T, T_ref, atol=1e-5, rtol=0)
    uvw = K @ (R @ torch.tensor(target) + T)
    torch.testing.assert_close(uvw[:2] / uvw[2], torch.tensor([150.0, 100.0]), atol=1e-3, rtol=0)
    above = K @ (R @ torch.tensor([0.1, 0.5, 0.0]) + T)
    assert above[1] / above[2] < 100, "world up is up in the image"
    assert K[1, 1] == pytest.approx(100 / math.tan(math.radians(25)))


def test_render_placed_puts_humans_side_by_side():
    bounds = torch.tensor([[-0.4, -0.9, -0.25], [0.4, 0.9, 0.25]])
    planes = [torch.full((1, 27, 4, 4), float(k)) for k in (0, 2)]
    humans = [Placed(figure_field(p), bounds, None, torch.tensor([x, 0.0, 0.0]))
              for p, x in zip(planes, (-0.6, 0.6), strict=True)]
    position = (0.0, 0.0, 4.0)
    K, R, T, height, width = browser_camera(_viser_camera(position, (0.0, 0.0, 0.0)), position, math.radians(40),
                                            1.0, 48)
    cfg = RenderConfig(n_samples=24, n_importance=8, occupancy_resolution=0)
    image = render_placed(humans, K, R, T, height, width, cfg).astype(int)
    left, right, middle = image[:, :18], image[:, 30:], image[:, 22:26]
    assert left.max() > 100 and right.max() > 100 and middle.max() < 30
    assert left.reshape(-1, 3).max(0)[2] < right.reshape(-1, 3).max(0)[0], "body left, +shirt (red) right"


def test_open_targets(generation, tmp_path):
    view = open_target(str(generation), device="cpu")
    assert view.titles == ["body", "+pants", "+shirt", "+shoes"] and len(view.humans) == 2
    assert view.mesh(1, 2).visual.vertex_colors.shape[1] == 4
    _, store, _ = make_tiny_models(tmp_path)
    whole = open_target(str(store), device="cpu", mesh_resolution=16)
    assert [h.name for h in whole.humans] == ["a", "b"] and whole.decoder is not None
    one = open_target(f"{store}:b", device="cpu", mesh_resolution=16)
    assert [h.name for h in one.humans] == ["b"]
    torch.testing.assert_close(one.humans[0].bounds, whole.humans[1].bounds)
    mesh = one.mesh(0, 0)
    assert mesh is None or len(mesh.faces) > 0
    with pytest.raises(HumanLiffError, match="not a generation folder"):
        open_target(str(tmp_path / "nothing"))


def _shot(page):
    return np.asarray(Image.open(io.BytesIO(page.screenshot(timeout=90_000))).convert("RGB"), np.int16)


def _until(condition, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_view_in_chromium(browser, generation, tmp_path):
    viewer = start_viewer(open_target(str(generation), device="cpu"), "127.0.0.1", 0, tmp_path / "saved")
    try:
        assert sorted(viewer.meshes) == [(h, k) for h in range(2) for k in range(4)], "a mesh per human and layer"
        assert [k for (_, k), m in viewer.meshes.items() if m.visible] == [3, 3]
        page = browser.new_page(viewport={"width": 1100, "height": 640})
        page.goto(viewer.url)
        _until(lambda: viewer.server.get_clients())
        client = next(iter(viewer.server.get_clients().values()))
        page.get_by_text(CPU_NOTE).wait_for()
        for label in ("humans", "layer", "overlay", "save PNG"):
            assert page.get_by_text(label, exact=True).count() >= 1, label
        uvw = browser_camera(client.camera.wxyz, client.camera.position, client.camera.fov, 1.0, 100)
        K, R, T = uvw[:3]
        centre = K @ (R @ torch.tensor(client.camera.look_at, dtype=torch.float32) + T)
        assert centre[2] > 0 and torch.allclose(centre[:2] / centre[2], torch.tensor([50.0, 50.0]), atol=0.5)
        page.wait_for_timeout(500)
        shoes = _shot(page)

        number = page.locator("input.mantine-NumberInput-input").first
        number.fill("0")
        number.press("Enter")
        _until(lambda: [k for (_, k), m in viewer.meshes.items() if m.visible] == [0, 0])  # refresh runs in a pool
        page.wait_for_timeout(500)
        body = _shot(page)
        assert np.abs(body - shoes).mean() > 0.5, "the layer slider changes the picture"

        page.locator(f"[id='{viewer.overlays[3]._impl.uuid}']").click()
        _until(lambda: sorted(k for k, g in viewer.ghosts.items() if g.visible) == [(0, 3), (1, 3)])
        page.wait_for_timeout(500)
        assert np.abs(_shot(page) - body).mean() > 0.5, "an overlay changes the picture"

        viewer.picker.value = "human 1"
        _until(lambda: viewer.frames[1].visible and not viewer.frames[0].visible)
        assert np.allclose(viewer.frames[1].position, -viewer.view.humans[1].bounds.mean(0).numpy()), "alone, centred"

        page.get_by_role("button", name="save PNG").click()
        _until(lambda: list((tmp_path / "saved").glob("*.png")))
        saved = np.asarray(Image.open(next((tmp_path / "saved").glob("*.png"))))
        assert saved.shape[:2] == (client.camera.image_height, client.camera.image_width) and saved.std() > 5
        page.close()
    finally:
        viewer.close()


def test_live_rendering_follows_the_browser_camera(browser, tmp_path):
    """The CUDA-only live path, forced on the CPU: the GUI offers it and frames come from the browser camera."""
    _, store, _ = make_tiny_models(tmp_path)
    viewer = start_viewer(open_target(str(store), device="cpu", mesh_resolution=16), "127.0.0.1", 0, tmp_path,
                          live=True)
    try:
        assert viewer.mode.value == "volume rendering" and not any(m.visible for m in viewer.meshes.values())
        viewer.resolution.value = 128
        page = browser.new_page(viewport={"width": 1100, "height": 640})
        page.goto(viewer.url)
        _until(lambda: viewer.stats.content.startswith("live: "), seconds=60)
        assert " x 128 in " in viewer.stats.content
        for label in ("show", "resolution"):
            assert page.get_by_text(label, exact=True).count() >= 1, label
        viewer.mode.value = "meshes"
        _until(lambda: all(m.visible for (_, k), m in viewer.meshes.items() if k == 3))
        page.close()
    finally:
        viewer.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_view_command_ends_cleanly_on_ctrl_c(browser, generation, tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:  # a file, not a pipe: a full pipe would stall the server's logging
        proc = subprocess.Popen([sys.executable, "-m", "humanliff.cli", "view", str(generation), "--port",
                                 str(port), "--device", "cpu"], stdout=subprocess.PIPE, stderr=stderr, text=True,
                                env=env)
        try:
            for line in proc.stdout:
                if "humanliff view: http://" in line:
                    break
            assert f"http://127.0.0.1:{port}" in line
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}")
            # the server's own log says when the page's websocket is up (generous: CI runs two tests at once)
            _until(lambda: "client 0 connected" in log.read_text(), seconds=180)
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
            page.close()
        finally:
            if proc.poll() is None:
                proc.kill()
    err = log.read_text()
    assert proc.returncode == 0, err
    assert "client 0 connected" in err and "humanliff view: stopped" in err and "Traceback" not in err


def test_view_command_port_taken(generation):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["view", str(generation), "--port", str(port), "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (f"error: --port {port}: cannot listen on 127.0.0.1:{port} "
                                                      f"(address already in use); pick another port")

"""``humanliff view``: a viser server with a target's humans, their per-layer meshes and, on CUDA, the live
volume rendering of their tri-planes from the browser's camera.

The page holds: a picker (all humans side by side, or one), a layer slider (body .. shoes) with one
overlay checkbox per layer (an overlaid layer is drawn as a translucent ghost), on CUDA a choice between
meshes and the live rendering (shown as the background image) with its resolution, and a button that
saves the current view as a PNG (on the server, and as a download in the browser).
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from pathlib import Path

import numpy as np
import torch
import viser

from humanliff.errors import HumanLiffError
from humanliff.outputs.images import save_png
from humanliff.runtime.field import Field
from humanliff.viewer.live import Placed, browser_camera, render_placed
from humanliff.viewer.scene import ViewTarget

log = logging.getLogger(__name__)

ALL_HUMANS = "all, side by side"
MAX_SIDE_BY_SIDE = 8
"""Targets with more humans than this are shown one at a time."""
MODES = ("volume rendering", "meshes")
GHOST_OPACITY = 0.3
GHOST_COLOURS = ((235, 235, 235), (90, 150, 255), (255, 130, 90), (120, 220, 130))
SPACING = 1.3
"""Distance between humans side by side, in widths of the widest box."""
FOV_DEG = 45.0
CPU_NOTE = "Live volume rendering needs CUDA: running on the CPU, this page shows the meshes only."
NO_DECODER_NOTE = "No decoder to render the tri-planes live (pass --store): this page shows the meshes only."


def check_port(host: str, port: int) -> None:
    """Raise a one-line ``--port`` error when ``host:port`` cannot be listened on (viser would move on)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise HumanLiffError(f"--port {port}: cannot listen on {host}:{port} ({reason}); "
                                 f"pick another port") from exc


class Viewer:
    """The GUI and scene of one server (shared by its clients); live rendering runs in its own thread."""

    def __init__(self, view: ViewTarget, server: viser.ViserServer, save_dir: Path, live: bool | None = None
                 ) -> None:
        self.view, self.server, self.save_dir = view, server, save_dir
        self.live = (view.device.type == "cuda" if live is None else live) and view.decoder is not None
        self.meshes: dict[tuple[int, int], viser.GlbHandle] = {}
        self.ghosts: dict[tuple[int, int], viser.MeshHandle] = {}
        self.frames: dict[int, viser.FrameHandle] = {}
        self.offsets: dict[int, np.ndarray] = {}
        self._fields: dict[tuple[int, int], tuple[Field, torch.Tensor | None]] = {}
        self._dirty: set[int] = set()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._lock = threading.RLock()
        self._saved = 0
        server.scene.set_up_direction("+y")
        server.gui.configure_theme(dark_mode=True, show_share_button=False)
        self._build_gui()
        self._framed: list[int] = []
        self.refresh()
        server.on_client_connect(self._on_connect)
        self._thread = threading.Thread(target=self._render_loop, name="live-render", daemon=True)
        if self.live:
            self._thread.start()

    # -- GUI -------------------------------------------------------------------------------------------
    def _build_gui(self) -> None:
        gui, view = self.server.gui, self.view
        n, titles = len(view.humans), view.titles
        gui.add_markdown(f"**{view.title}**: {n} human{'s' * (n != 1)}, layers {', '.join(titles)}")
        if not self.live:
            gui.add_markdown(NO_DECODER_NOTE if view.decoder is None and view.device.type == "cuda" else CPU_NOTE)
        names = [h.name for h in view.humans]
        options = [ALL_HUMANS, *names] if 1 < n <= MAX_SIDE_BY_SIDE else names
        extracted = any(h.mesh_files is None for h in view.humans)  # a store: start with one, meshes take time
        self.picker = gui.add_dropdown("humans", options, initial_value=options[int(extracted and len(options) > n)])
        last = len(titles) - 1
        self.layer = gui.add_slider("layer", 0, max(last, 1), 1, last, disabled=last == 0,
                                    marks=tuple((k, t) for k, t in enumerate(titles)), hint="body .. shoes")
        with gui.add_folder("overlay"):
            self.overlays = [gui.add_checkbox(t, False, hint=f"show {t} as a translucent ghost") for t in titles]
        self.mode = self.resolution = self.stats = None
        if self.live:
            self.mode = gui.add_dropdown("show", MODES, initial_value=MODES[0])
            self.resolution = gui.add_slider("resolution", 128, 1024, 64, 512, hint="live image height, pixels")
            self.stats = gui.add_markdown("waiting for the browser camera")
            for control in (self.mode, self.resolution):
                control.on_update(lambda _: self.refresh())
        self.save = gui.add_button("save PNG", hint=f"save the view (also into {self.save_dir})")
        self.save.on_click(lambda event: self.save_png(event.client))
        for control in (self.picker, self.layer, *self.overlays):
            control.on_update(lambda _: self.refresh())

    def shown(self) -> list[int]:
        """Indices of the humans on screen."""
        if self.picker.value == ALL_HUMANS:
            return list(range(len(self.view.humans)))
        return [[h.name for h in self.view.humans].index(self.picker.value)]

    def layer_index(self) -> int:
        return min(int(self.layer.value), len(self.view.layers) - 1)

    def _layout(self, shown: list[int]) -> dict[int, np.ndarray]:
        """Offsets (scene = world + offset) that put the shown humans side by side, centred on the origin."""
        boxes = {h: self.view.humans[h].bounds.numpy().astype(np.float64) for h in shown}
        spacing = SPACING * max(b[1, 0] - b[0, 0] for b in boxes.values())
        return {h: np.array([(j - (len(shown) - 1) / 2) * spacing, 0.0, 0.0]) - boxes[h].mean(axis=0)
                for j, h in enumerate(shown)}

    def _place_camera(self, shown: list[int]) -> None:
        """Frame the shown humans: the initial camera ("Reset View") and every connected client's."""
        boxes = [self.view.humans[h].bounds.numpy() for h in shown]
        height = max(b[1, 1] - b[0, 1] for b in boxes)
        width = SPACING * max(b[1, 0] - b[0, 0] for b in boxes) * len(shown)
        distance = 0.75 * max(width / 1.4, height) / math.tan(math.radians(FOV_DEG) / 2)
        position = (0.0, 0.15 * height, distance)
        camera = self.server.initial_camera
        camera.fov = math.radians(FOV_DEG)
        camera.look_at = (0.0, 0.0, 0.0)
        camera.position = position
        for client in self.server.get_clients().values():
            client.camera.look_at = (0.0, 0.0, 0.0)
            client.camera.position = position

    # -- scene -----------------------------------------------------------------------------------------
    def _add_human(self, h: int) -> None:
        """The frame of human ``h`` and one full-colour mesh per layer (hidden until chosen)."""
        self.frames[h] = self.server.scene.add_frame(f"/human_{h}", show_axes=False)
        for li in range(len(self.view.layers)):
            mesh = self.view.mesh(h, li)
            if mesh is None:
                log.warning("%s, %s: no surface, no mesh", self.view.humans[h].name, self.view.titles[li])
                continue
            self.meshes[h, li] = self.server.scene.add_mesh_trimesh(f"/human_{h}/layer_{li}", mesh, visible=False)

    def _ghost(self, h: int, li: int) -> viser.MeshHandle | None:
        if (h, li) not in self.ghosts and (h, li) in self.meshes:
            mesh = self.view.mesh(h, li)
            self.ghosts[h, li] = self.server.scene.add_mesh_simple(
                f"/human_{h}/ghost_{li}", mesh.vertices, mesh.faces, color=GHOST_COLOURS[li % len(GHOST_COLOURS)],
                opacity=GHOST_OPACITY, side="double", cast_shadow=False, receive_shadow=False, visible=False)
        return self.ghosts.get((h, li))

    def refresh(self) -> None:
        """Show the chosen humans and layers (meshes mode) or ask for new live frames (volume rendering)."""
        with self._lock:
            shown, li = self.shown(), self.layer_index()
            self.offsets = self._layout(shown)
            if shown != self._framed:
                self._place_camera(shown)
                self._framed = shown
            meshes_on = self.mode is None or self.mode.value == "meshes"
            overlaid = {k for k, box in enumerate(self.overlays) if box.value and k != li}
            for h in shown:
                if h not in self.frames:
                    self._add_human(h)
                for k in overlaid:
                    self._ghost(h, k)
            for h, frame in self.frames.items():
                frame.visible = h in shown
                if h in shown:
                    frame.position = tuple(self.offsets[h])
            for (_, k), handle in self.meshes.items():
                handle.visible = meshes_on and k == li
            for (_, k), handle in self.ghosts.items():
                handle.visible = meshes_on and k in overlaid
            self._dirty.update(self.server.get_clients())
        self._wake.set()

    # -- clients ---------------------------------------------------------------------------------------
    def _on_connect(self, client: viser.ClientHandle) -> None:
        log.info("client %d connected", client.client_id)

        @client.camera.on_update
        def _(_: viser.CameraHandle) -> None:
            with self._lock:
                self._dirty.add(client.client_id)
            self._wake.set()

        with self._lock:
            self._dirty.add(client.client_id)
        self._wake.set()

    def save_png(self, client: viser.ClientHandle | None) -> Path | None:
        """Save what ``client`` sees (its own render) as a PNG in ``save_dir`` and send it as a download."""
        if client is None:
            return None
        camera = client.camera
        image = client.get_render(camera.image_height, camera.image_width, transport_format="png", timeout=30.0)
        self.save_dir.mkdir(parents=True, exist_ok=True)
        while (path := self.save_dir / f"humanliff_view_{self._saved:03d}.png").exists():
            self._saved += 1
        save_png(path, image)
        client.send_file_download(path.name, path.read_bytes())
        client.add_notification("saved", str(path), auto_close_seconds=5.0)
        log.info("saved %s", path)
        return path

    # -- live rendering --------------------------------------------------------------------------------
    def _placed(self, shown: list[int], li: int) -> list[Placed]:
        placed = []
        for h in shown:
            if (h, li) not in self._fields:
                self._fields[h, li] = self.view.field(h, li)
            field, occupancy = self._fields[h, li]
            placed.append(Placed(field, self.view.humans[h].bounds.to(self.view.device), occupancy,
                                 torch.from_numpy(self.offsets[h]).float()))
        return placed

    def _render_client(self, client: viser.ClientHandle) -> None:
        if self.mode is None or self.mode.value != "volume rendering":
            client.scene.set_background_image(None)
            return
        camera = client.camera
        with self._lock:
            placed = self._placed(self.shown(), self.layer_index())
        K, R, T, height, width = browser_camera(camera.wxyz, camera.position, camera.fov, camera.aspect,
                                                int(self.resolution.value))
        start = time.perf_counter()
        image = render_placed(placed, K, R, T, height, width, self.view.render_cfg)
        took = time.perf_counter() - start
        client.scene.set_background_image(image, format="jpeg", jpeg_quality=90)
        self.stats.content = f"live: {width} x {height} in {1000 * took:.0f} ms ({1 / took:.0f} frames/s)"

    def _render_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            with self._lock:
                dirty, self._dirty = self._dirty, set()
            for client_id, client in self.server.get_clients().items():
                if client_id in dirty and not self._stop.is_set():
                    try:
                        self._render_client(client)
                    except Exception:  # a client that left mid-frame must not end the loop
                        log.exception("live rendering for client %d failed", client_id)

    @property
    def url(self) -> str:
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    def wait(self) -> None:
        """Block until ``close`` (from another thread) or Ctrl-C (``KeyboardInterrupt``)."""
        while not self._stop.wait(0.25):
            pass

    def close(self) -> None:
        """Stop live rendering and the server."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        self.server.stop()


def start_viewer(view: ViewTarget, host: str = "127.0.0.1", port: int = 8080, save_dir: str | Path = ".",
                 live: bool | None = None) -> Viewer:
    """Listen on ``host:port`` (0: a free port) and show ``view``; ``viewer.close()`` stops the server.

    ``live``: offer the live volume rendering; None (default) on CUDA only (too slow on the CPU to follow a
    camera; the tests force it there). It needs the view's decoder.

    Raises a one-line ``--port`` error when the port is taken (viser alone would move to the next one).
    """
    if port:
        check_port(host, port)
    logging.getLogger("websockets").setLevel(logging.WARNING)  # not a line per connection
    server = viser.ViserServer(host=host, port=port, label="HumanLiff", verbose=False)
    if port and server.get_port() != port:  # taken between the check and viser's bind
        server.stop()
        raise HumanLiffError(f"--port {port}: cannot listen on {host}:{port} (address already in use); "
                             f"pick another port")
    try:
        return Viewer(view, server, Path(save_dir), live)
    except BaseException:
        server.stop()
        raise

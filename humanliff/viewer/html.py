"""``viewer.html``: one self-contained page with every human's turntable per layer.

The page needs no network and no external file: each (human, layer) turntable is one JPEG sprite strip
(the frames side by side) embedded as a base64 data URI, and the script and style are inline, so it
works from ``file://``. Drag a human (or press the arrow keys) to turn every human at once; the layer
buttons (or keys 1..L) switch the layer; "spin" turns them by itself. ``body`` carries ``data-layer``
and ``data-frame`` (the state shown) for tests and scripts.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from humanliff.errors import HumanLiffError
from humanliff.io import atomic_path
from humanliff.outputs.images import to_uint8

VIEWER_NAME = "viewer.html"
MAX_FRAME_SIZE = 256
"""Frames larger than this (pixels a side) are scaled down in the page, to keep its size reasonable."""
JPEG_QUALITY = 85

_STYLE = """
:root { color-scheme: dark; }
body { margin: 0; background: #16181d; color: #e8e8ea; font: 15px/1.4 system-ui, sans-serif; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 12px 20px; padding: 14px 20px;
         border-bottom: 1px solid #2a2d35; position: sticky; top: 0; background: #16181d; z-index: 1; }
h1 { font-size: 18px; margin: 0; font-weight: 600; }
nav { display: flex; gap: 6px; flex-wrap: wrap; }
button { font: inherit; color: inherit; background: #262a33; border: 1px solid #3a3f4b; border-radius: 16px;
         padding: 4px 14px; cursor: pointer; }
button:hover { background: #30353f; }
button[aria-pressed="true"] { background: #3d6fd8; border-color: #3d6fd8; color: #fff; }
.hint { color: #9096a3; font-size: 13px; }
main { display: grid; gap: 16px; padding: 20px;
       grid-template-columns: repeat(auto-fill, minmax(min(100%, 240px), 1fr)); }
figure { margin: 0; }
canvas { width: 100%; aspect-ratio: 1; display: block; background: #000; border-radius: 10px;
         cursor: grab; touch-action: none; }
canvas:active { cursor: grabbing; }
figcaption { text-align: center; color: #b9bdc7; margin-top: 6px; font-size: 14px; }
"""

_SCRIPT = """
"use strict";
const data = JSON.parse(document.getElementById("humanliff-data").textContent);
const nLayers = data.titles.length, nFrames = data.frames, size = data.size;
const state = {layer: nLayers - 1, frame: 0, spin: null};
const grid = document.getElementById("grid"), nav = document.getElementById("layers");
const sprites = data.humans.map(strips => strips.map(src => {
  const img = new Image();
  img.addEventListener("load", draw);
  img.src = src;
  return img;
}));
const canvases = data.humans.map((_, i) => {
  const figure = document.createElement("figure"), canvas = document.createElement("canvas");
  const caption = document.createElement("figcaption");
  canvas.width = canvas.height = size;
  caption.textContent = data.names[i];
  figure.append(canvas, caption);
  grid.append(figure);
  return canvas;
});
const buttons = data.titles.map((title, k) => {
  const b = document.createElement("button");
  b.textContent = title;
  b.title = "layer " + (k + 1) + " (key " + (k + 1) + ")";
  b.addEventListener("click", () => { state.layer = k; draw(); });
  nav.append(b);
  return b;
});
const spin = document.getElementById("spin");
function draw() {
  canvases.forEach((canvas, i) => {
    const img = sprites[i][state.layer];
    if (img.complete && img.naturalWidth) {
      canvas.getContext("2d").drawImage(img, state.frame * size, 0, size, size, 0, 0, size, size);
    }
  });
  buttons.forEach((b, k) => b.setAttribute("aria-pressed", String(k === state.layer)));
  document.body.dataset.layer = state.layer;
  document.body.dataset.frame = state.frame;
}
function turn(frames) { state.frame = ((state.frame + frames) % nFrames + nFrames) % nFrames; draw(); }
function setSpin(on) {
  clearInterval(state.spin);
  state.spin = on ? setInterval(() => turn(1), 1000 / data.fps) : null;
  spin.setAttribute("aria-pressed", String(on));
}
let drag = null;
grid.addEventListener("pointerdown", e => {
  if (e.target.tagName !== "CANVAS") return;
  drag = {x: e.clientX, frame: state.frame, step: Math.max(2, 1.5 * e.target.clientWidth / nFrames)};
  grid.setPointerCapture(e.pointerId);
  setSpin(false);
});
grid.addEventListener("pointermove", e => {
  if (!drag) return;
  state.frame = drag.frame;
  turn(-Math.round((e.clientX - drag.x) / drag.step));
});
for (const name of ["pointerup", "pointercancel"]) grid.addEventListener(name, () => { drag = null; });
spin.addEventListener("click", () => setSpin(state.spin === null));
document.addEventListener("keydown", e => {
  if (e.key === "ArrowLeft") turn(-1);
  else if (e.key === "ArrowRight") turn(1);
  else if (e.key === " ") { setSpin(state.spin === null); e.preventDefault(); }
  else if (/^[1-9]$/.test(e.key) && +e.key <= nLayers) { state.layer = +e.key - 1; draw(); }
});
draw();
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<nav id="layers" aria-label="layers"></nav>
<button id="spin" aria-pressed="false">spin</button>
<span class="hint">drag a human to turn them &middot; keys 1&ndash;{n_layers} switch layers</span>
</header>
<main id="grid"></main>
<script type="application/json" id="humanliff-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""


def _sprite_uri(frames: np.ndarray, size: int, quality: int) -> str:
    """Frames ``[F, S, S, 3]`` as one JPEG strip ``[size, F * size]``, as a data URI."""
    strip = Image.fromarray(np.concatenate(list(frames), axis=1))
    if strip.height != size:
        strip = strip.resize((size * len(frames), size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    strip.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def viewer_html(turntables: Sequence[np.ndarray], titles: Sequence[str], *, names: Sequence[str] | None = None,
                fps: float = 20.0, title: str = "HumanLiff", max_size: int = MAX_FRAME_SIZE,
                quality: int = JPEG_QUALITY) -> str:
    """The page for ``turntables``: one array per human, ``[L, F, S, S, 3]`` (uint8 or float in [0, 1]).

    ``titles``: the L layer names (``body``, ``+pants``, ...); ``names``: one caption per human (default
    ``human 0``, ...); ``fps``: the spin speed. Frames above ``max_size`` pixels are scaled down.
    """
    turntables = [to_uint8(t) for t in turntables]
    if not turntables:
        raise HumanLiffError("viewer.html: no humans to show")
    shape = turntables[0].shape
    if len(shape) != 5 or shape[-1] != 3 or shape[2] != shape[3] or shape[1] == 0:
        raise HumanLiffError(f"viewer.html: turntables must be [L, F, S, S, 3], got {list(shape)}")
    if any(t.shape != shape for t in turntables):
        raise HumanLiffError(f"viewer.html: every human's turntable must be {list(shape)}, got "
                             f"{[list(t.shape) for t in turntables]}")
    if len(titles) != shape[0]:
        raise HumanLiffError(f"viewer.html: {len(titles)} layer titles for {shape[0]} layers")
    names = list(names) if names is not None else [f"human {i}" for i in range(len(turntables))]
    if len(names) != len(turntables):
        raise HumanLiffError(f"viewer.html: {len(names)} names for {len(turntables)} humans")
    size = min(shape[2], max_size)
    data = {"titles": list(titles), "names": names, "frames": shape[1], "size": size, "fps": fps,
            "humans": [[_sprite_uri(layer, size, quality) for layer in t] for t in turntables]}
    return _PAGE.format(title=html.escape(title), style=_STYLE, script=_SCRIPT, n_layers=shape[0],
                        data=json.dumps(data).replace("</", "<\\/"))


def write_viewer_html(path: str | Path, turntables: Sequence[np.ndarray], titles: Sequence[str], *,
                      names: Sequence[str] | None = None, fps: float = 20.0, title: str = "HumanLiff") -> Path:
    """Write ``viewer_html(turntables, titles, ...)`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    page = viewer_html(turntables, titles, names=names, fps=fps, title=title)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path

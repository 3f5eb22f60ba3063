"""Pictures of generated humans: view grids and the labelled contact sheet (humans x layers)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from humanliff.config import BACKGROUNDS
from humanliff.errors import HumanLiffError
from humanliff.io import atomic_path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] (any shape ``[..., 3]``) to uint8; uint8 input is returned unchanged."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def composite(rgb: np.ndarray, acc: np.ndarray, background: str) -> np.ndarray:
    """Rendered colour ``[..., 3]`` (over black, i.e. premultiplied) and opacity ``[...]`` in [0, 1] to uint8
    on ``background``: ``[..., 3]`` for black or white, ``[..., 4]`` (straight alpha) for transparent."""
    rgb, acc = np.asarray(rgb, np.float32), np.asarray(acc, np.float32)[..., None]
    if background == "black":
        return to_uint8(rgb)
    if background == "white":
        return to_uint8(rgb + (1.0 - acc))
    if background == "transparent":
        return to_uint8(np.concatenate([rgb / np.maximum(acc, 1e-6), acc], axis=-1))
    raise HumanLiffError(f"background '{background}': use one of {', '.join(BACKGROUNDS)}")


def opaque(image: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 3]`` as is, ``[..., 4]`` composited over white (for pictures without transparency)."""
    image = to_uint8(image)
    if image.shape[-1] != 4:
        return image
    alpha = image[..., 3:].astype(np.float32) / 255.0
    return to_uint8(image[..., :3].astype(np.float32) / 255.0 * alpha + (1.0 - alpha))


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` (uint8 or float in [0, 1], ``[H, W, 3]`` or RGBA ``[H, W, 4]``) as a PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
    return path


def view_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Tile ``[N, H, W, C]`` images (C = 3, or 4 for RGBA) row-major into one ``[rows*H, columns*W, C]``
    uint8 picture.

    ``columns`` defaults to ``ceil(sqrt(N))``; unused cells stay black (transparent for RGBA).
    """
    images = to_uint8(images)
    if images.ndim != 4 or images.shape[-1] not in (3, 4) or len(images) == 0:
        raise HumanLiffError(f"view_grid: expected images [N, H, W, 3] with N > 0, got {images.shape}")
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = -(-n // columns)
    grid = np.zeros((rows * h, columns * w, c), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return grid


def _font(size: int, titles: Sequence[str], width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` px or smaller (down to 6 px) so that every title fits ``width``.

    Falls back to the fixed bitmap font where Pillow has no FreeType.
    """
    try:
        font = ImageFont.load_default(size=size)
        while size > 6 and max(font.getlength(t) for t in titles) > width:
            size -= 1
            font = ImageFont.load_default(size=size)
        return font
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _centred_text(draw: ImageDraw.ImageDraw, centre: tuple[int, int], text: str,
                  font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    left, top, right, bottom = font.getbbox(text)
    origin = (centre[0] - (left + right) // 2, centre[1] - (top + bottom) // 2)
    draw.text(origin, text, fill=(0, 0, 0), font=font)


def contact_sheet(
    images: np.ndarray, column_titles: Sequence[str], row_titles: Sequence[str] | None = None
) -> np.ndarray:
    """Labelled grid of ``images`` ``[rows, columns, H, W, 3]`` (humans x layers) as uint8 ``[H', W', 3]``.

    A title bar above each column (``body``, ``+pants``, ...) and a label left of each row (``human 0``).
    """
    images = to_uint8(images)
    if images.ndim != 5 or images.shape[-1] != 3:
        raise HumanLiffError(f"contact_sheet: expected images [rows, columns, H, W, 3], got {images.shape}")
    rows, columns, h, w, _ = images.shape
    if len(column_titles) != columns:
        raise HumanLiffError(f"contact_sheet: {len(column_titles)} column titles for {columns} columns")
    row_titles = list(row_titles) if row_titles is not None else [f"human {i}" for i in range(rows)]
    if len(row_titles) != rows:
        raise HumanLiffError(f"contact_sheet: {len(row_titles)} row titles for {rows} rows")
    font = _font(max(10, h // 12), column_titles, w - 4)
    bar = max(16, h // 8)
    margin = max(48, max(int(font.getlength(t)) for t in row_titles) + 12)
    sheet = Image.new("RGB", (margin + columns * w, bar + rows * h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(column_titles):
        _centred_text(draw, (margin + c * w + w // 2, bar // 2), title, font)
    for r, title in enumerate(row_titles):
        _centred_text(draw, (margin // 2, bar + r * h + h // 2), title, font)
        for c in range(columns):
            sheet.paste(Image.fromarray(images[r, c]), (margin + c * w, bar + r * h))
    return np.asarray(sheet)

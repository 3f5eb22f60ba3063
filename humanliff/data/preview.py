"""``data preview``: a contact sheet of a dataset, one row per subject, a few views of each layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from humanliff.config import DataConfig
from humanliff.data.files import read_subject_list
from humanliff.data.loader import load_subject, subject_list_path
from humanliff.io import atomic_path
from humanliff.runtime.layers import LAYER_NAMES, NUM_LAYERS

HEADER = 14


def contact_sheet(data_cfg: DataConfig, out: str | Path, views: int = 3, max_subjects: int = 8,
                  tile: int = 96) -> Path:
    """Write a PNG: rows = subjects, columns = layers x ``views`` evenly spaced views, ``tile`` px squares.

    Returns the output path.
    """
    names = read_subject_list(subject_list_path(data_cfg.root, data_cfg.layout), max_subjects)
    rows = []
    for name in names:
        subject = load_subject(data_cfg, name)
        n_views = subject.images.shape[1]
        picks = np.linspace(0, n_views, min(views, n_views), endpoint=False).astype(int)
        tiles = [Image.fromarray(subject.images[layer, v]).resize((tile, tile), Image.Resampling.BOX)
                 for layer in range(NUM_LAYERS) for v in picks]
        tiles = [np.asarray(t) for t in tiles]
        rows.append(np.concatenate(tiles, axis=1))
    sheet = Image.new("RGB", (rows[0].shape[1], HEADER + sum(r.shape[0] for r in rows)))
    sheet.paste(Image.fromarray(np.concatenate(rows, axis=0)), (0, HEADER))
    draw = ImageDraw.Draw(sheet)
    block = rows[0].shape[1] // NUM_LAYERS
    for layer, label in enumerate(LAYER_NAMES):
        draw.text((layer * block + 4, 2), f"{layer}: {label}", fill=(220, 220, 220))
    out = Path(out)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return out

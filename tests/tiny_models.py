"""Tiny random models shared by the export, runtime and generate tests."""

import dataclasses

import numpy as np
import torch

from humanliff.config import load_config
from humanliff.ema_file import EMA_FILE, write_ema
from humanliff.io import atomic_path
from humanliff.models.decoder import build_decoder
from humanliff.models.unet import build_unet
from humanliff.store import create_store

FAST = ["sample.views=1", "sample.turntable_frames=2", "sample.image_size=16", "sample.mesh_resolution=12",
        "render.occupancy_resolution=0"]
"""Overrides that keep the outputs of ``generate`` and ``run`` small in the tests."""


def make_tiny_models(root, decoder_backend="torch"):
    """A tiny store (subjects a, b; random planes and decoder) and a tiny ema.pt with random weights."""
    cfg = load_config("tiny")
    torch.manual_seed(0)
    res = cfg.triplane.resolution
    bounds = np.array([[[-0.5, -1.0, -0.3], [0.5, 1.0, 0.3]], [[-0.4, -0.9, -0.2], [0.4, 0.9, 0.2]]],
                      np.float32)
    decoder = build_decoder(cfg.decoder)
    state = decoder.state_dict()
    if decoder_backend == "tcnn":  # the flat parameter vectors tiny-cuda-nn saves
        state = {f"{n}.net.params": getattr(decoder, n).tcnn_params() for n in ("density_net", "color_net")}
    decoder_cfg = dataclasses.asdict(dataclasses.replace(cfg.decoder, backend=decoder_backend))
    with atomic_path(root / "store") as tmp:
        store = create_store(tmp, ["a", "b"], bounds, res, 27, state, decoder_cfg, cfg.to_dict())
        store.planes[:] = (0.5 * torch.randn(store.planes.shape)).clamp(-1, 1).numpy()
        store.planes.flush()
    unet = build_unet(cfg.unet, res)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return write_ema(root / EMA_FILE, unet.state_dict(), cfg.to_dict(), {}), root / "store", decoder

"""Disk estimates of what a command writes, from its config: a size per file, summed (``guard_output``'s
``needed_bytes``, checked before any compute).

Exact where the size follows from shapes (tri-planes, checkpoints, stores); for compressed pictures and
meshes, linear fits measured on the toolkit's own outputs (CPU, ``configs/tiny.yaml`` and the default
model's 256 px renders: PNG 0.43 bytes a pixel; synthetic data at 32 and 96 px). Compressed sizes vary
with the content, so these are estimates (tests: within 25 % of the real size for tiny configs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from humanliff.config import Config, SampleConfig, SynthConfig
from humanliff.runtime.layers import NUM_LAYERS

PLANE_CHANNELS = 27
FP16, FP32 = 2, 4
PNG_HEADER, PNG_PER_PIXEL = 128, 0.43
"""A rendered human as PNG: header plus bytes per pixel (tiny renders and the default model's at 256 px)."""
GIF_HEADER, GIF_PER_PIXEL = 300, 0.75
JPEG_HEADER, JPEG_PER_PIXEL = 560, 0.07
"""The viewer's JPEG strips (quality 85)."""
VIEWER_PAGE, VIEWER_SIDE = 4000, 256
"""viewer.html without its frames; frames are at most this many pixels a side."""
BASE64 = 4 / 3
MESH_FACES_PER_SIDE2, MESH_FACE_BYTES, MESH_HEADER = 14, 41, 1400
"""Marching-cubes faces of a human ~ 14 x resolution^2 (default model); PLY + GLB bytes per face (16 a
vertex, 13 / 12 a face, half as many vertices as faces) and their headers."""
CONTACT_MARGIN, CONTACT_BAR = 48, 16
JSON_SMALL = 800
"""generation.json, a store's manifest without its subjects, config.yaml."""
NPZ_HEADER, NPY_HEADER = 800, 128
TORCH_FILE, STATE_FILE = 3000, 12000
"""A small ``torch.save`` file's own bytes; a checkpoint's (config, generator states, names)."""
MANIFEST, MANIFEST_PER_SUBJECT = 2800, 60
SYNTH_JPEG = (576, 0.126)
SYNTH_MASK_PNG = (121, 0.0177)
"""Synthetic images (JPEG) and masks (PNG) as ``data synth`` encodes them (optimized): header and bytes per pixel,
measured at 32 and 96 px."""
CAMERA_JSON = 500
"""cameras.json bytes per view."""
FORMAT_OVERHEAD = {"ep": 400_000, "onnx": 100_000, "torchscript": 100_000, "aoti": 2_000_000,
                   "tensorrt": 1_000_000}
"""Bytes per network file beyond its fp32 weights (ep and onnx measured on the tiny models; the others
guessed high: their builds need a GPU)."""
WHOLE_MODULE_FORMATS = ("ep",)
"""Formats whose every UNet part stores the whole UNet's weights (a torch.export program keeps the module's
state dict); the others keep the weights a part uses."""


def png_bytes(pixels: int) -> int:
    return int(PNG_HEADER + PNG_PER_PIXEL * pixels)


def mesh_bytes(resolution: int) -> int:
    """PLY + GLB of one human's layer: faces ~ 14 N^2, at most two a grid cell."""
    faces = min(MESH_FACES_PER_SIDE2 * resolution ** 2, 2 * (resolution - 1) ** 3)
    return MESH_HEADER + MESH_FACE_BYTES * faces


def generation_bytes(sample: SampleConfig, humans: int, resolution: int, layers: int = NUM_LAYERS) -> int:
    """A generation folder (``humanliff.outputs.writer``): planes, views, grids, contact sheet, meshes,
    turntable GIFs (no MP4) and viewer.html."""
    side, views, frames = sample.image_size, sample.views, sample.turntable_frames
    columns = -(-views // max(1, int(views ** 0.5)))
    planes = NPZ_HEADER + layers * humans * PLANE_CHANNELS * resolution ** 2 * FP16
    per_layer = views * png_bytes(side ** 2) + png_bytes(columns * side * -(-views // columns) * side)
    per_layer += mesh_bytes(sample.mesh_resolution) if sample.meshes else 0
    contact = png_bytes((layers * side + CONTACT_MARGIN) * (humans * side + CONTACT_BAR))
    gifs = humans * (GIF_HEADER + GIF_PER_PIXEL * frames * layers * side ** 2)
    strip = frames * min(side, VIEWER_SIDE) ** 2
    viewer = VIEWER_PAGE + humans * layers * BASE64 * (JPEG_HEADER + JPEG_PER_PIXEL * strip)
    return int(planes + JSON_SMALL + humans * layers * per_layer + contact + gifs + viewer)


def dataset_bytes(synth: SynthConfig) -> int:
    """A synthetic dataset: per subject its cameras and box, per view and layer a JPEG image and a PNG mask."""
    pixels = synth.resolution ** 2
    image = sum(header + per_pixel * pixels for header, per_pixel in (SYNTH_JPEG, SYNTH_MASK_PNG))
    per_subject = CAMERA_JSON * synth.views + 150 + NUM_LAYERS * synth.views * image
    return int(synth.subjects * (per_subject + 12))


def _decoder_params(cfg: Config) -> int:
    from humanliff.models.decoder import build_decoder

    return sum(p.numel() for p in build_decoder(cfg.decoder).parameters())


def store_bytes(subjects: int, resolution: int, decoder_params: int) -> int:
    """A tri-plane store: fp16 planes, decoder.pt and manifest.json."""
    planes = NPY_HEADER + subjects * NUM_LAYERS * PLANE_CHANNELS * resolution ** 2 * FP16
    return planes + decoder_params * FP32 + TORCH_FILE + MANIFEST + MANIFEST_PER_SUBJECT * subjects


def fit_bytes(cfg: Config, stage: str, *, peak: bool = True) -> int:
    """A fit's run folder when done: stage A ``checkpoint_a`` (fp32 planes and their two Adam moments,
    the decoder with its moments) and ``store_a``; stage B ``checkpoint_b.pt`` (its position) and ``store_b``.
    ``peak`` adds what exists only while a checkpoint is replaced (the old one; stage B's group planes and
    mid-layer fitter, planes and two moments)."""
    from humanliff.data.files import read_subject_list
    from humanliff.data.loader import subject_list_path

    subjects = len(read_subject_list(subject_list_path(cfg.data.root, cfg.data.layout), cfg.data.max_subjects))
    decoder = _decoder_params(cfg)
    plane = cfg.triplane.channels * cfg.triplane.resolution ** 2 * FP32
    if stage == "a":
        checkpoint = subjects * NUM_LAYERS * (3 * plane + FP32) + 4 * NPY_HEADER + 3 * decoder * FP32 + STATE_FILE
        extra = checkpoint
    else:
        group = min(subjects, max(1, cfg.fit.subjects_per_batch_b))
        checkpoint = STATE_FILE  # the final one holds no planes
        extra = group * (NUM_LAYERS + 3) * plane + STATE_FILE
    written = checkpoint + store_bytes(subjects, cfg.triplane.resolution, decoder) + JSON_SMALL
    return written + (extra if peak else 0)


def _fp32_bytes(path: Path) -> int:
    import torch

    from humanliff.io import read_torch_file

    blob = read_torch_file(path)
    state = blob.get("state_dict", {}) if isinstance(blob, dict) else {}
    return sum(v.numel() * FP32 for v in state.values() if isinstance(v, torch.Tensor))


def artifacts_bytes(unet_ckpt: str | Path, store: str | Path, formats: Sequence[str], unet_layout: str) -> int:
    """An artifacts folder: per format the UNet (whole and / or four parts) and the decoder in fp32, plus
    each network file's overhead (``FORMAT_OVERHEAD``)."""
    unet_path, store = Path(unet_ckpt), Path(store)
    unet_path = unet_path / "ema.pt" if unet_path.is_dir() else unet_path
    unet = _fp32_bytes(unet_path) if unet_path.is_file() else 0
    decoder = _fp32_bytes(store / "decoder.pt") if (store / "decoder.pt").is_file() else 0
    networks = {"whole": 1, "parts": 4, "both": 5}[unet_layout]
    total = 16 * JSON_SMALL
    for name in formats:
        copies = networks if name in WHOLE_MODULE_FORMATS else (2 if unet_layout == "both" else 1)
        total += copies * unet + decoder + (networks + 1) * FORMAT_OVERHEAD.get(name, 1_000_000)
    return total

"""The tri-plane store: a folder holding every fitted tri-plane plus the decoder that renders them.

Layout: ``manifest.json`` (version, subjects, bounds, resolution, channels, decoder config, resolved
config), ``planes.npy`` fp16 ``[S, 4, C, R, R]`` (read memory-mapped, so a store larger than memory is
fine) and ``decoder.pt`` (``{"state_dict", "config"}``). Diffusion training, ``render`` and ``eval recon``
read it; ``fit`` and ``store import`` write it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap

from humanliff.config import DecoderConfig, TriplaneConfig
from humanliff.errors import HumanLiffError, InputFileError
from humanliff.io import atomic_path, read_torch_file, require_finite
from humanliff.models.decoder import build_decoder
from humanliff.runtime.files import read_json
from humanliff.runtime.layers import NUM_LAYERS

STORE_VERSION = 1
MANIFEST = "manifest.json"
PLANES = "planes.npy"
DECODER = "decoder.pt"


@dataclass(frozen=True)
class TriplaneRef:
    """``STORE:SUBJECT:LAYER``: one stored tri-plane (SUBJECT a name or an index)."""

    store: Path
    subject: str
    layer: int


def parse_triplane_ref(ref: str, layers: int = NUM_LAYERS, option: str = "") -> TriplaneRef:
    """Parse ``STORE:SUBJECT:LAYER`` (the store path may itself contain ``:``), LAYER in ``0..layers-1``.

    ``option`` names the command-line option in the one-line error (``--from``).
    """
    name = f"{option} '{ref}'".strip()
    parts = ref.rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        raise HumanLiffError(f"{name} is not of the form STORE:SUBJECT:LAYER (e.g. runs/fit/store_b:seq_000000:3)")
    if not parts[2].isdigit() or int(parts[2]) >= layers:
        raise HumanLiffError(f"{name}: LAYER must be 0..{layers - 1}")
    return TriplaneRef(Path(parts[0]), parts[1], int(parts[2]))


@dataclass
class TriplaneStore:
    """An opened store; ``planes`` is a numpy memmap ``[S, 4, C, R, R]`` fp16."""

    path: Path
    subjects: list[str]
    bounds: np.ndarray
    """float32 ``[S, 2, 3]`` world boxes (min row, max row)."""
    planes: np.ndarray
    decoder_config: dict[str, Any]
    config: dict[str, Any]

    @property
    def resolution(self) -> int:
        return int(self.planes.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.planes.shape[2])

    def index(self, subject: str | int) -> int:
        """Row of ``subject`` (a name, or an index given as int or digit string)."""
        if isinstance(subject, int) or (isinstance(subject, str) and subject.isdigit()
                                        and subject not in self.subjects):
            i = int(subject)
            if not 0 <= i < len(self.subjects):
                last = len(self.subjects) - 1
                raise InputFileError(self.path, f"subject index {i} out of range (0..{last})")
            return i
        if subject not in self.subjects:
            shown = ", ".join(self.subjects[:5]) + (", ..." if len(self.subjects) > 5 else "")
            raise InputFileError(self.path, f"no subject '{subject}' (subjects: {shown})")
        return self.subjects.index(subject)

    def layer(self, subject: str | int, layer: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """One tri-plane as float32 ``[C, R, R]`` (refused when it holds a NaN or an infinity)."""
        if not 0 <= layer < NUM_LAYERS:
            raise InputFileError(self.path, f"layer {layer} out of range (0..{NUM_LAYERS - 1})")
        plane = torch.from_numpy(np.asarray(self.planes[self.index(subject), layer], np.float32))
        require_finite(plane, f"the planes of subject {subject} layer {layer}", self.path / PLANES)
        return plane.to(device)

    def subject_bounds(self, subject: str | int) -> torch.Tensor:
        """float32 ``[2, 3]`` world box of one subject."""
        return torch.from_numpy(self.bounds[self.index(subject)].copy())

    def decoder_state(self) -> dict[str, torch.Tensor]:
        """The decoder's state dict as saved in ``decoder.pt``."""
        return _read_decoder(self.path / DECODER)["state_dict"]

    def write_manifest(self) -> None:
        """Rewrite ``manifest.json`` from this object (e.g. after filling ``bounds`` in place)."""
        manifest = _manifest(self.subjects, self.bounds, self.resolution, self.channels, self.decoder_config,
                             self.config)
        with atomic_path(self.path / MANIFEST) as tmp:  # a store updated in place (stage B) keeps a whole one
            tmp.write_text(json.dumps(manifest, indent=1))

    def load_decoder(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The store's decoder (``build_decoder`` of its config, weights loaded strictly), in eval mode."""
        path = self.path / DECODER
        blob = _read_decoder(path)
        try:
            cfg = DecoderConfig(**blob["config"])
        except TypeError as exc:
            raise InputFileError(path, f"bad decoder config ({exc})") from exc
        decoder = build_decoder(cfg)
        require_finite(blob["state_dict"], "the decoder weights", path)
        try:
            decoder.load_state_dict(blob["state_dict"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise InputFileError(path, f"weights do not fit a '{cfg.kind}' decoder: "
                                       f"{' '.join(line.strip() for line in first[:3])}") from exc
        return decoder.to(device).eval().requires_grad_(False)


def _manifest(subjects: Sequence[str], bounds: np.ndarray, resolution: int, channels: int,
              decoder_config: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": STORE_VERSION,
        "subjects": list(subjects),
        "bounds": np.asarray(bounds, np.float32).tolist(),
        "layers": NUM_LAYERS,
        "resolution": int(resolution),
        "channels": int(channels),
        "dtype": "float16",
        "decoder": decoder_config,
        "config": config,
    }


def create_store(path: str | Path, subjects: Sequence[str], bounds: np.ndarray | torch.Tensor,
                 resolution: int, channels: int, decoder_state: dict[str, torch.Tensor],
                 decoder_config: dict[str, Any], config: dict[str, Any]) -> TriplaneStore:
    """Write a new store folder at ``path`` with zero planes, returned open for writing (``r+``).

    The caller fills ``store.planes[s, l] = ...`` (fp16 ``[C, R, R]``) and calls ``store.planes.flush()``.
    Write to a temporary path (``humanliff.io.atomic_path``) so that a half-written store never appears.
    """
    path = Path(path)
    bounds = np.asarray(torch.as_tensor(bounds, dtype=torch.float32).cpu(), np.float32)
    if bounds.shape != (len(subjects), 2, 3):
        raise ValueError(f"bounds must be [{len(subjects)}, 2, 3], got {list(bounds.shape)}")
    path.mkdir(parents=True, exist_ok=True)
    planes = open_memmap(path / PLANES, mode="w+", dtype=np.float16,
                         shape=(len(subjects), NUM_LAYERS, channels, resolution, resolution))
    state = {k: v.detach().cpu().contiguous() for k, v in decoder_state.items()}
    torch.save({"state_dict": state, "config": decoder_config}, path / DECODER)
    store = TriplaneStore(path, list(subjects), bounds, planes, decoder_config, config)
    store.write_manifest()
    return store


def check_layout(triplane_cfg: TriplaneConfig, source: TriplaneStore, model: str | Path) -> None:
    """Refuse ``source`` when its planes are not ``triplane_cfg``'s ``[channels, resolution, resolution]``.

    ``model`` says what expects that layout (``"the UNet in runs/x/ema.pt"``), for the one-line error.
    """
    expected = (triplane_cfg.channels, triplane_cfg.resolution)
    if (source.channels, source.resolution) != expected:
        raise InputFileError(source.path, f"tri-planes are {source.channels}x{source.resolution}^2 but {model} "
                                          f"expects {expected[0]}x{expected[1]}^2 (triplane.channels, "
                                          f"triplane.resolution)")


def _read_decoder(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputFileError(path, "missing (a tri-plane store needs decoder.pt)")
    blob = read_torch_file(path)
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict) or "config" not in blob:
        raise InputFileError(path, "expected a dict with keys 'state_dict' and 'config'")
    return blob


def _check_manifest_values(path: Path, manifest: dict[str, Any]) -> None:
    """One line naming the key when a manifest value has the wrong type or range."""
    for key in ("resolution", "channels", "layers"):
        value = manifest.get(key, NUM_LAYERS)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputFileError(path, f"'{key}' must be a positive integer, got {value!r}")
    if manifest.get("layers", NUM_LAYERS) != NUM_LAYERS:
        raise InputFileError(path, f"'layers' must be {NUM_LAYERS}, got {manifest['layers']!r}")
    subjects = manifest["subjects"]
    if not isinstance(subjects, list) or not subjects or not all(isinstance(s, str) for s in subjects):
        raise InputFileError(path, f"'subjects' must be a non-empty list of names, got {subjects!r:.60}")
    for key in ("decoder", "config"):
        if not isinstance(manifest[key], dict):
            raise InputFileError(path, f"'{key}' must be an object, got {manifest[key]!r:.60}")
    try:
        np.asarray(manifest["bounds"], np.float32)
    except (TypeError, ValueError) as exc:
        raise InputFileError(path, f"'bounds' must be numbers [subjects, 2, 3] ({exc})") from exc


def open_store(path: str | Path, mode: str = "r") -> TriplaneStore:
    """Open a store folder; ``mode`` ``r`` (read-only memmap) or ``r+`` (writable). Checks every shape."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise InputFileError(path, "not a tri-plane store (no manifest.json)")
    manifest = read_json(manifest_path)
    required = ("version", "subjects", "bounds", "resolution", "channels", "decoder", "config")
    missing = [k for k in required if k not in manifest]
    if missing:
        raise InputFileError(manifest_path, f"missing keys: {', '.join(missing)}")
    if manifest["version"] != STORE_VERSION:
        raise InputFileError(manifest_path,
                             f"store version {manifest['version']} (this code reads {STORE_VERSION})")
    _check_manifest_values(manifest_path, manifest)
    subjects = list(manifest["subjects"])
    bounds = np.asarray(manifest["bounds"], np.float32)
    if bounds.shape != (len(subjects), 2, 3) or not np.isfinite(bounds).all():
        raise InputFileError(manifest_path, f"bounds must be [{len(subjects)}, 2, 3] (one finite box per "
                                            f"subject), got {list(bounds.shape)}")
    planes_path = path / PLANES
    if not planes_path.is_file():
        raise InputFileError(planes_path, "missing")
    try:
        planes = np.load(planes_path, mmap_mode=mode)
    except (ValueError, OSError, EOFError) as exc:
        raise InputFileError(planes_path, f"not a readable .npy array ({exc})") from exc
    res, ch = int(manifest["resolution"]), int(manifest["channels"])
    expected = (len(subjects), NUM_LAYERS, ch, res, res)
    if planes.dtype != np.float16 or planes.shape != expected:
        raise InputFileError(planes_path, f"expected float16 {list(expected)}, got {planes.dtype} "
                                          f"{list(planes.shape)}")
    if not (path / DECODER).is_file():
        raise InputFileError(path / DECODER, "missing (a tri-plane store needs decoder.pt)")
    return TriplaneStore(path, subjects, bounds, planes, dict(manifest["decoder"]), dict(manifest["config"]))

"""Import checkpoints of the original HumanLiff code into a tri-plane store.

Stage A ``NNNNNN.tar``: ``{"network_fn_state_dict": {<decoder keys>, "tri_planes": [S, 4, 3, 9, R, R]}}``
(keys may carry DDP's ``module.`` prefix). Stage B ``<subject>_NNNNNN.tar``:
``{"network_fn_state_dict": {"tri_planes": [1, 4, 3, 9, R, R]}}``; it has no decoder, which comes from
the stage-A file. The original decoder is our ``seed`` decoder, key for key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from humanliff.config import Config, DataConfig, DecoderConfig
from humanliff.data.files import read_subject_list
from humanliff.data.loader import get_layout, subject_list_path
from humanliff.errors import InputFileError
from humanliff.io import atomic_path, read_torch_file
from humanliff.models.decoder import build_decoder
from humanliff.runtime.layers import NUM_LAYERS
from humanliff.store import create_store

_STAGE_B_NAME = re.compile(r"^(?P<subject>.+)_\d+$")


def _network_state(path: Path) -> dict[str, torch.Tensor]:
    """``network_fn_state_dict`` of an original ``.tar`` with any ``module.`` prefix removed."""
    blob = read_torch_file(path)
    state = blob.get("network_fn_state_dict") if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise InputFileError(path, "no 'network_fn_state_dict' (not an original HumanLiff checkpoint)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _planes(path: Path, state: Mapping[str, torch.Tensor], subjects: int | None) -> torch.Tensor:
    """``tri_planes`` ``[S, 4, 3, 9, R, R]`` -> float32 ``[S, 4, 27, R, R]`` (S checked when given)."""
    planes = state.get("tri_planes")
    if planes is None:
        raise InputFileError(path, "no 'tri_planes' in network_fn_state_dict")
    shape = tuple(planes.shape)
    ok = (len(shape) == 6 and shape[1] == NUM_LAYERS and shape[2] == 3 and shape[3] == 9 and shape[4] == shape[5]
          and (subjects is None or shape[0] == subjects))
    if not ok:
        want = f"[{subjects if subjects is not None else 'S'}, 4, 3, 9, R, R]"
        raise InputFileError(path, f"tri_planes must be {want}, got {list(shape)}")
    return planes.float().reshape(shape[0], NUM_LAYERS, 27, shape[4], shape[5])


def seed_decoder_state(path: Path, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder part of a stage-A state dict, checked key for key against our ``seed`` decoder."""
    reference = build_decoder(DecoderConfig(kind="seed")).state_dict()
    missing = [k for k in reference if k not in state]
    if missing:
        raise InputFileError(path, f"decoder keys missing: {', '.join(missing)}")
    wrong = [f"{k} {list(state[k].shape)} (expected {list(v.shape)})" for k, v in reference.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise InputFileError(path, f"decoder shapes differ: {'; '.join(wrong)}")
    return {k: state[k].float() for k in reference}


def stage_b_subject(path: Path) -> str:
    """Subject name of a stage-B file ``<subject>_NNNNNN.tar``."""
    match = _STAGE_B_NAME.match(path.stem)
    if match is None:
        raise InputFileError(path, "stage-B file name must be <subject>_<step>.tar")
    return match.group("subject")


def dataset_bounds(data_cfg: DataConfig) -> tuple[list[str], dict[str, np.ndarray]]:
    """Subject names of ``data_cfg.root`` (its list, in order) and each one's world box ``[2, 3]``.

    Boxes come from each subject's ``bounds.json`` (else its SMPL(-X) fit), without reading any image.
    """
    names = read_subject_list(subject_list_path(data_cfg.root, data_cfg.layout), data_cfg.max_subjects)
    box = get_layout(data_cfg.layout).subject_box
    boxes = [box(data_cfg, Path(data_cfg.root) / n) for n in names]
    return names, dict(zip(names, boxes, strict=True))


def import_original(stage_a: str | Path, out: str | Path, subjects: Sequence[str],
                    bounds: Mapping[str, np.ndarray], cfg: Config,
                    stage_b: Sequence[str | Path] = ()) -> Path:
    """Write a store at ``out`` from original checkpoints; returns ``out``.

    Args:
        stage_a: the stage-A ``.tar`` (decoder, and the planes when ``stage_b`` is empty).
        out: store folder to create (replaced atomically).
        subjects: names of the stage-A planes' rows, in order (the first S of ``human_list.txt``);
            at least S names. Ignored when ``stage_b`` is given (names come from the file names).
        bounds: world box float32 ``[2, 3]`` per subject name; every imported subject needs one.
        cfg: resolved config stored in the manifest (its decoder section becomes ``kind: seed``).
        stage_b: stage-B ``<subject>_NNNNNN.tar`` files; when given, the store holds these planes.
    """
    stage_a = Path(stage_a)
    state_a = _network_state(stage_a)
    decoder_state = seed_decoder_state(stage_a, state_a)
    if stage_b:
        sources = [Path(p) for p in stage_b]
        names = [stage_b_subject(p) for p in sources]

        def load(i: int) -> torch.Tensor:
            return _planes(sources[i], _network_state(sources[i]), 1)[0]
    else:
        planes_a = _planes(stage_a, state_a, None)
        if len(subjects) < planes_a.shape[0]:
            raise InputFileError(stage_a, f"holds {planes_a.shape[0]} subjects but only {len(subjects)} "
                                          "subject names were given")
        names = list(subjects[: planes_a.shape[0]])
        sources = [stage_a] * len(names)

        def load(i: int) -> torch.Tensor:
            return planes_a[i]
    if len(set(names)) != len(names):
        raise InputFileError(sources[0], "the same subject appears twice among the imported files")
    missing = [n for n in names if n not in bounds]
    if missing:
        raise InputFileError(sources[names.index(missing[0])],
                             f"no bounds for subject(s) {', '.join(missing)}")
    cfg = dataclasses.replace(cfg, decoder=DecoderConfig(kind="seed"))
    box = np.stack([np.asarray(bounds[n], np.float32) for n in names])
    first = load(0)
    out = Path(out)
    with atomic_path(out) as tmp:
        store = create_store(tmp, names, box, first.shape[-1], first.shape[1], decoder_state,
                             dataclasses.asdict(cfg.decoder), cfg.to_dict())
        for i in tqdm(range(len(names)), desc="import", unit="subject"):
            planes = first if i == 0 else load(i)
            if planes.shape != first.shape:
                raise InputFileError(sources[i], f"tri-planes {list(planes.shape)} differ from the first "
                                                 f"file's {list(first.shape)}")
            store.planes[i] = planes.numpy().astype(np.float16)
        store.planes.flush()
    return out

"""SMPL / SMPL-X through the ``smplx`` package: the world box of a subject, and TightCap's canonical warp.

Model files are the user's own (``data.smpl_dir``): ``SMPLX_{NEUTRAL,MALE,FEMALE}.npz`` and
``SMPL_NEUTRAL.pkl``, either directly in the folder or in its ``smplx/`` and ``smpl/`` subfolders.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from humanliff.data.bounds import SYNBODY_Y_PAD, TIGHTCAP_Y_PAD, pad_box
from humanliff.errors import HumanLiffError, InputFileError

BIG_POSE = {5: np.pi / 4, 8: -np.pi / 4, 23: -np.pi / 6, 26: np.pi / 6}
"""The canonical "big pose": SMPL axis-angle entries (z of the hips and ankles), radians."""
SMPLX_OPTIONS = dict(use_face_contour=True, flat_hand_mean=True, use_pca=False, num_betas=10,
                     num_expression_coeffs=10)
"""The original's SMPL-X options."""


def model_file(smpl_dir: str | Path, kind: str, gender: str) -> Path:
    """Path of an SMPL (``kind='smpl'``, ``.pkl``) or SMPL-X (``'smplx'``, ``.npz``) model file."""
    name = f"SMPL_{gender.upper()}.pkl" if kind == "smpl" else f"SMPLX_{gender.upper()}.npz"
    for candidate in (Path(smpl_dir) / name, Path(smpl_dir) / kind / name):
        if candidate.is_file():
            return candidate
    problem = f"missing {kind.upper()} model file (set data.smpl_dir to your SMPL / SMPL-X folder)"
    raise InputFileError(Path(smpl_dir) / kind / name, problem)


@functools.lru_cache(maxsize=8)
def load_model(smpl_dir: str, kind: str, gender: str) -> torch.nn.Module:
    """An ``smplx`` body model (cached); SMPL-X with the original's options."""
    try:
        import smplx
    except ImportError as exc:
        raise HumanLiffError("reading SMPL / SMPL-X needs the smplx package: pip install smplx") from exc
    path = model_file(smpl_dir, kind, gender)
    options = SMPLX_OPTIONS if kind == "smplx" else {}
    try:
        return smplx.create(str(path), model_type=kind, gender=gender, ext=path.suffix[1:], **options)
    except (OSError, KeyError, AttributeError, ValueError, pickle.UnpicklingError) as exc:
        problem = f"not a usable {kind.upper()} model ({exc.__class__.__name__}: {exc})"
        raise InputFileError(path, problem) from exc


def _tensor(params: dict[str, Any], key: str, size: int, path: Path, frame: int | None = 0) -> torch.Tensor:
    """Parameter ``key`` as float32 ``[1, size]`` (frame ``frame`` of a sequence, or the whole array)."""
    if key not in params:
        raise InputFileError(path, f"has no '{key}' parameters")
    value = np.asarray(params[key], dtype=np.float32)
    if frame is not None and value.ndim > 1:
        value = value[frame]
    value = value.reshape(-1)[:size]
    return torch.from_numpy(np.pad(value, (0, size - value.size)))[None]


def _read_params(path: Path, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not path.is_file():
        raise InputFileError(path, "missing")
    try:
        data = np.load(path, allow_pickle=True)
        params = data[key].item()
        meta = data["meta"].item() if "meta" in data.files else {}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise InputFileError(path, f"expected an npz with a '{key}' dict ({exc})") from exc
    return params, meta


def _posed(model: torch.nn.Module, shape: torch.Tensor, full_pose: torch.Tensor, shapedirs: torch.Tensor
           ) -> torch.Tensor:
    from smplx.lbs import lbs

    vertices, _ = lbs(shape, full_pose, model.v_template, shapedirs, model.posedirs, model.J_regressor,
                      model.parents, model.lbs_weights)
    return vertices[0]


@torch.no_grad()
def smplx_vertices(npz_path: str | Path, smpl_dir: str | Path, pose: int = 0) -> np.ndarray:
    """Posed SMPL-X vertices ``[V, 3]`` (world, metres) of SynBody's ``smplx.npz`` (``smplx``, ``meta``)."""
    path = Path(npz_path)
    params, meta = _read_params(path, "smplx")
    model = load_model(str(smpl_dir), "smplx", str(meta.get("gender", "neutral")).lower())
    parts = [("global_orient", 3), ("body_pose", 63), ("jaw_pose", 3), ("leye_pose", 3), ("reye_pose", 3),
             ("left_hand_pose", 45), ("right_hand_pose", 45)]
    full_pose = torch.cat([_tensor(params, k, n, path, pose) for k, n in parts], dim=1)
    shape = torch.cat([_tensor(params, "betas", model.num_betas, path, None),
                       _tensor(params, "expression", model.num_expression_coeffs, path, pose)], dim=1)
    shapedirs = torch.cat([model.shapedirs, model.expr_dirs], dim=-1)
    vertices = _posed(model, shape, full_pose, shapedirs) + _tensor(params, "transl", 3, path, pose)
    return vertices.numpy()


def smplx_bounds(npz_path: str | Path, smpl_dir: str | Path) -> np.ndarray:
    """SynBody's world box: posed SMPL-X vertices, padded 0.05 m (y 0.10 m). float32 ``[2, 3]``."""
    return pad_box(smplx_vertices(npz_path, smpl_dir), y_pad=SYNBODY_Y_PAD)


def read_smpl_params(npz_path: str | Path, pose: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TightCap's ``refit_smpl_2nd.npz`` (key ``smpl``): ``(poses [1, 72], betas [1, 10], Th [1, 3])``."""
    path = Path(npz_path)
    params, _ = _read_params(path, "smpl")
    poses = torch.cat([_tensor(params, "global_orient", 3, path, pose),
                       _tensor(params, "body_pose", 69, path, pose)], dim=1)
    return poses, _tensor(params, "betas", 10, path, None), _tensor(params, "transl", 3, path, 0)


class CanonicalWarp:
    """Warp world points of a posed SMPL subject to the canonical big pose with the mean shape (§1.4).

    Nearest posed vertex (torch, no pytorch3d) gives 24 skinning weights; inverse blended LBS of the
    target pose; remove that vertex's pose and shape blend-shape offsets; add its big-pose offset;
    forward LBS of the big pose with mean-shape joints. ``bounds``: the big-pose box (y padded 0.15 m).
    """

    def __init__(self, model: torch.nn.Module, poses: torch.Tensor, betas: torch.Tensor,
                 th: torch.Tensor) -> None:
        from smplx.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes, vertices2joints

        with torch.no_grad():
            template, weights, parents = model.v_template, model.lbs_weights, model.parents
            betas = betas[:, : model.shapedirs.shape[-1]]
            shape_offsets = blend_shapes(betas, model.shapedirs)[0]

            def pose_state(pose: torch.Tensor, shaped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                rot = batch_rodrigues(pose.reshape(-1, 3)).reshape(1, -1, 3, 3)
                feature = (rot[:, 1:] - torch.eye(3)).reshape(1, -1)
                offsets = (feature @ model.posedirs).reshape(-1, 3)
                joints = vertices2joints(model.J_regressor, shaped[None])
                _, transforms = batch_rigid_transform(rot, joints, parents)
                return offsets, transforms[0]

            big = torch.zeros(1, 72)
            for index, angle in BIG_POSE.items():
                big[0, index] = angle
            self.pose_offsets, self.transforms = pose_state(poses, template + shape_offsets)
            self.big_offsets, self.big_transforms = pose_state(big, template)
            self.shape_offsets, self.weights, self.th = shape_offsets, weights, th.reshape(3)
            self.vertices = self._skin(template + shape_offsets + self.pose_offsets, weights, self.transforms)
            big_vertices = self._skin(template + self.big_offsets, weights, self.big_transforms)
        self.bounds = pad_box(big_vertices.numpy(), y_pad=TIGHTCAP_Y_PAD)

    @staticmethod
    def _skin(points: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
        blended = (weights @ transforms.reshape(-1, 16)).reshape(-1, 4, 4)
        return (blended[:, :3, :3] @ points[..., None])[..., 0] + blended[:, :3, 3]

    def posed_vertices(self) -> torch.Tensor:
        """Posed vertices ``[V, 3]`` in world space (metres)."""
        return self.vertices + self.th

    @torch.no_grad()
    def __call__(self, points: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """Canonical positions ``[..., 3]`` of world points ``[..., 3]`` (on the points' device)."""
        device = points.device
        flat = points.reshape(-1, 3).float() - self.th.to(device)
        vertices = self.vertices.to(device)
        nearest = torch.cat([torch.cdist(part, vertices).argmin(dim=1) for part in flat.split(chunk)])
        weights = self.weights.to(device)[nearest]
        blended = (weights @ self.transforms.to(device).reshape(-1, 16)).reshape(-1, 4, 4)
        rest = torch.linalg.solve(blended[:, :3, :3], flat - blended[:, :3, 3])
        rest = rest - self.pose_offsets.to(device)[nearest] - self.shape_offsets.to(device)[nearest]
        rest = rest + self.big_offsets.to(device)[nearest]
        big = (weights @ self.big_transforms.to(device).reshape(-1, 16)).reshape(-1, 4, 4)
        out = (big[:, :3, :3] @ rest[..., None])[..., 0] + big[:, :3, 3]
        return out.reshape(points.shape)


def tightcap_warp(npz_path: str | Path, smpl_dir: str | Path) -> CanonicalWarp:
    """The canonical warp of a TightCap subject from its ``refit_smpl_2nd.npz`` and ``SMPL_NEUTRAL.pkl``."""
    poses, betas, th = read_smpl_params(npz_path)
    return CanonicalWarp(load_model(str(smpl_dir), "smpl", "neutral"), poses, betas, th)


def tightcap_bounds(warp: CanonicalWarp) -> np.ndarray:
    """TightCap's posed world box: posed SMPL vertices, padded 0.05 m (y 0.15 m). float32 ``[2, 3]``."""
    return pad_box(warp.posed_vertices().numpy(), y_pad=TIGHTCAP_Y_PAD)

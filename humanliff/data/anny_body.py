"""Realistic random bodies from the ``anny`` parametric model (optional: ``pip install humanliff[anny]``).

``anny`` (MakeHuman/MPFB2 assets) gives a 13,718-vertex body with 6 phenotype parameters and a 104-bone rig.
Its first use in a cache folder builds 51 MB of blend-shape data (``anny_cache``); the folder is
``$ANNY_CACHE_DIR`` or ``~/.cache/humanliff/anny``. World frame as the rest of the toolkit: +y up, the body faces
+z, its left is +x; metres. Each vertex gets a body part (from its strongest skinning bone) used by the garments.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from humanliff.data.anny_cache import build_cached
from humanliff.errors import HumanLiffError

MISSING = "--bodies: anny is not installed (pip install humanliff[anny])"
PARTS = ("head", "neck", "torso", "pelvis", "upperarm", "forearm", "hand", "thigh", "shin", "foot")
"""Body parts, by index; ``AnnyBody.part`` holds one index per vertex."""
_BONE_PARTS = (("head", "head"), ("eye", "head"), ("neck", "neck"), ("spine", "torso"), ("clavicle", "torso"),
               ("shoulder", "upperarm"), ("upperarm", "upperarm"), ("lowerarm", "forearm"), ("wrist", "hand"),
               ("finger", "hand"), ("metacarpal", "hand"), ("root", "pelvis"), ("pelvis", "pelvis"),
               ("upperleg", "thigh"), ("lowerleg", "shin"), ("foot", "foot"), ("toe", "foot"))
_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""anny's frame (z up, facing -y) to ours (y up, facing +z)."""


def anny_available() -> bool:
    """Whether ``anny`` and the ray caster ``embreex`` are importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("anny", "embreex"))


def require_anny() -> None:
    """Raise the one-line ``HumanLiffError`` of ``--bodies anny`` when anny is missing."""
    if not anny_available():
        raise HumanLiffError(MISSING)


@functools.lru_cache(maxsize=1)
def anny_model() -> Any:
    """The anny model (default rig and topology, plain linear blend skinning), built once per process."""
    require_anny()
    import anny

    return build_cached(lambda: anny.Anny(skinning_method="lbs"))


@dataclass(frozen=True)
class AnnyBody:
    """One posed body: ``vertices [V, 3]`` float64 (metres, world), ``faces [F, 3]`` int64, ``part [V]`` int
    (index into ``PARTS``), ``joints``: bone name -> head position ``[3]``, ``phenotype``: anny's values."""

    vertices: np.ndarray
    faces: np.ndarray
    part: np.ndarray
    joints: dict[str, np.ndarray]
    phenotype: dict[str, float]

    def joint_y(self, name: str) -> float:
        """Height of a bone's head (metres)."""
        return float(self.joints[name][1])


def random_phenotype(rng: np.random.Generator) -> dict[str, float]:
    """Adult phenotypes in anny's [0, 1] ranges (gender 0 male, 1 female; age 2/3 young adult, 1 elder)."""
    return {"gender": rng.uniform(0.0, 1.0), "age": rng.uniform(0.6, 0.92), "muscle": rng.uniform(0.2, 0.8),
            "weight": rng.uniform(0.15, 0.8), "height": rng.uniform(0.15, 0.7), "proportions": rng.uniform(0.3, 0.8)}


def random_pose(model: Any, rng: np.random.Generator) -> torch.Tensor:
    """Per-bone delta rotations ``[1, J, 4, 4]``: anny's A-pose, arms raised or lowered up to ~10 degrees,
    elbows bent a little, legs slightly apart."""
    import roma

    pose = torch.eye(4, dtype=model.dtype)[None, None].repeat(1, model.bone_count, 1, 1)
    labels = list(model.bone_labels)
    for side, sign in (("L", 1.0), ("R", -1.0)):
        angles = {f"upperarm01.{side}": (0.0, -sign * rng.uniform(-0.12, 0.18), 0.0),
                  f"lowerarm01.{side}": (-rng.uniform(0.0, 0.12), 0.0, 0.0),
                  f"upperleg01.{side}": (0.0, -sign * rng.uniform(0.0, 0.06), 0.0)}
        for bone, rotvec in angles.items():
            rot = roma.rotvec_to_rotmat(torch.tensor(rotvec, dtype=model.dtype))
            pose[0, labels.index(bone), :3, :3] = rot
    return pose


@functools.lru_cache(maxsize=1)
def _vertex_parts() -> np.ndarray:
    model = anny_model()
    bone_part = np.array([next(PARTS.index(p) for prefix, p in _BONE_PARTS if label.startswith(prefix))
                          for label in model.bone_labels])
    strongest = model.vertex_bone_weights.argmax(dim=1, keepdim=True)
    return bone_part[torch.gather(model.vertex_bone_indices, 1, strongest)[:, 0].numpy()]


def random_body(rng: np.random.Generator) -> AnnyBody:
    """A random adult in a mild A-pose, standing on y = 0."""
    model = anny_model()
    phenotype = random_phenotype(rng)
    with torch.no_grad():
        out = model(pose_parameters=random_pose(model, rng), phenotype_kwargs=phenotype)
    vertices = out["vertices"][0].double().numpy() @ _TO_WORLD.T
    heads = out["bone_poses"][0, :, :3, 3].double().numpy() @ _TO_WORLD.T
    lift = np.array([0.0, -vertices[:, 1].min(), 0.0])
    joints = {label: heads[i] + lift for i, label in enumerate(model.bone_labels)}
    return AnnyBody(vertices + lift, model.get_triangular_faces().numpy().astype(np.int64), _vertex_parts(),
                    joints, phenotype)

"""Garments made from an anny body: offset surfaces over the vertices a garment covers, with a hem.

A garment takes the body faces whose vertices it covers and pushes them out along the vertex normals by a gap
(metres, per vertex). Its open edges get a rim back towards the skin (so the cloth has a thickness) and a band
of a darker hem colour. Layers as SynBody: 0 body (skin, underwear, hair), 1 pants (short or long), 2 shirt
(short or long sleeves, tucked under the pants' waistband or loose over it), 3 shoes. A garment's gap exceeds
that of every garment below it wherever both cover the body, except a tucked shirt's hem, which stays inside
the pants; the outer garment is the one seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from humanliff.data.anny_body import PARTS, AnnyBody
from humanliff.data.figures import HAIR, PANTS, SHIRTS, SHOES, SKIN_TONES, UNDERWEAR, pick_colour
from humanliff.data.primitives import Material

HEM_WIDTH = 0.012
"""Width of the darker band along a garment's open edges (metres)."""
SOLE_HEIGHT = 0.022
"""Shoe faces below this height above the ground are sole (metres)."""


@dataclass(frozen=True)
class MeshPart:
    """A triangle mesh of one material on one layer: ``vertices [N, 3]`` (metres, world), ``faces [F, 3]``,
    unit ``normals [N, 3]`` for smooth shading."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    layer: int
    material: Material | Banded

    def shifted(self, offset: np.ndarray) -> MeshPart:
        """The same part moved by ``offset [3]``."""
        material = self.material.shifted(offset) if isinstance(self.material, Banded) else self.material
        return MeshPart(self.vertices + offset, self.faces, self.normals, self.layer, material)


def _parts(body: AnnyBody, *names: str) -> np.ndarray:
    """Vertex mask ``[V]`` of the body parts ``names``."""
    return np.isin(body.part, [PARTS.index(n) for n in names])


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``[V, 3]`` of a mesh."""
    return np.asarray(trimesh.Trimesh(vertices, faces, process=False).vertex_normals)


def _split(vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray, in_second: np.ndarray, layer: int,
           first: Material | Banded, second: Material) -> list[MeshPart]:
    """Two parts sharing vertices: faces where ``in_second [F]`` is false get ``first``, the others ``second``."""
    return [MeshPart(vertices, f, normals, layer, m) for f, m in ((faces[~in_second], first),
                                                                  (faces[in_second], second)) if len(f)]


def garment(body: AnnyBody, normals: np.ndarray, covered: np.ndarray, gap: np.ndarray | float, layer: int,
            material: Material, hem: Material) -> list[MeshPart]:
    """An offset surface over the body faces whose 3 vertices are ``covered [V]``, with rim and hem.

    Args:
        body: the body; normals: its unit vertex normals ``[V, 3]``; gap: distance from the skin (metres,
            scalar or ``[V]``); layer: 1..3; material: the cloth; hem: the colour of the band along open edges.

    Returns:
        The cloth part and its hem part (the hem band plus the rim closing the gap to the skin).
    """
    faces = body.faces[covered[body.faces].all(axis=1)]
    used, local = np.unique(faces, return_inverse=True)
    local = local.reshape(-1, 3)
    gap = np.broadcast_to(np.asarray(gap, dtype=np.float64), covered.shape)[used]
    base, n = body.vertices[used], normals[used]
    edges = np.sort(local[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    open_edges = edges[trimesh.grouping.group_rows(edges, require_count=1)]
    m = len(used)
    outer = _smooth_loops(base + n * gap[:, None], open_edges)
    inner = _smooth_loops(base + n * (0.2 * gap)[:, None], open_edges)
    a, b = open_edges[:, 0], open_edges[:, 1]
    rim = np.concatenate([np.stack([a, b, b + m], 1), np.stack([a, b + m, a + m], 1)])
    vertices, shading = np.concatenate([outer, inner]), np.concatenate([n, n])
    near_edge = np.zeros(m, dtype=bool)
    if len(open_edges):
        near_edge = cKDTree(outer[np.unique(open_edges)]).query(outer)[0] < HEM_WIDTH
    in_hem = np.concatenate([near_edge[local].all(axis=1), np.ones(len(rim), dtype=bool)])
    return _split(vertices, shading, np.concatenate([local, rim]), in_hem, layer, material, hem)


def _smooth_loops(points: np.ndarray, edges: np.ndarray, iterations: int = 6) -> np.ndarray:
    """Smooth the open edges ``[E, 2]`` of a mesh along themselves (the zig-zag of a cut along triangles
    becomes a smooth hem line) with Taubin's shrink-free smoothing (steps +0.5, -0.53); other points stay."""
    points = points.copy()
    if not len(edges):
        return points
    ends = np.concatenate([edges, edges[:, ::-1]])
    count = np.bincount(ends[:, 0], minlength=len(points))[:, None]
    on_edge = count[:, 0] > 0
    for step in (0.5, -0.53) * iterations:
        total = np.zeros_like(points)
        np.add.at(total, ends[:, 0], points[ends[:, 1]])
        points[on_edge] += step * (total[on_edge] / count[on_edge] - points[on_edge])
    return points


@dataclass(frozen=True)
class Banded:
    """A base material with boxes of other colours (underwear over the skin): each band is
    ``(lo [3], hi [3], colour)`` and colours the points inside that axis-aligned box (metres, world; evaluated
    per hit point, so the band's edges are smooth whatever the triangles)."""

    base: Material
    bands: tuple[tuple[np.ndarray, np.ndarray, tuple[float, float, float]], ...]

    def albedo(self, points: np.ndarray) -> np.ndarray:
        """Albedo ``[N, 3]`` at surface points ``[N, 3]``."""
        out = self.base.albedo(points)
        for lo, hi, colour in self.bands:
            out[((points > lo) & (points < hi)).all(axis=1)] = colour
        return out

    def shifted(self, offset: np.ndarray) -> Banded:
        """The same bands moved by ``offset [3]``."""
        return Banded(self.base, tuple((lo + offset, hi + offset, c) for lo, hi, c in self.bands))


def _darker(material: Material, factor: float = 0.7) -> Material:
    return Material(tuple(c * factor for c in material.colour))


def _sleeve_coordinate(body: AnnyBody) -> np.ndarray:
    """Per vertex, its position along its side's shoulder-to-wrist segment (0 shoulder, 1 wrist)."""
    t = np.empty(len(body.vertices))
    for side, sign in (("L", 1.0), ("R", -1.0)):
        start, end = body.joints[f"shoulder01.{side}"], body.joints[f"wrist.{side}"]
        axis = end - start
        on_side = np.sign(body.vertices[:, 0]) == sign
        t[on_side] = (body.vertices[on_side] - start) @ axis / float(axis @ axis)
    return t


def _pattern(rng: np.random.Generator, colour: tuple, palette: tuple, scale: float) -> Material:
    pattern = ("plain", "plain", "hstripes", "vstripes")[rng.integers(4)]
    second = pick_colour(rng, palette + ((0.1, 0.1, 0.1), (0.95, 0.95, 0.95))) if pattern != "plain" else None
    return Material(colour, second, pattern, float(rng.uniform(0.025, 0.05) * scale))


def body_parts(body: AnnyBody, normals: np.ndarray, rng: np.random.Generator) -> list[MeshPart]:
    """Layer 0: skin of a random tone, underwear (briefs, and a top for feminine bodies) and hair (buzz cut,
    short, or long down the neck)."""
    v, y = body.vertices, body.vertices[:, 1]
    hip, s = body.joint_y("upperleg01.L"), body.joint_y("head") / 1.6
    skin, under = Material(pick_colour(rng, SKIN_TONES, 0.03)), Material(pick_colour(rng, UNDERWEAR))
    trunk = v[_parts(body, "pelvis", "torso")]
    half = np.array([np.abs(trunk[:, 0]).max() + 0.01, 0.0, 1.0])
    bands = [(np.array([0.0, hip - 0.085 * s, 0.0]) - half, np.array([0.0, hip + 0.075 * s, 0.0]) + half, under.colour)]
    if body.phenotype["gender"] > 0.5:  # anny: 0 male, 1 female
        chest = body.joint_y("spine01")
        bands.append((np.array([0.0, chest - 0.05 * s, 0.0]) - half, np.array([0.0, chest + 0.065 * s, 0.0]) + half,
                      under.colour))
    arms = _parts(body, "upperarm", "forearm", "hand")[body.faces].any(axis=1)
    parts = _split(v, normals, body.faces, arms, 0, Banded(skin, tuple(bands)), skin)
    style = rng.choice(3, p=(0.2, 0.45, 0.35))
    head = body.joints["head"]
    rel = v - head
    top = y[_parts(body, "head")].max()
    scalp = _parts(body, "head") & ((y > top - 0.075 * s) | ((rel[:, 2] < 0.0) & (rel[:, 1] > -0.05 * s)))
    scalp &= ~((rel[:, 2] > 0.05 * s) & (y < top - 0.045 * s))
    if style == 2:  # long: down the back of the neck to the shoulders
        scalp |= _parts(body, "head", "neck") & (rel[:, 2] < -0.01 * s) & (y > body.joint_y("neck01") - 0.04 * s)
    gap = (0.004, 0.012, 0.016)[style] + (0.012 * np.clip(-rel[:, 1] / (0.15 * s), 0, 1) if style == 2 else 0.0)
    hair = Material(pick_colour(rng, HAIR))
    return parts + garment(body, normals, scalp, gap, 0, hair, _darker(hair, 0.85))


def pants(body: AnnyBody, normals: np.ndarray, rng: np.random.Generator) -> tuple[list[MeshPart], float, float]:
    """Layer 1: long pants or shorts from a waist above the hips. Returns the parts, the waist height and
    the pants' gap (metres)."""
    y, s = body.vertices[:, 1], body.joint_y("head") / 1.6
    hip, knee, ankle = (body.joint_y(f"{b}.L") for b in ("upperleg01", "lowerleg01", "foot"))
    waist = hip + rng.uniform(0.08, 0.13) * s
    cuff = ankle + 0.03 * s if rng.uniform() < 0.6 else knee + rng.uniform(0.1, 0.45) * (hip - knee)
    covered = _parts(body, "pelvis", "thigh", "shin", "torso") & (y <= waist) & (y >= cuff)
    gap = rng.uniform(0.010, 0.016)
    loose_legs = gap + 0.012 * np.clip((hip - y) / (hip - ankle), 0.0, 1.0)
    cloth = Material(pick_colour(rng, PANTS))
    return garment(body, normals, covered, loose_legs, 1, cloth, _darker(cloth)), waist, gap


def shirt(body: AnnyBody, normals: np.ndarray, rng: np.random.Generator, waist: float, pants_gap: float
          ) -> list[MeshPart]:
    """Layer 2: a shirt with short or long sleeves, tucked into the pants or loose over them."""
    v, y, s = body.vertices, body.vertices[:, 1], body.joint_y("head") / 1.6
    hip, neck = body.joint_y("upperleg01.L"), body.joint_y("neck01")
    tucked = rng.uniform() < 0.4
    hem_y = waist - 0.05 * s if tucked else hip - rng.uniform(0.0, 0.08) * s
    front = np.clip((v[:, 2] - body.joints["neck01"][2]) / (0.08 * s), 0.0, 1.0)
    neckline = neck - 0.015 * s - rng.uniform(0.0, 0.06) * s * front
    sleeve = rng.uniform(0.25, 0.42) if rng.uniform() < 0.55 else 0.97
    t = _sleeve_coordinate(body)
    arms = _parts(body, "upperarm", "forearm") & (t <= sleeve)
    covered = (_parts(body, "torso", "pelvis", "thigh", "neck") | arms) & (y >= hem_y) & (y <= neckline)
    chest = body.joint_y("spine01")
    drop = np.clip((chest - y) / (chest - hip), 0.0, 1.0)
    if tucked:
        gap = np.where(y < waist + 0.02 * s, 0.5 * pants_gap, 0.008)
    else:
        gap = np.where(y < waist + 0.03 * s, pants_gap + 0.012, 0.010) + 0.014 * drop
    gap = np.where(arms, 0.009 + 0.006 * (sleeve < 0.5), gap)
    cloth = _pattern(rng, pick_colour(rng, SHIRTS), SHIRTS, s)
    return garment(body, normals, covered, gap, 2, cloth, _darker(Material(cloth.colour)))


def shoes(body: AnnyBody, normals: np.ndarray, rng: np.random.Generator) -> list[MeshPart]:
    """Layer 3: low shoes or ankle boots, with a sole of another colour."""
    y, s = body.vertices[:, 1], body.joint_y("head") / 1.6
    collar = body.joint_y("foot.L") + rng.uniform(-0.01, 0.07) * s
    covered = _parts(body, "foot", "shin") & (y <= collar)
    upper = Material(pick_colour(rng, SHOES))
    sole = Material(pick_colour(rng, ((0.92, 0.92, 0.9), (0.12, 0.12, 0.12), (0.55, 0.35, 0.2))))
    gap = 0.007 + 0.006 * (y < SOLE_HEIGHT)
    cloth, hem = garment(body, normals, covered, gap, 3, upper, _darker(upper))
    low = cloth.vertices[:, 1][cloth.faces].max(axis=1) < SOLE_HEIGHT
    return _split(cloth.vertices, cloth.normals, cloth.faces, low, 3, upper, sole) + [hem]


def dressed_body(body: AnnyBody, rng: np.random.Generator) -> list[MeshPart]:
    """All parts of the 4 layers of one subject, centred on the box of the clothed body."""
    normals = vertex_normals(body.vertices, body.faces)
    parts = body_parts(body, normals, rng)
    legs, waist, pants_gap = pants(body, normals, rng)
    parts += legs + shirt(body, normals, rng, waist, pants_gap) + shoes(body, normals, rng)
    lo, hi = mesh_bounds(parts)
    return [p.shifted(-0.5 * (lo + hi)) for p in parts]


def mesh_bounds(parts: list[MeshPart]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box ``(min [3], max [3])`` of the vertices of all parts (metres, unpadded)."""
    points = np.concatenate([p.vertices[np.unique(p.faces)] for p in parts])
    return points.min(axis=0), points.max(axis=0)

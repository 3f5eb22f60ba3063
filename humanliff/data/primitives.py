"""Solid primitives with analytic ray intersection and normals: the building blocks of the synthetic humans.

Each primitive belongs to a layer (0 body, 1 pants, 2 shirt, 3 shoes) and carries a material. Intersections
take one ray origin ``[3]`` and many directions ``[N, 3]`` (not necessarily unit) and return the ray
parameter of the first entry, ``inf`` where the ray misses. Units: metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATTERNS = ("plain", "hstripes", "vstripes")


@dataclass(frozen=True)
class Material:
    """Albedo in [0, 1]; ``pattern`` alternates ``colour`` and ``colour2`` in stripes ``period`` metres wide.

    Horizontal stripes follow world y; vertical ones the angle around the world's vertical axis.
    """

    colour: tuple[float, float, float]
    colour2: tuple[float, float, float] | None = None
    pattern: str = "plain"
    period: float = 0.05

    def albedo(self, points: np.ndarray) -> np.ndarray:
        """Albedo ``[N, 3]`` at surface points ``[N, 3]``."""
        base = np.broadcast_to(np.asarray(self.colour, dtype=np.float32), points.shape).copy()
        if self.pattern == "plain" or self.colour2 is None:
            return base
        horizontal = self.pattern == "hstripes"
        coord = points[:, 1] if horizontal else np.arctan2(points[:, 0], points[:, 2]) * 0.3
        second = np.floor(coord / self.period).astype(np.int64) % 2 == 1
        base[second] = self.colour2
        return base


def _first_root(a: np.ndarray, half_b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Smaller positive root of ``a t^2 + 2 half_b t + c`` (inf where none)."""
    disc = half_b * half_b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-half_b - np.sqrt(disc)) / a
    return np.where((disc > 0) & (t > 0), t, np.inf)


@dataclass(frozen=True)
class Ellipsoid:
    """An oriented ellipsoid: ``centre [3]``, ``rotation [3, 3]`` (columns = local axes), ``radii [3]``."""

    centre: np.ndarray
    rotation: np.ndarray
    radii: np.ndarray
    layer: int
    material: Material

    def _to_unit(self) -> np.ndarray:
        return (self.rotation / self.radii).T

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """First hit ``t [N]`` of rays ``origin + t * dirs``."""
        m = self._to_unit()
        o = m @ (origin - self.centre)
        d = dirs @ m.T
        return _first_root(np.einsum("ni,ni->n", d, d), d @ o, float(o @ o) - 1.0)

    def normal(self, points: np.ndarray) -> np.ndarray:
        """Unit outward normals ``[N, 3]``."""
        m = self._to_unit()
        n = (points - self.centre) @ (m.T @ m)
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return self.centre, float(self.radii.max())

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box ``(min [3], max [3])``."""
        half = np.sqrt(((self.rotation * self.radii) ** 2).sum(axis=1))
        return self.centre - half, self.centre + half

    def inflated(self, amount: float, layer: int, material: Material) -> Ellipsoid:
        """A larger copy (every radius + ``amount``) on another layer, e.g. a garment over a body part."""
        return Ellipsoid(self.centre, self.rotation, self.radii + amount, layer, material)


@dataclass(frozen=True)
class Capsule:
    """All points within ``radius`` of the segment ``a``-``b``."""

    a: np.ndarray
    b: np.ndarray
    radius: float
    layer: int
    material: Material

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """First hit ``t [N]``: the nearest of the side (within the segment) and the two end spheres."""
        axis = self.b - self.a
        length = float(np.linalg.norm(axis))
        u = axis / length
        oa = origin - self.a
        du, ou = dirs @ u, float(oa @ u)
        dd = np.einsum("ni,ni->n", dirs, dirs)
        side = _first_root(dd - du * du, dirs @ oa - du * ou, float(oa @ oa) - ou * ou - self.radius ** 2)
        h = ou + side * du
        side = np.where((h >= 0) & (h <= length), side, np.inf)
        ends = [_first_root(dd, dirs @ (origin - e), float((origin - e) @ (origin - e)) - self.radius ** 2)
                for e in (self.a, self.b)]
        return np.minimum(side, np.minimum(*ends))

    def normal(self, points: np.ndarray) -> np.ndarray:
        """Unit outward normals ``[N, 3]``."""
        axis = self.b - self.a
        h = np.clip((points - self.a) @ axis / float(axis @ axis), 0.0, 1.0)
        n = points - (self.a + h[:, None] * axis)
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return 0.5 * (self.a + self.b), 0.5 * float(np.linalg.norm(self.b - self.a)) + self.radius

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box ``(min [3], max [3])``."""
        return np.minimum(self.a, self.b) - self.radius, np.maximum(self.a, self.b) + self.radius


Primitive = Ellipsoid | Capsule


def bone_frame(direction: np.ndarray) -> np.ndarray:
    """Rotation ``[3, 3]`` whose second column is ``direction`` and third is as close to +z as possible."""
    u = direction / np.linalg.norm(direction)
    z = np.array([0.0, 0.0, 1.0]) - u[2] * u
    z = z / np.linalg.norm(z)
    return np.stack([np.cross(u, z), u, z], axis=1)

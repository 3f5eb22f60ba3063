"""Random layered human figures in an A-pose, made of ellipsoids and capsules.

World frame as SMPL: +y up, the figure faces +z, its left is +x; metres. Layer 0 is the body (skin, hair,
underwear), layer 1 adds pants (short or long), layer 2 a shirt (sleeve length, loose or tight, sometimes
striped), layer 3 shoes. Every garment part is a larger copy of the body part it covers, so each layer
hides what it covers. The figure is centred on its box: the origin is the centre of the clothed body.
"""

from __future__ import annotations

import numpy as np

from humanliff.data.primitives import Capsule, Ellipsoid, Material, Primitive, bone_frame

SKIN_TONES = ((0.96, 0.80, 0.69), (0.91, 0.72, 0.58), (0.82, 0.62, 0.47), (0.69, 0.50, 0.36),
              (0.55, 0.38, 0.26), (0.41, 0.28, 0.19))
HAIR = ((0.08, 0.06, 0.05), (0.25, 0.15, 0.08), (0.55, 0.38, 0.18), (0.80, 0.68, 0.45), (0.45, 0.45, 0.45))
UNDERWEAR = ((0.92, 0.92, 0.92), (0.20, 0.20, 0.22), (0.35, 0.45, 0.65))
PANTS = ((0.16, 0.25, 0.50), (0.12, 0.12, 0.14), (0.45, 0.47, 0.50), (0.33, 0.38, 0.20), (0.72, 0.62, 0.42),
         (0.40, 0.24, 0.14), (0.10, 0.14, 0.30))
SHIRTS = ((0.85, 0.15, 0.15), (0.15, 0.55, 0.25), (0.20, 0.40, 0.85), (0.95, 0.80, 0.15), (0.95, 0.95, 0.95),
          (0.55, 0.25, 0.65), (0.95, 0.50, 0.15), (0.15, 0.65, 0.70))
SHOES = ((0.95, 0.95, 0.95), (0.10, 0.10, 0.10), (0.45, 0.25, 0.12), (0.80, 0.10, 0.10), (0.15, 0.30, 0.75))


def pick_colour(rng: np.random.Generator, palette: tuple, jitter: float = 0.04) -> tuple[float, float, float]:
    """A colour of ``palette``, each channel jittered by up to ``jitter`` (clipped to [0.05, 1])."""
    colour = np.asarray(palette[rng.integers(len(palette))]) + rng.uniform(-jitter, jitter, 3)
    return tuple(float(c) for c in np.clip(colour, 0.05, 1.0))


def _limb(start: np.ndarray, end: np.ndarray, radius: float, layer: int, material: Material,
          bulge: float = 1.0) -> list[Primitive]:
    """A limb segment: a capsule, plus a muscle-shaped ellipsoid ``bulge`` times as thick at its middle."""
    parts: list[Primitive] = [Capsule(start, end, radius, layer, material)]
    if bulge > 1.0:
        half = 0.5 * float(np.linalg.norm(end - start))
        radii = np.array([radius * bulge, half * 0.95, radius * bulge])
        parts.append(Ellipsoid(0.5 * (start + end), bone_frame(end - start), radii, layer, material))
    return parts


def random_figure(rng: np.random.Generator) -> list[Primitive]:
    """One random human with its 4 layers of clothing, centred on its box."""
    height = rng.uniform(1.5, 1.9)
    s = height / 1.75
    thick = rng.uniform(0.85, 1.25)
    shoulder = rng.uniform(0.9, 1.12)
    hip = rng.uniform(0.9, 1.15)
    belly = rng.uniform(0.9, 1.25)
    leg = rng.uniform(0.47, 0.52) * height
    arm_angle = np.radians(rng.uniform(35.0, 50.0))
    skin = Material(pick_colour(rng, SKIN_TONES, 0.03))

    head = np.array([0.0, height - 0.115 * s, 0.0])
    neck_top, neck_bottom = head + [0, -0.07 * s, -0.01 * s], np.array([0.0, height - 0.29 * s, -0.01 * s])
    y_shoulder = height - 0.30 * s
    hip_y = leg
    ankle_y = 0.085 * s
    knee_y = ankle_y + 0.52 * (hip_y - ankle_y)
    chest_c = np.array([0.0, y_shoulder - 0.12 * s, 0.0])
    chest_r = np.array([0.16 * s * shoulder, 0.16 * s, 0.105 * s * thick])
    belly_c = np.array([0.0, 0.5 * (chest_c[1] + hip_y) + 0.02 * s, 0.005 * s])
    belly_r = np.array([0.135 * s * hip, 0.5 * (chest_c[1] - hip_y), 0.10 * s * thick * belly])
    pelvis_c = np.array([0.0, hip_y + 0.03 * s, -0.005 * s])
    pelvis_r = np.array([0.16 * s * hip, 0.105 * s, 0.11 * s * thick])
    eye = np.eye(3)

    body: list[Primitive] = [
        Ellipsoid(head, eye, np.array([0.078, 0.112, 0.095]) * s, 0, skin),
        Capsule(neck_top, neck_bottom, 0.052 * s * thick, 0, skin),
        Ellipsoid(chest_c, eye, chest_r, 0, skin),
        Ellipsoid(belly_c, eye, belly_r, 0, skin),
        Ellipsoid(pelvis_c, eye, pelvis_r, 0, Material(pick_colour(rng, UNDERWEAR))),
    ]
    hair_kind = rng.integers(3)
    if hair_kind > 0:
        hair = Material(pick_colour(rng, HAIR))
        cap = np.array([0.083, 0.108, 0.094]) * s
        body.append(Ellipsoid(head + [0, 0.022 * s, -0.022 * s], eye, cap, 0, hair))
        if hair_kind == 2:
            long_hair = np.array([0.085, 0.16, 0.06]) * s
            body.append(Ellipsoid(head + [0, -0.09 * s, -0.045 * s], eye, long_hair, 0, hair))

    pants = Material(pick_colour(rng, PANTS))
    long_pants = rng.uniform() < 0.6
    shirt_colour = pick_colour(rng, SHIRTS)
    pattern = ("plain", "plain", "hstripes", "vstripes")[rng.integers(4)]
    shirt = Material(shirt_colour, pick_colour(rng, SHIRTS + ((0.1, 0.1, 0.1),)) if pattern != "plain" else None,
                     pattern, float(rng.uniform(0.03, 0.06) * s))
    loose = rng.uniform() < 0.5
    sleeves = ("none", "short", "long")[rng.integers(3)]
    shoes = Material(pick_colour(rng, SHOES))
    pants_gap = 0.014 * s
    shirt_gap = (0.035 if loose else 0.014) * s

    clothes: list[Primitive] = [
        Ellipsoid(pelvis_c, eye, pelvis_r + pants_gap, 1, pants),
        Ellipsoid(chest_c + [0, 0.005 * s, 0], eye, chest_r + shirt_gap, 2, shirt),
        Ellipsoid(belly_c - [0, 0.02 * s, 0], eye, belly_r + [shirt_gap, shirt_gap + 0.04 * s, shirt_gap], 2,
                  shirt),
        Ellipsoid(pelvis_c + [0, 0.045 * s, 0], eye,
                  np.array([pelvis_r[0], 0.075 * s, pelvis_r[2]]) + pants_gap + shirt_gap, 2, shirt),
    ]
    for side in (-1.0, 1.0):
        hip_joint = np.array([side * 0.085 * s * hip, hip_y, 0.0])
        knee = np.array([side * 0.10 * s * hip, knee_y, 0.01 * s])
        ankle = np.array([side * 0.11 * s * hip, ankle_y, -0.01 * s])
        thigh_r, shin_r = 0.062 * s * thick, 0.042 * s * thick
        body += _limb(hip_joint, knee, thigh_r, 0, skin, bulge=1.35)
        body += _limb(knee, ankle, shin_r, 0, skin, bulge=1.3)
        foot = np.array([0.045, 0.04, 0.12]) * s
        body.append(Ellipsoid(np.array([ankle[0], 0.04 * s, 0.045 * s]), eye, foot, 0, skin))
        pant_r = thigh_r * 1.35 + pants_gap
        if long_pants:
            clothes.append(Capsule(hip_joint + [0, 0.03 * s, 0], knee, pant_r, 1, pants))
            clothes.append(Capsule(knee, ankle + [0, 0.03 * s, 0], shin_r * 1.3 + pants_gap * 1.5, 1, pants))
        else:
            cuff = hip_joint + rng.uniform(0.45, 0.8) * (knee - hip_joint)
            clothes.append(Capsule(hip_joint + [0, 0.03 * s, 0], cuff, pant_r, 1, pants))
        clothes.append(Ellipsoid(np.array([ankle[0], 0.045 * s, 0.05 * s]), eye,
                                 np.array([0.06, 0.058, 0.14]) * s, 3, shoes))
        clothes.append(Ellipsoid(np.array([ankle[0], 0.015 * s, 0.05 * s]), eye,
                                 np.array([0.064, 0.02, 0.145]) * s, 3, Material((0.9, 0.9, 0.88))))

        shoulder_joint = np.array([side * 0.17 * s * shoulder, y_shoulder - 0.03 * s, -0.01 * s])
        down = np.array([side * np.sin(arm_angle), -np.cos(arm_angle), 0.0])
        elbow = shoulder_joint + 0.29 * s * down
        wrist = elbow + 0.25 * s * down
        upper_r, fore_r = 0.042 * s * thick, 0.034 * s * thick
        deltoid = np.array([0.06, 0.055, 0.055]) * s * thick
        body.append(Ellipsoid(shoulder_joint, eye, deltoid, 0, skin))
        body += _limb(shoulder_joint, elbow, upper_r, 0, skin, bulge=1.25)
        body += _limb(elbow, wrist, fore_r, 0, skin, bulge=1.3)
        hand = np.array([0.028, 0.08, 0.045]) * s
        body.append(Ellipsoid(wrist + 0.075 * s * down, bone_frame(down), hand, 0, skin))
        sleeve_gap = shirt_gap * 0.8
        if sleeves != "none":
            clothes.append(Ellipsoid(shoulder_joint, eye, deltoid + sleeve_gap, 2, shirt))
            end = elbow - 0.45 * (elbow - shoulder_joint) if sleeves == "short" else elbow
            clothes.append(Capsule(shoulder_joint, end, upper_r * 1.25 + sleeve_gap, 2, shirt))
            if sleeves == "long":
                clothes.append(Capsule(elbow, wrist - 0.01 * s * down, fore_r * 1.3 + sleeve_gap, 2, shirt))
    figure = body + clothes
    lo, hi = figure_bounds(figure)
    return [_shifted(p, -0.5 * (lo + hi)) for p in figure]


def _shifted(p: Primitive, offset: np.ndarray) -> Primitive:
    if isinstance(p, Ellipsoid):
        return Ellipsoid(p.centre + offset, p.rotation, p.radii, p.layer, p.material)
    return Capsule(p.a + offset, p.b + offset, p.radius, p.layer, p.material)


def figure_bounds(figure: list[Primitive]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box ``(min [3], max [3])`` of all layers of a figure (metres, unpadded)."""
    return (np.min([p.extent()[0] for p in figure], axis=0), np.max([p.extent()[1] for p in figure], axis=0))

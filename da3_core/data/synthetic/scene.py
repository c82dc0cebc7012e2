"""Synthetic scenes: primitives + sky + light, and the seeded procedural generator ``make_scene``.

World frame: right-handed, +z up, metres. Everything is deterministic given ``(kind, seed)``.

Kinds:
- ``"room"``: closed indoor box room (floor, ceiling, walls) with furniture-like oriented boxes (some stacked)
  and spheres; no sky visible. A free disc around the room centre keeps cameras clear.
- ``"objects"``: outdoor: infinite ground plane, sky, boxes / spheres near the origin and a ring of distant
  tall boxes ("buildings"); sky visible above the horizon.
- ``"courtyard"``: open-top walled yard (walls 3-6 m, no ceiling, sky visible) with objects inside.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from da3_core.data.synthetic.primitives import Box, Plane, Primitive, Room, Sphere
from da3_core.data.synthetic.textures import make_material

__all__ = ["SCENE_KINDS", "Sky", "Scene", "make_scene"]

SCENE_KINDS = ("room", "objects", "courtyard")


@dataclass(eq=False)
class Sky:
    """Sky colour as a function of the view direction only: horizon -> zenith gradient by elevation."""

    horizon: np.ndarray  # (3,) RGB in [0, 1]
    zenith: np.ndarray  # (3,)

    def colour(self, d: np.ndarray) -> np.ndarray:
        """RGB (M, 3) float32 for world directions d (M, 3) (any length)."""
        e = np.clip(d[:, 2] / np.linalg.norm(d, axis=1), 0.0, 1.0).astype(np.float32)
        w = np.sqrt(e)[:, None]
        return self.horizon.astype(np.float32) * (1.0 - w) + self.zenith.astype(np.float32) * w


@dataclass(eq=False)
class Scene:
    """A renderable scene.

    Attributes:
        primitives: list of :class:`Plane` / :class:`Box` / :class:`Sphere` / :class:`Room`; a pixel's instance
            id is the index into this list (-1 = sky).
        sky: colour of rays that hit nothing (depth = inf there).
        light_dir: (3,) unit world vector from surfaces towards the (directional) light.
        ambient, diffuse: shading weights: ``colour = texture * (ambient + diffuse * max(0, n . light_dir))``.
        kind, seed: how it was generated.
        free_center: (3,) a point of free space cameras can look at / orbit (at camera height).
        free_radius: radius (m) of a horizontal disc around ``free_center`` free of objects.
        camera_z: (2,) allowed camera heights (m).
        bounds: (2, 3) region cameras may use (inside the room / near the objects).
    """

    primitives: list[Primitive]
    sky: Sky
    light_dir: np.ndarray
    ambient: float = 0.35
    diffuse: float = 0.65
    kind: str = "custom"
    seed: int = 0
    free_center: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.5]))
    free_radius: float = 1.0
    camera_z: tuple[float, float] = (1.2, 1.8)
    bounds: np.ndarray = field(default_factory=lambda: np.array([[-5.0, -5.0, 0.5], [5.0, 5.0, 3.0]]))

    def sdf(self, p: np.ndarray) -> np.ndarray:
        """Signed distance (M,) from world points p (M, 3) to the nearest surface (> 0 in free space)."""
        p = np.atleast_2d(np.asarray(p, np.float64))
        return np.min(np.stack([prim.sdf(p) for prim in self.primitives]), axis=0)


def _yaw(rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _sky(rng: np.random.Generator) -> Sky:
    h = rng.uniform(0.52, 0.66)
    zen = np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.35, 0.8), rng.uniform(0.55, 0.95)))
    hor = np.array(colorsys.hsv_to_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.25), rng.uniform(0.8, 1.0)))
    return Sky(hor, zen)


def _light(rng: np.random.Generator) -> np.ndarray:
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(25), np.radians(70))
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def _place_objects(
    rng: np.random.Generator,
    prims: list,
    n_boxes: int,
    n_spheres: int,
    r_min: float,
    r_max: float,
    extent: tuple[float, float],
    size: tuple[float, float],
    floor_z: float,
    stack_p: float = 0.3,
) -> None:
    """Boxes (yawed) and spheres resting on the floor at horizontal distance [r_min, r_max] from the origin,
    clipped to |x|, |y| <= extent; some boxes carry a stacked box or sphere. Appends to ``prims``."""
    boxes: list[Box] = []
    for _ in range(n_boxes):
        for _try in range(30):
            half = rng.uniform(size[0], size[1], 3) / 2
            half[2] = rng.uniform(size[0], 1.6 * size[1]) / 2
            rot = _yaw(rng)
            reach = np.hypot(half[0], half[1])
            r = rng.uniform(r_min + reach, max(r_max - reach, r_min + reach + 1e-3))
            a = rng.uniform(0, 2 * np.pi)
            c = np.array([r * np.cos(a), r * np.sin(a), floor_z + half[2]])
            if abs(c[0]) + reach <= extent[0] and abs(c[1]) + reach <= extent[1]:
                break
        else:
            continue
        box = Box(c, half, make_material(rng, hue=rng.random(), name="box"), rot)
        boxes.append(box)
        prims.append(box)
        if rng.random() < stack_p:  # something on top
            if rng.random() < 0.5:
                h2 = np.minimum(half * rng.uniform(0.4, 0.8, 3), half)
                prims.append(Box(c + [0, 0, half[2] + h2[2]], h2, make_material(rng, name="box"), _yaw(rng)))
            else:
                rad = rng.uniform(0.3, 0.9) * min(half[0], half[1])
                prims.append(
                    Sphere(c + [0, 0, half[2] + rad], rad, make_material(rng, name="sphere"), _random_rotation(rng))
                )
    for _ in range(n_spheres):
        rad = rng.uniform(size[0], size[1]) / 2
        r = rng.uniform(r_min + rad, max(r_max - rad, r_min + rad + 1e-3))
        a = rng.uniform(0, 2 * np.pi)
        c = np.array([r * np.cos(a), r * np.sin(a), floor_z + rad])
        c[:2] = np.clip(c[:2], -np.array(extent) + rad, np.array(extent) - rad)
        prims.append(Sphere(c, rad, make_material(rng, name="sphere"), _random_rotation(rng)))


def make_scene(kind: str = "room", seed: int = 0) -> Scene:
    """Procedural scene of ``kind`` (one of :data:`SCENE_KINDS`), deterministic in ``seed``."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {SCENE_KINDS}")
    rng = np.random.default_rng([seed, SCENE_KINDS.index(kind)])
    sky = _sky(rng)
    prims: list = []
    if kind == "room":
        L = np.array([rng.uniform(5.0, 9.0), rng.uniform(4.0, 7.0), rng.uniform(2.5, 3.2)])
        lo, hi = np.array([-L[0] / 2, -L[1] / 2, 0.0]), np.array([L[0] / 2, L[1] / 2, L[2]])
        mats = (
            make_material(rng, name="wall"),
            make_material(rng, rng.choice(["tiles", "stripes", "checker"]), name="floor"),
            make_material(rng, "noise", name="ceiling"),
        )
        prims.append(Room(lo, hi, mats, ceiling=True))
        free = 0.3 * min(L[0], L[1])
        _place_objects(
            rng,
            prims,
            int(rng.integers(4, 9)),
            int(rng.integers(2, 5)),
            free,
            0.75 * np.hypot(L[0], L[1]),
            (L[0] / 2 - 0.05, L[1] / 2 - 0.05),
            (0.4, 1.4),
            0.0,
        )
        return Scene(
            prims,
            sky,
            _light(rng),
            kind=kind,
            seed=seed,
            free_center=np.array([0.0, 0.0, 1.5]),
            free_radius=free,
            camera_z=(1.2, min(1.8, L[2] - 0.5)),
            bounds=np.stack((lo + [0.4, 0.4, 0.5], hi - [0.4, 0.4, 0.5])),
        )
    if kind == "objects":
        prims.append(
            Plane([0.0, 0.0, 0.0], [0.0, 0.0, 1.0], make_material(rng, name="ground", tile_m=rng.uniform(1.0, 4.0)))
        )
        _place_objects(
            rng,
            prims,
            int(rng.integers(4, 9)),
            int(rng.integers(2, 6)),
            0.0,
            5.0,
            (5.0, 5.0),
            (0.4, 1.6),
            0.0,
            stack_p=0.4,
        )
        for _ in range(int(rng.integers(4, 9))):  # distant buildings
            a, r = rng.uniform(0, 2 * np.pi), rng.uniform(25.0, 45.0)
            half = np.array([rng.uniform(2, 6), rng.uniform(2, 6), rng.uniform(3, 12)])
            prims.append(
                Box(
                    [r * np.cos(a), r * np.sin(a), half[2]],
                    half,
                    make_material(rng, "tiles", name="building", tile_m=rng.uniform(2, 6)),
                    _yaw(rng),
                )
            )
        return Scene(
            prims,
            sky,
            _light(rng),
            kind=kind,
            seed=seed,
            free_center=np.array([0.0, 0.0, 0.8]),
            free_radius=0.0,
            camera_z=(1.2, 3.0),
            bounds=np.array([[-12.0, -12.0, 0.5], [12.0, 12.0, 4.0]]),
        )
    # courtyard
    L = np.array([rng.uniform(12.0, 20.0), rng.uniform(12.0, 20.0), rng.uniform(3.0, 6.0)])
    lo, hi = np.array([-L[0] / 2, -L[1] / 2, 0.0]), np.array([L[0] / 2, L[1] / 2, L[2]])
    mats = (
        make_material(rng, rng.choice(["tiles", "stripes", "noise"]), name="wall", tile_m=rng.uniform(1, 3)),
        make_material(rng, name="ground", tile_m=rng.uniform(1.0, 3.0)),
        make_material(rng, name="unused"),
    )
    prims.append(Room(lo, hi, mats, ceiling=False))
    _place_objects(
        rng, prims, int(rng.integers(4, 9)), int(rng.integers(2, 6)), 0.0, 3.5, (3.5, 3.5), (0.4, 1.6), 0.0, stack_p=0.4
    )
    return Scene(
        prims,
        sky,
        _light(rng),
        kind=kind,
        seed=seed,
        free_center=np.array([0.0, 0.0, 0.8]),
        free_radius=0.0,
        camera_z=(1.2, 2.5),
        bounds=np.stack((lo + [0.6, 0.6, 0.5], np.array([L[0] / 2, L[1] / 2, 2.6]) - [0.6, 0.6, 0])),
    )

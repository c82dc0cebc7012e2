"""Geometric primitives of synthetic scenes: ray intersection, surface frame, signed distance (float64).

World frame: right-handed, +z up. Every primitive implements

- ``intersect(o, dx, dy, dz) -> t``: rays ``o + t d`` (o (3,), direction components each of any shape S),
  returns t (S) of the nearest hit with ``t > T_MIN`` (``inf`` on a miss). With the renderer's directions
  (camera-frame z = 1), t is the z-depth.
- ``surface(p) -> (u, v, n_world, face)``: for hit points p (M, 3): surface coordinates u, v (M,) in metres
  attached to the object (texture lookup), world unit normal (M, 3) on the free-space side (outward for solids,
  inward for rooms, ``normal`` for planes), face index (M,) used to pick one of ``materials`` through
  ``face_material``.
- ``sdf(p) -> (M,)``: signed distance, positive in free space, negative inside matter (inside a box or sphere,
  below the ground, outside a room's walls).
- ``aabb() -> (2, 3) | None``: world bounds for screen-space culling (None = unbounded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from da3_core.data.synthetic.textures import Material, triplanar_uv

__all__ = ["T_MIN", "Plane", "Sphere", "Box", "Room", "Primitive"]

T_MIN = 1e-9


def _dot3(a: np.ndarray, dx, dy, dz):
    return a[0] * dx + a[1] * dy + a[2] * dz


def _box_faces(pl: np.ndarray, half: np.ndarray, inward: bool):
    """For points pl (M, 3) on an axis-aligned box centred at 0: face coordinates u, v (M,) (metres from the box
    corner), face index (M,) in (-x, +x, -y, +y, -z, +z) order and unit local normal (M, 3)."""
    x, y, z = pl[:, 0], pl[:, 1], pl[:, 2]
    qx, qy, qz = np.abs(x) - half[0], np.abs(y) - half[1], np.abs(z) - half[2]  # 0 on the face that was hit
    on_x = (qx >= qy) & (qx >= qz)
    on_y = ~on_x & (qy >= qz)
    on_z = ~(on_x | on_y)
    pos = np.where(on_x, x > 0, np.where(on_y, y > 0, z > 0))
    sgn = np.where(pos != inward, 1.0, -1.0)
    n = np.zeros_like(pl)
    np.copyto(n[:, 0], sgn, where=on_x)
    np.copyto(n[:, 1], sgn, where=on_y)
    np.copyto(n[:, 2], sgn, where=on_z)
    u = np.where(on_x, y + half[1], x + half[0])
    v = np.where(on_z, y + half[1], z + half[2])
    face = on_y.astype(np.int8) * 2 + on_z.astype(np.int8) * 4 + pos
    return u, v, face, n


@dataclass(eq=False)
class Plane:
    """Infinite plane through ``point`` with unit ``normal`` pointing to free space; one material."""

    point: np.ndarray
    normal: np.ndarray
    material: Material

    def __post_init__(self):
        self.point = np.asarray(self.point, np.float64)
        n = np.asarray(self.normal, np.float64)
        self.normal = n / np.linalg.norm(n)
        helper = np.array([1.0, 0.0, 0.0]) if abs(self.normal[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        e1 = np.cross(helper, self.normal)
        e1 /= np.linalg.norm(e1)
        self._basis = np.stack((e1, np.cross(self.normal, e1), self.normal))  # rows: local axes
        self.materials = (self.material,)

    def aabb(self):
        return None

    def intersect(self, o, dx, dy, dz):
        num = float(self.normal @ (self.point - o))
        den = _dot3(self.normal, dx, dy, dz)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = num / den
        t[~(t > T_MIN)] = np.inf
        return t

    def surface(self, p):
        q = p - self.point
        return q @ self._basis[0], q @ self._basis[1], np.broadcast_to(self.normal, p.shape), np.zeros(len(p), np.int8)

    def face_material(self, face):
        return np.zeros_like(face)

    def sdf(self, p):
        return (np.asarray(p) - self.point) @ self.normal


@dataclass(eq=False)
class Sphere:
    """Solid sphere; the texture frame is rotated by ``rotation`` (3, 3) (object -> world) for variety."""

    center: np.ndarray
    radius: float
    material: Material
    rotation: np.ndarray | None = None

    def __post_init__(self):
        self.center = np.asarray(self.center, np.float64)
        self.radius = float(self.radius)
        self.rotation = np.eye(3) if self.rotation is None else np.asarray(self.rotation, np.float64)
        self.materials = (self.material,)

    def aabb(self):
        return np.stack((self.center - self.radius, self.center + self.radius))

    def intersect(self, o, dx, dy, dz):
        oc = o - self.center
        a = dx * dx + dy * dy + dz * dz
        b = _dot3(oc, dx, dy, dz)
        c = float(oc @ oc) - self.radius**2
        disc = b * b - a * c
        hit = disc >= 0.0
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / a
        t[~(hit & (t > T_MIN))] = np.inf
        return t

    def surface(self, p):
        q = p - self.center
        n = q / np.linalg.norm(q, axis=1, keepdims=True)
        u, v = triplanar_uv(q @ self.rotation, n @ self.rotation)
        return u, v, n, np.zeros(len(p), np.int8)

    def face_material(self, face):
        return np.zeros_like(face)

    def sdf(self, p):
        return np.linalg.norm(np.asarray(p) - self.center, axis=-1) - self.radius


@dataclass(eq=False)
class Box:
    """Solid oriented box: ``center`` (3,), ``half`` extents (3,), ``rotation`` (3, 3) object -> world."""

    center: np.ndarray
    half: np.ndarray
    material: Material
    rotation: np.ndarray | None = None

    def __post_init__(self):
        self.center = np.asarray(self.center, np.float64)
        self.half = np.asarray(self.half, np.float64)
        self.rotation = np.eye(3) if self.rotation is None else np.asarray(self.rotation, np.float64)
        self.materials = (self.material,)

    def aabb(self):
        ext = np.abs(self.rotation) @ self.half
        return np.stack((self.center - ext, self.center + ext))

    def intersect(self, o, dx, dy, dz):
        R = self.rotation
        ol = (o - self.center) @ R  # R^T (o - c)
        tmin = tmax = None
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(3):
                inv = 1.0 / _dot3(R[:, k], dx, dy, dz)
                t1 = (-self.half[k] - ol[k]) * inv
                t2 = (self.half[k] - ol[k]) * inv
                lo = np.minimum(t1, t2)
                hi = np.maximum(t1, t2)
                tmin = lo if tmin is None else np.maximum(tmin, lo)
                tmax = hi if tmax is None else np.minimum(tmax, hi)
        tmin[~((tmax >= tmin) & (tmin > T_MIN))] = np.inf
        return tmin

    def local(self, p):
        return (np.asarray(p) - self.center) @ self.rotation

    def surface(self, p):
        u, v, face, nl = _box_faces(self.local(p), self.half, inward=False)
        return u, v, nl @ self.rotation.T, face

    def face_material(self, face):
        return np.zeros_like(face)

    def sdf(self, p):
        q = np.abs(self.local(p)) - self.half
        return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)


@dataclass(eq=False)
class Room:
    """Axis-aligned box ``[lo, hi]`` seen from inside: floor, ceiling (optional) and four walls.

    ``materials``: (walls, floor, ceiling); without a ceiling the walls end at ``hi[2]`` and rays leaving
    through the top see the sky. Cameras must be inside the box.
    """

    lo: np.ndarray
    hi: np.ndarray
    materials: tuple[Material, Material, Material]
    ceiling: bool = True

    def __post_init__(self):
        self.lo = np.asarray(self.lo, np.float64)
        self.hi = np.asarray(self.hi, np.float64)
        self.materials = tuple(self.materials)
        self._center = (self.lo + self.hi) / 2
        self._half = (self.hi - self.lo) / 2

    def aabb(self):
        return None

    def intersect(self, o, dx, dy, dz):
        ts = []
        with np.errstate(divide="ignore", invalid="ignore"):
            for k, d in enumerate((dx, dy, dz)):
                inv = 1.0 / d
                ts.append(np.where(d > 0, (self.hi[k] - o[k]) * inv, (self.lo[k] - o[k]) * inv))
        t_xy = np.minimum(ts[0], ts[1])
        t = np.minimum(t_xy, ts[2])
        miss = ~(t > T_MIN)
        if not self.ceiling:
            miss |= (dz > 0) & (ts[2] < t_xy)
        t[miss] = np.inf
        return t

    def surface(self, p):
        u, v, face, nl = _box_faces(np.asarray(p) - self._center, self._half, inward=True)
        return u, v, nl, face

    def face_material(self, face):
        return np.where(face < 4, 0, np.where(face == 4, 1, 2))

    def sdf(self, p):
        q = np.abs(np.asarray(p) - self._center) - self._half
        box = np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)
        if not self.ceiling:
            # Open top: free space is inside the footprint (bounded by the thin walls up to hi z and the floor)
            # and everything above the rim; outside the footprint below the rim counts as matter.
            p = np.asarray(p)
            qxy = np.abs(p[..., :2] - self._center[:2]) - self._half[:2]
            wall = -qxy.max(axis=-1)  # > 0 inside the footprint: distance to the nearest wall plane
            below = np.minimum(wall, p[..., 2] - self.lo[2])
            outside = np.linalg.norm(np.maximum(qxy, 0.0), axis=-1)  # xy distance to the footprint
            rim = np.hypot(np.where(wall >= 0, wall, outside), p[..., 2] - self.hi[2])
            return np.where(p[..., 2] > self.hi[2], rim, np.where(wall < 0, -outside, below))
        return -box


Primitive = Plane | Sphere | Box | Room

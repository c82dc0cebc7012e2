"""Procedural, tileable surface textures (materials) and their sampling in surface coordinates.

A :class:`Material` is a small tileable RGB image (T, T, 3) float32 in [0, 1] generated once per scene from a
seeded numpy Generator, plus the world size of one tile. Surfaces sample it at 2-D coordinates attached to the
object (metres in the object's frame), so the same surface point has the same colour in every view.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

__all__ = ["Material", "PATTERNS", "make_material", "sample_texture", "triplanar_uv"]

PATTERNS = ("checker", "stripes", "tiles", "blobs", "noise")


@dataclass(frozen=True, eq=False)
class Material:
    """Tileable texture ``image`` (T, T, 3) float32 in [0, 1]; ``tile_m``: world size (metres) of one tile."""

    image: np.ndarray
    tile_m: float
    name: str = ""

    def __post_init__(self):
        T = self.image.shape[0]
        if self.image.shape != (T, T, 3) or T & (T - 1):
            raise ValueError(f"texture must be (T, T, 3) with T a power of two, got {self.image.shape}")
        rgba = np.zeros((T * T, 4), np.float32)
        rgba[:, :3] = self.image.reshape(-1, 3)
        object.__setattr__(self, "texels", rgba.view(np.complex128).reshape(-1))  # one 16-byte item per texel
        object.__setattr__(self, "log2", T.bit_length() - 1)


def _upsample_wrap(grid: np.ndarray, T: int) -> np.ndarray:
    """Smooth periodic upsampling of a (g, g) grid to (T, T) (smoothstep-weighted bilinear with wrap-around)."""
    g = grid.shape[0]
    x = np.arange(T) * (g / T)
    i0 = np.floor(x).astype(np.int64)
    f = x - i0
    f = f * f * (3.0 - 2.0 * f)
    i0 %= g
    i1 = (i0 + 1) % g
    rows = grid[i0] * (1.0 - f)[:, None] + grid[i1] * f[:, None]  # (T, g)
    return rows[:, i0] * (1.0 - f)[None, :] + rows[:, i1] * f[None, :]


def fractal_noise(rng: np.random.Generator, T: int, base: int = 4, octaves: int = 4) -> np.ndarray:
    """Tileable value noise (T, T) float64 in [0, 1], ``octaves`` octaves starting at ``base`` cells per tile."""
    out = np.zeros((T, T))
    amp, total = 1.0, 0.0
    for k in range(octaves):
        g = min(base * 2**k, T)
        out += amp * _upsample_wrap(rng.random((g, g)), T)
        total += amp
        amp *= 0.5
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-12)


def _random_colour(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    h = rng.random() if hue is None else (hue + rng.normal(0.0, 0.06)) % 1.0
    s = rng.uniform(0.15, 0.85)
    v = rng.uniform(0.35, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def make_material(
    rng: np.random.Generator,
    pattern: str | None = None,
    *,
    hue: float | None = None,
    tile_m: float | None = None,
    size: int = 128,
    name: str = "",
) -> Material:
    """A random material: two palette colours (near ``hue`` if given) mixed by ``pattern``, modulated by noise.

    Args:
        rng: the scene's Generator (consumed deterministically).
        pattern: one of :data:`PATTERNS`, random when None.
        hue: base hue in [0, 1) (per-object tint), random when None.
        tile_m: world size of one texture tile in metres, random in [0.5, 2] when None.
        size: texture resolution T (a power of two).
    """
    if pattern is None:
        pattern = PATTERNS[rng.integers(len(PATTERNS))]
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    T = size
    tile_m = float(rng.uniform(0.5, 2.0) if tile_m is None else tile_m)
    ca, cb = _random_colour(rng, hue), _random_colour(rng, hue)
    y, x = (np.mgrid[0:T, 0:T] + 0.5) / T
    if pattern == "checker":
        n = int(rng.choice([2, 4, 8]))
        mix = ((np.floor(x * n) + np.floor(y * n)) % 2).astype(np.float64)
    elif pattern == "stripes":
        n = int(rng.choice([2, 4, 8, 16]))
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * n * (x if rng.random() < 0.5 else y))
    elif pattern == "tiles":
        n = int(rng.choice([2, 4, 8]))
        w = rng.uniform(0.04, 0.12)
        fx, fy = (x * n) % 1.0, (y * n) % 1.0
        mix = ((fx < w) | (fy < w)).astype(np.float64)
    elif pattern == "blobs":
        mix = (fractal_noise(rng, T, base=int(rng.choice([2, 4])), octaves=3) > 0.5).astype(np.float64)
    else:
        mix = fractal_noise(rng, T, base=int(rng.choice([2, 4, 8])), octaves=4)
    detail = fractal_noise(rng, T, base=8, octaves=4)
    strength = rng.uniform(0.15, 0.5)
    img = ca[None, None] * (1.0 - mix[..., None]) + cb[None, None] * mix[..., None]
    img = img * (1.0 - strength / 2 + strength * detail[..., None])
    return Material(np.clip(img, 0.0, 1.0).astype(np.float32), tile_m, name or pattern)


def triplanar_uv(p_local: np.ndarray, n_local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Surface coordinates (each (M,)) of points ``p_local`` (M, 3) with normals ``n_local`` (M, 3), object frame.

    The two coordinates orthogonal to the dominant normal axis: exact face coordinates on planes and boxes,
    a seamed but surface-attached parametrisation on spheres.
    """
    a = np.abs(n_local)
    ax = np.where(a[:, 0] >= np.maximum(a[:, 1], a[:, 2]), 0, np.where(a[:, 1] >= a[:, 2], 1, 2))
    u = np.where(ax == 0, p_local[:, 1], p_local[:, 0])
    v = np.where(ax == 2, p_local[:, 1], p_local[:, 2])
    return u, v


def sample_texture(mat: Material, u: np.ndarray, v: np.ndarray, bilinear: bool = True) -> np.ndarray:
    """Colours (M, 3) float32 of ``mat`` at surface coordinates u, v (M,) in metres (periodic)."""
    T = mat.image.shape[0]
    mask = T - 1
    texels = mat.texels
    s = T / mat.tile_m
    if not bilinear:
        i = np.floor(u * s).astype(np.int64) & mask
        j = np.floor(v * s).astype(np.int64) & mask
        j <<= mat.log2
        j |= i
        return np.take(texels, j).view(np.float32).reshape(-1, 4)[:, :3]
    x = u * s - 0.5
    y = v * s - 0.5
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0).astype(np.float32)[:, None]
    fy = (y - y0).astype(np.float32)[:, None]
    i0 = x0.astype(np.int64) & mask
    j0 = y0.astype(np.int64) & mask
    i1 = (i0 + 1) & mask
    j1 = ((j0 + 1) & mask) << mat.log2
    j0 <<= mat.log2

    def tex(idx):
        return np.take(texels, idx).view(np.float32).reshape(-1, 4)

    top = tex(j0 | i0)
    top += (tex(j0 | i1) - top) * fx
    bot = tex(j1 | i0)
    bot += (tex(j1 | i1) - bot) * fx
    top += (bot - top) * fy
    return top[:, :3]

"""Colourised depth images with a built-in perceptual colour map (no matplotlib).

The colour map is a 256-entry LUT interpolated *in linear RGB* between eight anchors that run from dark violet
through red and orange to pale yellow (an inferno-like ramp). Interpolating in linear light makes the relative
luminance strictly increasing along the map, so brightness encodes nearness monotonically; the darkest entry is
still clearly distinct from the pure black used for invalid pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

_ANCHORS_SRGB = np.array([
    [22, 8, 58], [66, 10, 104], [120, 28, 109], [177, 50, 90],
    [224, 86, 54], [248, 138, 22], [250, 200, 50], [252, 254, 170],
], dtype=np.float64) / 255.0


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(np.clip(c, 0, None), 1 / 2.4) - 0.055)


def _build_lut(n: int = 256) -> np.ndarray:
    lin = _srgb_to_linear(_ANCHORS_SRGB)
    pos = np.linspace(0.0, 1.0, len(lin))
    t = np.linspace(0.0, 1.0, n)
    lut_lin = np.stack([np.interp(t, pos, lin[:, c]) for c in range(3)], axis=-1)
    return np.round(np.clip(_linear_to_srgb(lut_lin), 0, 1) * 255).astype(np.uint8)


COLORMAP: np.ndarray = _build_lut()  # (256, 3) uint8 RGB


def apply_colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) -> (..., 3) uint8 RGB; NaN -> black."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    idx = np.round(np.clip(np.where(finite, v, 0.0), 0.0, 1.0) * (len(COLORMAP) - 1)).astype(np.int64)
    rgb = COLORMAP[idx]
    rgb[~finite] = 0
    return rgb


def colorize_depth(depth: np.ndarray, valid: np.ndarray | None = None, percentiles: tuple[float, float] = (2.0, 98.0),
                   inverse: bool = True) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8 RGB. Near = bright when ``inverse`` (colours follow 1/depth, which spreads
    near structure); range from robust percentiles of the valid pixels; invalid (NaN, <= 0, ~valid) = black."""
    d = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    out = np.zeros(d.shape + (3,), dtype=np.uint8)
    if not ok.any():
        return out
    val = np.zeros_like(d)
    val[ok] = 1.0 / d[ok] if inverse else d[ok]
    lo, hi = np.percentile(val[ok], percentiles)
    norm = (val - lo) / (hi - lo) if hi > lo else np.full_like(val, 0.5)
    if not inverse:
        norm = 1.0 - norm  # near = bright either way
    rgb = apply_colormap(norm)
    out[ok] = rgb[ok]
    return out


def save_depth_png(path: str | Path, depth: np.ndarray, valid: np.ndarray | None = None) -> Path:
    """Colourise ``depth`` (H, W) and write an RGB PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(colorize_depth(depth, valid)).save(path)
    return path

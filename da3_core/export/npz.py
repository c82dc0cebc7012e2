"""NPZ export of a :class:`da3_core.api.Prediction` (official ``npz`` layout plus our extra fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def save_npz(path: str | Path, prediction: Any, compressed: bool = True) -> Path:
    """Write ``depth`` (N,H,W) float32, ``conf`` (N,H,W) float32, ``sky`` (N,H,W) bool, ``extrinsics`` (N,4,4) w2c,
    ``intrinsics`` (N,3,3) pixels, ``image`` (N,H,W,3) uint8 (the ones that exist), and ``is_metric``,
    ``depth_units``, ``scale_factor`` (NaN when None). No rounding (the official export rounds depth to 1e-6)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, np.ndarray] = {"depth": np.asarray(prediction.depth, dtype=np.float32)}
    for key, src, dtype in (("conf", "conf", np.float32), ("sky", "sky", bool), ("extrinsics", "extrinsics", None),
                            ("intrinsics", "intrinsics", None), ("image", "images", np.uint8)):
        value = getattr(prediction, src, None)
        if value is not None:
            data[key] = np.asarray(value, dtype=dtype)
    data["is_metric"] = np.asarray(bool(getattr(prediction, "is_metric", False)))
    data["depth_units"] = np.asarray(str(getattr(prediction, "depth_units", "relative")))
    sf = getattr(prediction, "scale_factor", None)
    data["scale_factor"] = np.asarray(np.nan if sf is None else float(sf))
    (np.savez_compressed if compressed else np.savez)(path, **data)
    return path


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read a file written by :func:`save_npz` into a plain dict."""
    with np.load(Path(path), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}

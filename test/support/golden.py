"""Access to the official reference data in ``../shared/golden`` (skipped with a clear message when absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

GOLDEN_DIR = Path(os.environ.get("DA3_GOLDEN_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "golden"))


def golden_path(*parts: str) -> Path:
    """Path inside the golden folder; skips the calling test when it is not there."""
    path = GOLDEN_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"golden reference data not found at {path} (set DA3_GOLDEN_DIR to the shared/golden folder)")
    return path


def load_npz(*parts: str) -> dict[str, np.ndarray]:
    with np.load(golden_path(*parts)) as data:
        return {k: data[k] for k in data.files}


def load_json(*parts: str) -> dict:
    return json.loads(golden_path(*parts).read_text())


def manifest(variant: str) -> dict:
    return load_json("manifests", f"{variant}.json")

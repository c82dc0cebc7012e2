"""The embedded default weights shipped with da3-ros (a small any-view model trained on synthetic scenes)."""

from __future__ import annotations

from pathlib import Path

EMBEDDED_DEFAULT = Path(__file__).resolve().parents[1] / "assets" / "default"  # model.safetensors + config.json


def embedded_default_available() -> bool:
    return (EMBEDDED_DEFAULT / "model.safetensors").is_file()

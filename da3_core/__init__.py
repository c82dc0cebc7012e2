"""da3_core: Depth Anything 3 network, inference API and training code. Importable without ROS."""

from da3_core.registry import build_network, canonical_variant, get_config, list_variants

__all__ = ["build_network", "canonical_variant", "get_config", "list_variants", "DA3", "Prediction"]


def __getattr__(name: str):  # lazy: the API pulls in cv2/PIL, which the bare network does not need
    if name in ("DA3", "Prediction"):
        from da3_core import api

        return getattr(api, name)
    raise AttributeError(name)

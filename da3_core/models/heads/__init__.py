"""Dense prediction heads: DualDPT (any-view), DPT (mono/metric) and the Gaussian head's parameter layout."""

from da3_core.models.heads.dpt import DPTHead
from da3_core.models.heads.dual_dpt import DualDPTHead
from da3_core.models.heads.gaussian import GaussianAdapter, GaussianDPTHead

__all__ = ["DPTHead", "DualDPTHead", "GaussianAdapter", "GaussianDPTHead"]

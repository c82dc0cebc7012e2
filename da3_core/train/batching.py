"""Multi-resolution, variable-view batching with a constant token budget (paper §3.4).

The paper trains at a base resolution of 504x504 and samples from the resolutions 504x504, 504x378, 504x336,
504x280, 336x504, 896x504, 756x504 and 672x504; the number of views is uniform in [2, 18]; the batch size is
adjusted so that the number of tokens per step stays roughly constant. We read the resolutions as *width x height*
(the project's size convention, e.g. ``size=504x378`` in ``SequenceSpec``), so :data:`PAPER_RESOLUTIONS` holds
(H, W) = (504, 504), (378, 504), (336, 504), (280, 504), (504, 336), (504, 896), (504, 756), (504, 672).

Tokens of a sample are ``S * (H / 14) * (W / 14)`` (patch tokens; camera/cls tokens are not counted). The
:class:`TokenBudgetBatcher` picks, for a bucket (H, W) and a view count S, the largest batch size B with
``B * S * h * w <= budget``, and only uses (bucket, S) pairs for which that B also reaches ``budget * (1 - tol)``.
:class:`TokenBudgetBatchSampler` turns this into a ``torch.utils.data`` batch sampler whose items are
``(index, H, W, S)`` tuples understood by :class:`da3_core.train.data.SyntheticSceneDataset` and
:class:`da3_core.train.data.ViewSetDataset`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PAPER_RESOLUTIONS",
    "Bucket",
    "StepPlan",
    "SampleKey",
    "scale_resolutions",
    "TokenBudgetBatcher",
    "TokenBudgetBatchSampler",
]

PAPER_RESOLUTIONS: tuple[tuple[int, int], ...] = (
    (504, 504), (378, 504), (336, 504), (280, 504), (504, 336), (504, 896), (504, 756), (504, 672),
)
"""(H, W) training resolutions of paper §3.4 (listed there as W x H)."""

SampleKey = tuple[int, int, int, int]
"""``(index, H, W, S)``: dataset index, image size and number of views of one sample."""


@dataclass(frozen=True)
class Bucket:
    """One training resolution."""

    height: int
    width: int
    patch_size: int = 14

    def __post_init__(self) -> None:
        if self.height % self.patch_size or self.width % self.patch_size or min(self.height, self.width) <= 0:
            raise ValueError(f"bucket {self.height}x{self.width} is not a positive multiple of {self.patch_size}")

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def tokens_per_view(self) -> int:
        """Patch tokens of one view, ``(H / p) * (W / p)``."""
        return (self.height // self.patch_size) * (self.width // self.patch_size)


@dataclass(frozen=True)
class StepPlan:
    """Shape of one training step: ``batch_size`` samples of ``views`` views at ``height x width``."""

    height: int
    width: int
    views: int
    batch_size: int
    tokens: int  # batch_size * views * tokens_per_view


def scale_resolutions(resolutions: Sequence[tuple[int, int]] = PAPER_RESOLUTIONS, factor: float = 1.0,
                      patch_size: int = 14) -> tuple[tuple[int, int], ...]:
    """Scale (H, W) resolutions by ``factor`` (e.g. 1/6 for small test configs), rounding each side to the nearest
    multiple of ``patch_size`` (at least one patch). Duplicates after rounding are dropped, order kept."""
    out: list[tuple[int, int]] = []
    for H, W in resolutions:
        hw = tuple(max(1, round(x * factor / patch_size)) * patch_size for x in (H, W))
        if hw not in out:
            out.append(hw)  # type: ignore[arg-type]
    return tuple(out)


class TokenBudgetBatcher:
    """Chooses (bucket, views, batch size) per step so that tokens per step lie in ``[budget (1 - tol), budget]``.

    Args:
        budget: maximum patch tokens per step (e.g. the paper-scale 504x504 x 18 views x B).
        resolutions: (H, W) buckets (default :data:`PAPER_RESOLUTIONS`).
        views: inclusive (min, max) view count, sampled uniformly (paper: [2, 18]).
        tol: relative slack below the budget.
        patch_size: ViT patch size.
        max_batch: optional cap on the batch size (pairs that would need more are infeasible).

    Raises:
        ValueError: when a bucket has no feasible view count at all.
    """

    def __init__(self, budget: int, resolutions: Sequence[tuple[int, int]] = PAPER_RESOLUTIONS,
                 views: tuple[int, int] = (2, 18), tol: float = 0.25, patch_size: int = 14,
                 max_batch: int | None = None) -> None:
        if budget <= 0 or not 0 <= tol < 1:
            raise ValueError(f"need budget > 0 and 0 <= tol < 1, got {budget}, {tol}")
        if views[0] < 1 or views[1] < views[0]:
            raise ValueError(f"bad view range {views}")
        self.budget, self.tol, self.views, self.max_batch = int(budget), float(tol), views, max_batch
        self.buckets = tuple(Bucket(H, W, patch_size) for H, W in resolutions)
        self.feasible: dict[Bucket, tuple[int, ...]] = {
            b: tuple(s for s in range(views[0], views[1] + 1) if self.batch_size(b, s) is not None)
            for b in self.buckets
        }
        empty = [f"{b.height}x{b.width}" for b, vs in self.feasible.items() if not vs]
        if empty:
            raise ValueError(f"token budget {budget} (tol {tol}) fits no view count in {views} for bucket(s) "
                             f"{', '.join(empty)}; raise the budget or the tolerance")

    @property
    def lower(self) -> float:
        """Smallest allowed number of tokens per step."""
        return self.budget * (1 - self.tol)

    def batch_size(self, bucket: Bucket, views: int) -> int | None:
        """Largest B with ``B * views * tokens <= budget``, or None when that B is 0, below the lower bound, or above
        ``max_batch``."""
        per_sample = views * bucket.tokens_per_view
        b = self.budget // per_sample
        if b < 1 or b * per_sample < self.lower or (self.max_batch is not None and b > self.max_batch):
            return None
        return int(b)

    def plan(self, bucket: Bucket, views: int) -> StepPlan:
        """The step for a feasible (bucket, views) pair; ValueError otherwise."""
        b = self.batch_size(bucket, views)
        if b is None:
            raise ValueError(f"{views} views at {bucket.height}x{bucket.width} do not fit the token budget")
        return StepPlan(bucket.height, bucket.width, views, b, b * views * bucket.tokens_per_view)

    def sample(self, rng: np.random.Generator) -> StepPlan:
        """A random step: bucket uniform over the buckets, views uniform over the bucket's feasible view counts."""
        bucket = self.buckets[int(rng.integers(len(self.buckets)))]
        vs = self.feasible[bucket]
        return self.plan(bucket, vs[int(rng.integers(len(vs)))])


class TokenBudgetBatchSampler:
    """``torch.utils.data`` batch sampler yielding lists of :data:`SampleKey` ``(index, H, W, S)``.

    Each yielded batch shares one :class:`StepPlan`, so the default collate can stack it. Indices are drawn without
    replacement from a seeded permutation of ``range(num_samples)`` (reshuffled each epoch via :meth:`set_epoch`);
    ``rank`` / ``world_size`` give each DDP rank a disjoint slice of the plans (same plan sequence on all ranks).

    Args:
        batcher: the step planner.
        num_samples: dataset length.
        steps: batches per epoch.
        seed: base seed.
        rank, world_size: for distributed training (each rank gets ``batch_size`` indices of the same plan).
        group: > 1 draws indices in runs of ``group`` consecutive ones (``g group .. g group + group - 1``, the
            windows of one scene of ``SyntheticSceneDataset(windows_per_scene=group)``), from a permutation of the
            groups; 1 draws single indices.
    """

    def __init__(self, batcher: TokenBudgetBatcher, num_samples: int, steps: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, group: int = 1) -> None:
        if num_samples < 1 or steps < 1 or not 0 <= rank < world_size or group < 1:
            raise ValueError("need num_samples >= 1, steps >= 1, 0 <= rank < world_size and group >= 1")
        self.batcher, self.num_samples, self.steps, self.group = batcher, num_samples, steps, group
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def plans(self) -> list[StepPlan]:
        """The step plans of the current epoch (identical on every rank)."""
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        return [self.batcher.sample(rng) for _ in range(self.steps)]

    def _permutation(self, rng: np.random.Generator) -> np.ndarray:
        if self.group == 1:
            return rng.permutation(self.num_samples)
        groups = rng.permutation(self.num_samples // self.group)
        return (groups[:, None] * self.group + np.arange(self.group)).reshape(-1)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        rng = np.random.default_rng([self.seed, self.epoch, 2])
        perm, pos = self._permutation(rng), 0
        for plan in self.plans():
            need = plan.batch_size * self.world_size
            idx = []
            while len(idx) < need:
                if pos == len(perm):
                    perm, pos = self._permutation(rng), 0
                take = min(need - len(idx), len(perm) - pos)
                idx.extend(int(i) for i in perm[pos:pos + take])
                pos += take
            mine = idx[self.rank * plan.batch_size:(self.rank + 1) * plan.batch_size]
            yield [(i, plan.height, plan.width, plan.views) for i in mine]

"""Multi-resolution buckets and the token-budget batcher (paper §3.4)."""

import numpy as np
import pytest

from da3_core.train.batching import (
    PAPER_RESOLUTIONS,
    Bucket,
    TokenBudgetBatcher,
    TokenBudgetBatchSampler,
    scale_resolutions,
)


def test_paper_resolutions_are_patch_multiples_and_scalable():
    assert len(PAPER_RESOLUTIONS) == 8 and (504, 504) in PAPER_RESOLUTIONS and (504, 896) in PAPER_RESOLUTIONS
    assert all(Bucket(h, w).tokens_per_view > 0 for h, w in PAPER_RESOLUTIONS)
    assert Bucket(504, 504).tokens_per_view == 36 * 36
    small = scale_resolutions(factor=1 / 9)
    assert small == ((56, 56), (42, 56), (28, 56), (56, 42), (56, 98), (56, 84), (56, 70))  # 336/9 and 378/9 merge
    assert all(h % 14 == 0 and w % 14 == 0 for h, w in small)
    with pytest.raises(ValueError):
        Bucket(50, 56)


@pytest.mark.parametrize("budget, tol", [(500_000, 0.1), (200_000, 0.25)])
def test_every_bucket_and_view_count_within_budget(budget, tol):
    b = TokenBudgetBatcher(budget, views=(2, 18), tol=tol)
    for bucket in b.buckets:
        assert b.feasible[bucket] == tuple(range(2, 19))  # this budget fits every pair
        for s in range(2, 19):
            plan = b.plan(bucket, s)
            assert budget * (1 - tol) <= plan.tokens <= budget
            assert plan.tokens == plan.batch_size * s * bucket.tokens_per_view


def test_tight_budget_drops_infeasible_pairs_and_samples_within_bounds():
    budget, tol = 6 * 36 * 36, 0.1
    b = TokenBudgetBatcher(budget, [(504, 504), (378, 504)], views=(2, 18), tol=tol)
    assert b.feasible[Bucket(504, 504)] == (2, 3, 6)  # 4 and 5 views leave > 10% unused, 7+ do not fit
    rng = np.random.default_rng(0)
    for _ in range(500):
        plan = b.sample(rng)
        assert budget * (1 - tol) <= plan.tokens <= budget
    with pytest.raises(ValueError):
        b.plan(Bucket(504, 504), 4)
    with pytest.raises(ValueError, match="fits no view count"):
        TokenBudgetBatcher(100, views=(2, 18))


def test_batch_sampler_keys_share_a_plan_and_ranks_are_disjoint():
    b = TokenBudgetBatcher(40 * 16, scale_resolutions(factor=1 / 9)[:2], views=(2, 4), tol=0.5)
    s0 = TokenBudgetBatchSampler(b, num_samples=1000, steps=6, seed=3, rank=0, world_size=2)
    s1 = TokenBudgetBatchSampler(b, num_samples=1000, steps=6, seed=3, rank=1, world_size=2)
    assert len(s0) == 6
    for k0, k1 in zip(s0, s1):
        assert len({k[1:] for k in k0 + k1}) == 1  # one (H, W, S) per step on all ranks
        _, H, W, S = k0[0]
        assert b.lower <= len(k0) * S * (H // 14) * (W // 14) <= b.budget
        assert not {k[0] for k in k0} & {k[0] for k in k1}
    assert list(s0) == list(s0)  # deterministic


def test_batch_sampler_groups_draw_runs_of_one_scene():
    """group=4: the indices, in the order the batches take them, are whole runs 4g .. 4g+3 of a permutation of the
    groups (a batch may start or end inside a run), never an index twice in an epoch."""
    b = TokenBudgetBatcher(40 * 16, scale_resolutions(factor=1 / 9)[:2], views=(2, 2), tol=0.5)
    sampler = TokenBudgetBatchSampler(b, num_samples=400, steps=5, seed=3, group=4)
    seen = [k[0] for keys in sampler for k in keys]
    assert len(seen) >= 8 and len(set(seen)) == len(seen)
    for i in range(0, len(seen) - len(seen) % 4, 4):
        assert seen[i] % 4 == 0 and seen[i:i + 4] == list(range(seen[i], seen[i] + 4))
    assert [k[0] for keys in TokenBudgetBatchSampler(b, 400, 5, seed=3) for k in keys] != seen  # group 1 differs

"""Matching supervision: the loss (da3_core.train.matching) against a per-query loop reference, and the network's
match_q / match_k (the global attention's own queries and keys, in input view order, nothing else changed)."""

import math

import pytest
import torch

from da3_core.registry import build_network
from da3_core.train.correspondence import PatchMatches
from da3_core.train.init import init_weights
from da3_core.train.matching import matching_cross_entropy


def _random_matches(B, S, N, gen):
    index = torch.randint(0, N, (B, S, N, S, 4), generator=gen)
    weight = torch.rand(B, S, N, S, 4, generator=gen)
    weight = weight / weight.sum(-1, keepdim=True)
    valid = torch.rand(B, S, N, S, generator=gen) < 0.6
    valid &= ~torch.eye(S, dtype=torch.bool)[None, :, None, :]
    weight = torch.where(valid[..., None], weight, torch.zeros(()))
    return PatchMatches(index=index, weight=weight, valid=valid)


def _reference(q, k, m, over):
    """Plain loops: one softmax per (b, head, j, n[, i]); a mean per sample, then over the samples."""
    B, S, N, G, D = q.shape
    samples = []
    for b in range(B):
        terms, per_query = [], []
        for g in range(G):
            for j in range(S):
                for n in range(N):
                    logits = [(q[b, j, n, g] @ k[b, i, :, g].T) / math.sqrt(D) for i in range(S)]
                    everything = torch.log_softmax(torch.cat(logits), 0)
                    views = []
                    for i in range(S):
                        if not m.valid[b, j, n, i]:
                            continue
                        logp = torch.log_softmax(logits[i], 0) if over == "view" else everything[i * N:(i + 1) * N]
                        nll = -sum(m.weight[b, j, n, i, c] * logp[m.index[b, j, n, i, c]] for c in range(4))
                        views.append(nll)
                        terms.append(nll)
                    if views:
                        per_query.append(sum(views) / len(views))
        chosen = terms if over == "view" else per_query
        samples.append(sum(chosen) / len(chosen) if chosen else torch.zeros((), dtype=q.dtype))
    return sum(samples) / B


@pytest.mark.parametrize("over", ["view", "all"])
def test_matching_loss_equals_loop_reference(over):
    gen = torch.Generator().manual_seed(0)
    B, S, N, G, D = 3, 3, 5, 2, 4
    q = torch.randn(B, S, N, G, D, generator=gen, dtype=torch.float64)
    k = torch.randn(B, S, N, G, D, generator=gen, dtype=torch.float64)
    m = _random_matches(B, S, N, gen)
    m.valid[2] = False  # a sample that sees nothing elsewhere counts 0
    m.weight[2] = 0.0
    loss, parts = matching_cross_entropy(q, k, m, over=over)
    assert torch.allclose(loss.double(), _reference(q, k, m, over).double(), rtol=1e-5)
    assert 0.0 <= float(parts["acc"]) <= 1.0


def test_matching_loss_rewards_attending_to_the_target():
    """Keys equal to the query at the target patch (scaled up) give a loss near 0 and accuracy 1; an empty target
    set gives exactly 0 with gradients."""
    B, S, N, G, D = 1, 2, 6, 1, 8
    gen = torch.Generator().manual_seed(1)
    k = torch.nn.functional.normalize(torch.randn(B, S, N, G, D, generator=gen), dim=-1) * 30
    target = torch.tensor([3, 5, 0, 1, 2, 4])  # patch n of view 0 is target[n] of view 1
    q = torch.zeros(B, S, N, G, D)
    q[0, 0, :, 0] = k[0, 1, target, 0]
    index = torch.zeros(B, S, N, S, 4, dtype=torch.long)
    index[0, 0, :, 1] = target[:, None]
    weight = torch.zeros(B, S, N, S, 4)
    weight[0, 0, :, 1, 0] = 1.0
    valid = torch.zeros(B, S, N, S, dtype=torch.bool)
    valid[0, 0, :, 1] = True
    loss, parts = matching_cross_entropy(q, k, PatchMatches(index, weight, valid))
    assert float(loss) < 1e-3 and float(parts["acc"]) == 1.0
    q.requires_grad_(True)
    empty, _ = matching_cross_entropy(q, k, PatchMatches(index, weight * 0, valid & False))
    empty.backward()
    assert float(empty.detach()) == 0.0 and q.grad is not None


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    net = build_network("da3-tiny")
    init_weights(net)
    return net.eval()


def test_match_outputs_do_not_change_the_network_outputs(tiny_net):
    x = torch.randn(1, 3, 3, 42, 56)
    with torch.no_grad():
        plain = tiny_net(x)
        matched = tiny_net(x, match_layers=(3, 5), match_heads=2)
    for key, value in plain.items():
        assert torch.equal(value, matched[key]), key
    assert matched["match_q"].shape == (1, 3, 12, 4, 64)  # 2 blocks x 2 heads
    assert set(tiny_net.state_dict()) == set(build_network("da3-tiny").state_dict())


def test_match_qk_are_the_attention_queries_and_keys(tiny_net):
    """The returned q, k are the patch rows of the block's own queries and keys: with the block's values,
    softmax(q k^T / sqrt(D)) v over all tokens reproduces the attention output seen by a hook on its projection."""
    torch.manual_seed(2)
    x = torch.randn(1, 2, 3, 42, 56)
    block = tiny_net.backbone.pretrained.blocks[3]
    seen = {}
    hooks = [block.attn.proj.register_forward_hook(lambda mod, inp, out: seen.__setitem__("attn", inp[0])),
             block.norm1.register_forward_hook(lambda mod, inp, out: seen.__setitem__("normed", out))]
    try:
        with torch.no_grad():
            out = tiny_net(x, match_layers=(3,), match_heads=3)
    finally:
        for h in hooks:
            h.remove()
    q, k = out["match_q"][0], out["match_k"][0]  # (S, N, heads, D)
    S, N, heads, D = q.shape
    qf, kf, vf = block.attn.qkv_heads(seen["normed"], _global_rope(tiny_net, S, 3, 4))  # (1, heads, S*(N+1), D)
    full = torch.softmax(qf[0] @ kf[0].mT / math.sqrt(D), -1) @ vf[0]
    assert torch.allclose(full.transpose(0, 1).flatten(1), seen["attn"][0], atol=1e-5)
    patches = torch.ones(S * (N + 1), dtype=torch.bool)
    patches[:: N + 1] = False  # token 0 of each view is its camera token
    assert torch.equal(qf[0][:, patches].unflatten(1, (S, N)).permute(1, 2, 0, 3), q)
    assert torch.equal(kf[0][:, patches].unflatten(1, (S, N)).permute(1, 2, 0, 3), k)


def _global_rope(net, views, h, w):
    vit = net.backbone.pretrained
    return vit.rope(h, w, views, torch.device("cpu"), torch.float32)[1]


def test_match_qk_follow_the_input_view_order(tiny_net):
    """With >= 3 views the backbone moves the reference view first; match_q / match_k are returned in input order:
    permuting the non-reference views permutes them the same way."""
    torch.manual_seed(3)
    x = torch.randn(1, 4, 3, 42, 56)
    with torch.no_grad():
        a = tiny_net(x, match_layers=(3,))
        ref = int(a["ref_index"][0])
        others = [i for i in range(4) if i != ref]
        perm = list(range(4))
        perm[others[0]], perm[others[2]] = others[2], others[0]
        b = tiny_net(x[:, perm], match_layers=(3,))
    assert int(b["ref_index"][0]) == ref
    assert torch.allclose(b["match_q"], a["match_q"][:, perm], atol=1e-5)
    assert torch.allclose(b["match_k"], a["match_k"][:, perm], atol=1e-5)


def test_match_layers_must_be_global_blocks(tiny_net):
    with pytest.raises(ValueError, match="not a global"):
        tiny_net(torch.randn(1, 2, 3, 28, 28), match_layers=(2,))

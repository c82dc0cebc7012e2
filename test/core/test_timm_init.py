"""timm DINOv2 -> our backbone key mapping, tested offline on timm's randomly initialised models."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

from da3_core.config import reduced  # noqa: E402
from da3_core.registry import build_network, get_config  # noqa: E402
from da3_core.train.timm_init import init_backbone_from_timm, map_timm_dinov2, resize_pos_embed  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ref = timm.create_model("vit_small_patch14_dinov2", pretrained=False, depth=4)
    with torch.no_grad():  # random non-trivial LayerScale and biases so every mapped tensor matters
        for name, p in ref.named_parameters():
            if name.endswith(("gamma", "bias")):
                p.normal_(0, 0.5)
    net = build_network(reduced(get_config("da3-small"), depth=4, out_layers=(0, 1, 2, 3), alt_start=2,
                                cam_trunk_depth=1))
    keys = init_backbone_from_timm(net, ref.eval())
    return ref.eval(), net.eval(), keys


def test_every_timm_tensor_is_mapped(pair):
    ref, net, keys = pair
    assert len(keys) == len(ref.state_dict())
    ours = net.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(ours[f"backbone.pretrained.{k}"], v), k


@torch.no_grad()
def test_local_block_outputs_identical(pair):
    ref, net, _ = pair
    vit = net.backbone.pretrained
    x = torch.randn(2, 3, 28, 42)
    # embedding: patch embed + cls + (resized) position embedding, as timm's _pos_embed with dynamic size off
    tokens = vit.patch_embed(x)
    tokens = torch.cat((vit.cls_token.expand(2, 1, -1), tokens), 1) + vit.position_embedding(2, 3)
    h = torch.randn(2, 7, 384)
    for i in (0, 1):  # local blocks without RoPE / qk-norm: exactly DINOv2's block
        torch.testing.assert_close(vit.blocks[i](h), ref.blocks[i](h), rtol=0, atol=1e-6)
    # final norm: same weights; DA3's is a plain LayerNorm (eps 1e-5) where DINOv2's has eps 1e-6
    torch.testing.assert_close(vit.norm(h), ref.norm(h), rtol=0, atol=1e-4)
    # the whole image path at timm's native 518 grid equals timm's forward_features through two blocks
    xi = torch.randn(1, 3, 518, 518)
    t = ref.patch_embed(xi)
    t = ref._pos_embed(t)
    t = ref.blocks[1](ref.blocks[0](t))
    o = torch.cat((vit.cls_token, vit.patch_embed(xi)), 1) + vit.position_embedding(37, 37)
    o = vit.blocks[1](vit.blocks[0](o))
    torch.testing.assert_close(o, t, rtol=0, atol=1e-5)
    assert torch.isfinite(tokens).all()


def test_pos_embed_resize_and_shape_errors():
    pos = torch.randn(1, 1 + 16 * 16, 8)
    out = resize_pos_embed(pos, 37)
    assert out.shape == (1, 1 + 37 * 37, 8) and torch.equal(out[:, :1], pos[:, :1])
    assert resize_pos_embed(pos, 16) is pos
    small224 = timm.create_model("vit_small_patch14_dinov2", pretrained=False, depth=4, img_size=224)
    net = build_network(reduced(get_config("da3-small"), depth=4, out_layers=(0, 1, 2, 3), alt_start=2))
    mapped = map_timm_dinov2(small224.state_dict(), net)
    assert mapped["backbone.pretrained.pos_embed"].shape == (1, 1370, 384)
    base = timm.create_model("vit_base_patch14_dinov2", pretrained=False, depth=1)
    with pytest.raises((ValueError, KeyError)):
        map_timm_dinov2(base.state_dict(), net)

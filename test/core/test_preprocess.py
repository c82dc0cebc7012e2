"""Preprocessing: bitwise against the golden API inputs, live against the official InputProcessor, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.api_helpers import official_input_processor, synthetic_images
from support.golden import load_npz

from da3_core.preprocess import PROCESS_RES_METHODS, preprocess


def test_x_3view_bitwise():
    inputs = load_npz("da3-small", "inputs.npz")
    pre = preprocess(list(inputs["images_u8"]))
    assert pre.x.dtype == torch.float32
    assert torch.equal(pre.x, torch.from_numpy(inputs["x_3view"]))
    assert pre.intrinsics is None and pre.extrinsics is None
    assert pre.processed_hw == (280, 504)


def test_resize_case_matches_golden():
    extra = load_npz("da3-small", "api", "api_inputs_extra.npz")
    ref = load_npz("da3-small", "api", "api_resize_mv3__fp32.npz")
    pre = preprocess(list(extra["images_resize_case_u8"]), intrinsics=extra["intrinsics_resize_case"])
    assert pre.x.shape == (1, 3, 3, 280, 504)
    np.testing.assert_allclose(pre.x[0].numpy(), ref["preprocessed_x"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(pre.intrinsics.numpy(), ref["preprocessed_intrinsics"])
    # the official processed_images are denormalised from x (truncating cast): at most 1 level away from ours
    assert np.abs(pre.processed_images.astype(int) - ref["processed_images"]).max() <= 1


def test_view_transform_maps_intrinsics_like_the_official_rules():
    extra = load_npz("da3-small", "api", "api_inputs_extra.npz")
    ref = load_npz("da3-small", "api", "api_resize_mv3__fp32.npz")
    K = extra["intrinsics_resize_case"].astype(np.float64)
    pre = preprocess(list(extra["images_resize_case_u8"]))
    for i, tf in enumerate(pre.transforms):
        assert tf.input_hw == (333, 600) and tf.processed_hw == (280, 504)
        np.testing.assert_allclose(tf.intrinsics_to_processed(K[i]), ref["preprocessed_intrinsics"][i], rtol=1e-6)
        np.testing.assert_allclose(tf.intrinsics_to_input(ref["preprocessed_intrinsics"][i]), K[i], rtol=1e-6)


ODD_SIZES = [(680, 1208), (600, 333), (100, 900), (333, 600), (37, 41)]


@pytest.mark.reference
@pytest.mark.parametrize("method", PROCESS_RES_METHODS)
@pytest.mark.parametrize("hw", ODD_SIZES)
def test_matches_official_input_processor(method, hw):
    InputProcessor = official_input_processor()
    h, w = hw
    images = synthetic_images(2, h, w, seed=h + w)
    K = np.array([[[1.1 * w, 0, w / 2], [0, 1.05 * w, h / 2], [0, 0, 1]]] * 2, dtype=np.float32)
    K[1, 0, 0] *= 1.3
    x_ref, _, K_ref = InputProcessor()(images, None, K.copy(), 504, method, num_workers=1)
    pre = preprocess(images, intrinsics=K, process_res=504, process_res_method=method)
    assert pre.x.shape[1:] == x_ref.shape
    assert torch.equal(pre.x[0], x_ref)
    assert torch.equal(pre.intrinsics, K_ref)
    for i, tf in enumerate(pre.transforms):  # our affine map reproduces the official K bookkeeping
        np.testing.assert_allclose(tf.intrinsics_to_processed(K[i]), K_ref[i].numpy(), rtol=1e-5)


@pytest.mark.reference
@pytest.mark.parametrize("method", ["upper_bound_resize", "lower_bound_crop"])
def test_mixed_sizes_unified_like_official(method):
    InputProcessor = official_input_processor()
    images = synthetic_images(1, 480, 640, seed=1) + synthetic_images(1, 333, 600, seed=2) + \
        synthetic_images(1, 720, 1280, seed=3)
    K = np.stack([np.array([[500.0, 0, im.shape[1] / 2], [0, 510.0, im.shape[0] / 2], [0, 0, 1]]) for im in images])
    x_ref, _, K_ref = InputProcessor()(images, None, K.copy(), 504, method, num_workers=1)
    pre = preprocess(images, intrinsics=K, process_res_method=method)
    assert torch.equal(pre.x[0], x_ref)
    assert torch.equal(pre.intrinsics, K_ref)
    for i, tf in enumerate(pre.transforms):
        np.testing.assert_allclose(tf.intrinsics_to_processed(K[i]), K_ref[i].numpy().astype(np.float64), rtol=1e-5)


def test_accepts_paths_pil_and_4d_array(tmp_path):
    from PIL import Image

    imgs = synthetic_images(2, 50, 70)
    path = tmp_path / "a.png"
    Image.fromarray(imgs[0]).save(path)
    a = preprocess([str(path), Image.fromarray(imgs[1])], process_res=140)
    b = preprocess(np.stack(imgs), process_res=140)
    assert torch.equal(a.x, b.x)


# --- errors -------------------------------------------------------------------------------------------------------

IMG = np.zeros((40, 60, 3), np.uint8)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(images=[IMG.astype(np.float32)]), TypeError, ["uint8", "astype"]),
        (dict(images=[IMG[..., 0]]), ValueError, ["(H, W, 3)", "grayscale"]),
        (dict(images=[np.zeros((40, 60, 4), np.uint8)]), ValueError, ["4 channels", "alpha"]),
        (dict(images=[]), ValueError, ["empty"]),
        (dict(images=[IMG, torch.zeros(40, 60, 3)]), TypeError, ["image 1", "numpy"]),
        (dict(images=[IMG] * 3, intrinsics=np.stack([np.eye(3)] * 2)), ValueError, ["2 matrices for 3 images"]),
        (dict(images=[IMG], intrinsics=np.array([[np.nan, 0, 1], [0, 1, 1], [0, 0, 1]])), ValueError, ["NaN"]),
        (dict(images=[IMG], intrinsics=np.array([[0.0, 0, 1], [0, 1, 1], [0, 0, 1]])), ValueError, ["focal"]),
        (dict(images=[IMG], intrinsics=np.eye(4)), ValueError, ["(N, 3, 3)"]),
        (dict(images=[IMG], extrinsics=np.full((1, 4, 4), np.inf)), ValueError, ["NaN or inf"]),
        (dict(images=[IMG], extrinsics=np.eye(4)[None] * 2), ValueError, ["rotation"]),
        (dict(images=[IMG] * 2, extrinsics=np.eye(4)[None]), ValueError, ["1 matrices for 2 images"]),
        (dict(images=[IMG], process_res=10), ValueError, ["at least 14"]),
        (dict(images=[IMG], process_res=504.0), TypeError, ["int"]),
        (dict(images=[IMG], process_res_method="bilinear"), ValueError, ["upper_bound_resize"]),
        (dict(images=[np.zeros((1, 900, 3), np.uint8)]), ValueError, ["too thin", "process_res"]),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, exc, words):
    with pytest.raises(exc) as info:
        preprocess(**kwargs)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_unreadable_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        preprocess([str(tmp_path / "missing.png")])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot read"):
        preprocess([bad])

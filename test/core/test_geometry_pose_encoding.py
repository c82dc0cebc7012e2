"""9-d pose encoding: golden camera-decoder outputs, round trips, and the official encoder convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support.golden import load_npz

from da3_core.geometry.pose_encoding import cameras_to_encoding, encoding_to_cameras
from da3_core.geometry.quaternion import quat_xyzw_to_matrix

HW = (280, 504)


@pytest.mark.parametrize("case", ["case_mv3.npz", "case_mv3_first.npz", "case_posecond3.npz"])
def test_decode_matches_golden(case):
    data = load_npz("da3-small", case)
    w2c, K = encoding_to_cameras(torch.from_numpy(data["pose_enc"]), HW)
    assert w2c.shape == data["extrinsics"].shape and K.shape == data["intrinsics"].shape
    np.testing.assert_allclose(w2c.numpy(), data["extrinsics"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(K.numpy(), data["intrinsics"], rtol=1e-4, atol=0)


def test_decode_clamps_zero_fov():
    enc = torch.tensor([0.0, 0, 0, 0, 0, 0, 1, 0.0, 2 * math.atan(0.5)])
    _, K = encoding_to_cameras(enc, HW)
    assert K[1, 1] == pytest.approx(140 / 1e-6, rel=1e-6)
    assert K[0, 0] == pytest.approx(504.0, rel=1e-6)  # tan(fov_w/2) = 0.5 -> fx = 252 / 0.5


def random_cameras(n: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    R = quat_xyzw_to_matrix(torch.randn(n, 4, generator=g, dtype=dtype))
    t = torch.randn(n, 3, 1, generator=g, dtype=dtype)
    w2c = torch.cat((R, t), -1)
    K = torch.zeros(n, 3, 3, dtype=dtype)
    K[:, 0, 0] = 150 + 600 * torch.rand(n, generator=g, dtype=dtype)
    K[:, 1, 1] = K[:, 0, 0] * (0.8 + 0.4 * torch.rand(n, generator=g, dtype=dtype))
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = HW[1] / 2, HW[0] / 2, 1
    return w2c, K


def test_round_trip_recovers_cameras():
    w2c, K = random_cameras(40)
    enc = cameras_to_encoding(w2c, K, HW)
    assert enc.shape == (40, 9)
    # layout: translation and rotation of the camera-to-world pose, closed form
    R = w2c[:, :, :3]
    torch.testing.assert_close(enc[:, :3], -(R.mT @ w2c[:, :, 3:]).squeeze(-1), atol=1e-12, rtol=0)
    torch.testing.assert_close(quat_xyzw_to_matrix(enc[:, 3:7]), R.mT, atol=1e-12, rtol=0)
    torch.testing.assert_close(enc[:, 7], 2 * torch.atan(140 / K[:, 1, 1]), atol=1e-12, rtol=0)
    w2c_back, K_back = encoding_to_cameras(enc, HW)
    torch.testing.assert_close(w2c_back, w2c, atol=1e-12, rtol=0)
    torch.testing.assert_close(K_back, K, atol=1e-9, rtol=0)
    # 4x4 input gives the same encoding
    w2c44 = torch.cat((w2c, torch.tensor([0, 0, 0, 1.0], dtype=w2c.dtype).expand(40, 1, 4)), -2)
    torch.testing.assert_close(cameras_to_encoding(w2c44, K, HW), enc)


def test_matches_official_encoder_convention():
    transform = pytest.importorskip("depth_anything_3.model.utils.transform")
    geometry = pytest.importorskip("depth_anything_3.utils.geometry")
    w2c, K = random_cameras(6, seed=1, dtype=torch.float32)
    w2c44 = torch.cat((w2c, torch.tensor([0, 0, 0, 1.0]).expand(6, 1, 4)), -2).reshape(2, 3, 4, 4)
    K = K.reshape(2, 3, 3, 3)
    # the official CameraEnc: c2w = affine_inverse(w2c), then extri_intri_to_pose_encoding
    ref = transform.extri_intri_to_pose_encoding(geometry.affine_inverse(w2c44), K, HW)
    torch.testing.assert_close(cameras_to_encoding(w2c44, K, HW), ref, atol=2e-6, rtol=0)
    # and decoding agrees with the official decoder + affine_inverse
    c2w_ref, K_ref = transform.pose_encoding_to_extri_intri(ref, HW)
    w2c_ours, K_ours = encoding_to_cameras(ref, HW)
    torch.testing.assert_close(w2c_ours, geometry.affine_inverse(c2w_ref), atol=1e-6, rtol=0)
    torch.testing.assert_close(K_ours, K_ref, rtol=1e-6, atol=1e-4)

"""NumPy rotation <-> quaternion helpers: closed form, round trips, agreement with the torch versions."""

from __future__ import annotations

import numpy as np
import torch

from da3_core.geometry.quaternion import quat_xyzw_to_matrix
from da3_core.geometry.rotations import quat_wxyz_to_rotation, quat_xyzw_to_rotation, rotation_to_quat_xyzw


def test_quarter_turn_about_z_in_closed_form():
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    q = rotation_to_quat_xyzw(R)
    np.testing.assert_allclose(q, [0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(quat_xyzw_to_rotation(q), R, atol=1e-12)
    np.testing.assert_allclose(quat_wxyz_to_rotation([q[3], *q[:3]]), R, atol=1e-12)


def test_round_trips_and_torch_agreement_on_random_rotations():
    rng = np.random.default_rng(0)
    for q in rng.normal(size=(50, 4)):
        R = quat_xyzw_to_rotation(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(quat_xyzw_to_rotation(rotation_to_quat_xyzw(R)), R, atol=1e-12)
        assert rotation_to_quat_xyzw(R)[3] >= 0
        np.testing.assert_allclose(quat_xyzw_to_matrix(torch.from_numpy(q)).numpy(), R, atol=1e-12)

"""Synthetic renderer: camera conventions, paths, jitter bounds (closed-form, no rendering)."""

import numpy as np
import pytest

from da3_core.data.synthetic import (
    SCENE_KINDS,
    camera_centers,
    handheld_jitter,
    intrinsics_from_fov,
    invert_rigid,
    look_at,
    make_scene,
    make_trajectory,
    orbit,
    pan,
    path_clearance,
    walkthrough,
)
from da3_core.data.synthetic.camera import rotation_angle_deg


def test_look_at_is_opencv_w2c():
    eye, target = np.array([1.0, 2.0, 1.5]), np.array([4.0, 2.0, 1.5])  # looking along world +x, z up
    w2c = look_at(eye, target)
    R, t = w2c[:3, :3], w2c[:3, 3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R @ eye + t, 0.0, atol=1e-12)  # camera centre -> origin
    np.testing.assert_allclose(camera_centers(w2c), eye, atol=1e-12)
    X = R @ np.array([5.0, 2.0, 1.5]) + t  # a point straight ahead
    np.testing.assert_allclose(X, [0.0, 0.0, 4.0], atol=1e-12)
    np.testing.assert_allclose(R @ [0.0, 0.0, 1.0], [0.0, -1.0, 0.0], atol=1e-12)  # world up = image up = -y
    np.testing.assert_allclose(R @ [0.0, -1.0, 0.0], [1.0, 0.0, 0.0], atol=1e-12)  # world -y is to the right
    np.testing.assert_allclose(invert_rigid(w2c) @ w2c, np.eye(4), atol=1e-12)


def test_intrinsics_project_principal_ray_and_fov():
    H, W = 48, 64
    K = intrinsics_from_fov((H, W), 90.0)
    assert K[0, 0] == pytest.approx(W / 2) and K[1, 1] == pytest.approx(W / 2)
    assert (K[0, 2], K[1, 2]) == (W / 2, H / 2)
    # a point 45 degrees right of the axis lands on the image border u = W (integer-pixel convention)
    x = K @ np.array([1.0, 0.0, 1.0])
    assert x[0] / x[2] == pytest.approx(W)


def test_orbit_looks_at_center():
    c = np.array([1.0, -2.0, 0.5])
    w2cs = orbit(c, 5.0, 2.0, 12, arc_deg=360.0)
    assert w2cs.shape == (12, 4, 4)
    eyes = camera_centers(w2cs)
    np.testing.assert_allclose(np.linalg.norm(eyes[:, :2] - c[:2], axis=1), 5.0)
    np.testing.assert_allclose(eyes[:, 2], 2.0)
    Xc = np.einsum("nij,j->ni", w2cs[:, :3, :3], c) + w2cs[:, :3, 3]
    np.testing.assert_allclose(Xc[:, :2], 0.0, atol=1e-9)  # centre on the optical axis
    assert np.all(Xc[:, 2] > 0)


def test_walkthrough_passes_waypoints_and_looks_ahead():
    wp = np.array([[0.0, 0.0, 1.5], [3.0, 0.0, 1.5], [3.0, 3.0, 1.5]])
    w2cs = walkthrough(wp, 30, look_ahead=1.0, pitch_deg=0.0)
    eyes = camera_centers(w2cs)
    np.testing.assert_allclose(eyes[0], wp[0], atol=1e-9)
    np.testing.assert_allclose(eyes[-1], wp[-1], atol=1e-9)
    step = np.linalg.norm(np.diff(eyes, axis=0), axis=1)
    assert step.max() / step.min() < 1.1  # even spacing in arc length
    fwd = w2cs[:, 2, :3]  # camera z axis in world
    motion = np.diff(eyes, axis=0)
    motion /= np.linalg.norm(motion, axis=1, keepdims=True)
    assert np.all(np.einsum("ni,ni->n", fwd[:-1], motion) > 0.5)  # looks roughly where it goes
    np.testing.assert_allclose(fwd[:, 2], 0.0, atol=1e-12)  # level gaze with pitch 0


def test_handheld_jitter_bounded_smooth_deterministic():
    base = orbit([0, 0, 0], 4.0, 1.5, 40, arc_deg=90.0)
    j = handheld_jitter(base, seed=3, rot_deg=2.0, trans=0.05)
    np.testing.assert_array_equal(j, handheld_jitter(base, seed=3, rot_deg=2.0, trans=0.05))
    assert not np.allclose(j, handheld_jitter(base, seed=4, rot_deg=2.0, trans=0.05))
    ang = rotation_angle_deg(base[:, :3, :3], j[:, :3, :3])
    move = np.linalg.norm(camera_centers(j) - camera_centers(base), axis=1)
    assert ang.max() <= 2.0 + 1e-9 and move.max() <= 0.05 + 1e-12
    assert ang.max() > 0.5 and move.max() > 0.01  # it does shake
    dmove = np.linalg.norm(np.diff(camera_centers(j) - camera_centers(base), axis=0), axis=1)
    assert dmove.max() < 0.02  # smooth along the sequence
    np.testing.assert_allclose(
        j[:, :3, :3] @ np.swapaxes(j[:, :3, :3], 1, 2), np.broadcast_to(np.eye(3), (40, 3, 3)), atol=1e-12
    )


def test_pan_turns_on_the_spot_by_the_scheduled_angles():
    eye = np.array([1.0, -2.0, 1.5])
    w2cs = pan(eye, 5, yaw_deg=(10.0, 90.0), pitch_deg=(0.0, 20.0))
    np.testing.assert_allclose(camera_centers(w2cs), np.broadcast_to(eye, (5, 3)), atol=1e-12)
    gaze = np.swapaxes(w2cs[:, :3, :3], 1, 2)[:, :, 2]  # optical axis (camera +z) in the world
    yaw, pitch = np.radians(np.linspace(10.0, 90.0, 5)), np.radians(np.linspace(0.0, 20.0, 5))
    want = np.stack((np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), -np.sin(pitch)), -1)
    np.testing.assert_allclose(gaze, want, atol=1e-12)
    # first and last views: level 10-degree heading vs 90 degrees pitched 20 down -> angle between the optical axes
    cos = np.cos(np.radians(20.0)) * np.cos(np.radians(80.0))
    assert np.degrees(np.arccos(gaze[0] @ gaze[-1])) == pytest.approx(np.degrees(np.arccos(cos)))
    # no roll: the camera x axis stays horizontal
    np.testing.assert_allclose(w2cs[:, 0, 2], 0.0, atol=1e-12)


@pytest.mark.parametrize("kind", SCENE_KINDS)
@pytest.mark.parametrize("traj", ["orbit", "walk", "pan"])
def test_trajectories_stay_in_free_space(kind, traj):
    for seed in range(3):
        scene = make_scene(kind, seed)
        w2cs = make_trajectory(scene, 16, traj, seed=seed)
        assert w2cs.shape == (16, 4, 4)
        c = camera_centers(w2cs)
        assert np.all(path_clearance(scene, w2cs) > 0.3)
        assert np.all((c >= scene.bounds[0]) & (c <= scene.bounds[1]))
        assert np.all(c[:, 2] > 0.4)  # above the floor / ground
        if kind != "objects":  # inside the room / courtyard footprint
            room = scene.primitives[0]
            assert np.all((c[:, :2] > room.lo[:2]) & (c[:, :2] < room.hi[:2]))
            assert np.all(c[:, 2] < room.hi[2])
        np.testing.assert_array_equal(w2cs, make_trajectory(scene, 16, traj, seed=seed))
        # smooth: no jumps in orientation between neighbouring frames
        assert rotation_angle_deg(w2cs[:-1, :3, :3], w2cs[1:, :3, :3]).max() < 30.0
        if traj == "pan":  # turning on the spot: the centre moves by the hand-held jitter only (<= 2 x 3 cm)
            assert np.linalg.norm(c - c[0], axis=1).max() < 0.061
            assert rotation_angle_deg(w2cs[:1, :3, :3], w2cs[-1:, :3, :3])[0] > 30.0

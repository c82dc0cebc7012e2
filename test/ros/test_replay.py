"""Offline replay (oracle on a synthetic bag: exact, deterministic; untrained network on the real dev bag) and live
replay (bag_player -> a subscriber in this process, over loopback DDS)."""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("sensor_msgs.msg")

from support.processes import captured_process  # noqa: E402

from da3_ros import bags, replay  # noqa: E402

SPEC = "kind=room,seed=0,frames=12,size=168x126"
DEV_BAG = Path(__file__).resolve().parents[3] / "shared" / "data" / "ros2_bag_7scenes_generated" / \
    "redkitchen_10f_mcap"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synthetic_bag(tmp_path_factory):
    return bags.write_synthetic_bag(SPEC, tmp_path_factory.mktemp("bag") / "room.mcap")


def _numbers(summary):
    return {k: v for k, v in summary.items() if k not in ("timings", "outputs")}


def test_offline_replay_oracle_exact_and_deterministic(synthetic_bag, tmp_path, capsys):
    args = [str(synthetic_bag), "--predictor", "oracle", "--oracle-sequence", SPEC, "--window-size", "6",
            "--overlap", "2"]
    assert replay.main(args + ["--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    for stage in replay.STAGES:
        assert f"\n{stage} " in printed  # per-stage timing table
    assert replay.main(args + ["--out", str(tmp_path / "b")]) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    for name in ("map.ply", "trajectory.tum", "map.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert _numbers(sa) == _numbers(sb)
    assert sa["frames"] == sa["frames_in_trajectory"] == 12 and sa["windows"] == 3
    assert sa["chain_methods"] == {"first": 1, "points": 2} and sa["windows_chained"] == 3
    assert sa["map_points"] > 1000 and sa["is_metric"] is False
    acc = sa["accuracy"]
    assert acc["depth"]["abs_rel"] < 1e-6 and acc["depth"]["delta1"] == 1.0 and acc["depth"]["frames"] == 12
    assert acc["trajectory"]["ate_rmse"] < 1e-6 and acc["trajectory"]["poses"] == 12
    assert acc["map"]["precision"] > 0.95 and acc["map"]["recall"] > 0.9
    for stage in replay.STAGES:
        assert sa["timings"][stage]["count"] > 0
    lines = (a / "trajectory.tum").read_text().splitlines()[1:]
    assert len(lines) == 12 and lines[0].startswith("1.000000000 ")
    assert len(list((a / "previews").glob("*.png"))) == 12
    info = bags.bag_info(a / "replay")
    counts = {t: i.count for t, i in info.topics.items()}
    assert counts["/da3/depth"] == counts["/da3/pose"] == 12
    assert counts["/tf"] == counts["/da3/path"] == counts["/da3/window_cloud"] == 3 and counts["/da3/map_cloud"] == 1
    from da3_core.data.synthetic.sequence import SyntheticSequence
    from da3_ros.conversions import image_msg_to_array

    seq = SyntheticSequence.from_spec(SPEC)
    for i, (_, t, msg) in enumerate(bags.read_messages(a / "replay", ["/da3/depth"])):
        assert t == seq.stamp_ns(i)
        d, gt = image_msg_to_array(msg), seq.frame(i).depth
        np.testing.assert_allclose(d[np.isfinite(gt)], gt[np.isfinite(gt)], rtol=1e-5)


def test_map_f1_and_pairing_helpers():
    rng = np.random.default_rng(0)
    g = rng.uniform(0, 1, (2000, 3))
    f = replay.map_f1(g + [0.01, 0, 0], g, 0.05)
    assert f["precision"] == f["recall"] == f["f1"] == 1.0
    f = replay.map_f1(np.concatenate([g, g + 10]), g, 0.05)
    assert f["precision"] == 0.5 and f["recall"] == 1.0
    stamps = np.array([100, 200, 300])
    assert replay.nearest_within(stamps, 240, 50) == 1 and replay.nearest_within(stamps, 250, 40) is None
    with pytest.raises(ValueError, match="overlap"):
        replay.parameter_values({"window_size": 4, "overlap": 4})


def test_offline_replay_dev_bag_untrained_network(tmp_path):
    if not DEV_BAG.is_dir():
        pytest.skip(f"dev bag {DEV_BAG} absent (see ../shared/data/README.md)")
    s = replay.run_replay(DEV_BAG, tmp_path, {"process_res": 140, "window_size": 6, "overlap": 2,
                                              "device": "cpu"}, log=lambda *_: None)
    assert s["frames"] == s["frames_in_trajectory"] == 10 and s["windows"] == 2
    assert s["image_topic"] == "/camera/color/image_raw" and s["camera_info_topic"] == "/camera/color/camera_info"
    assert not any(k.startswith("rejected") for k in s["counts"])
    assert "trajectory" in s["accuracy"] and "depth" in s["accuracy"]
    assert (tmp_path / "map.ply").is_file() and (tmp_path / "map.png").is_file()


# --- live replay -------------------------------------------------------------------------------------------------

def _player(args, env):
    return captured_process([sys.executable, "-m", "da3_ros.bag_player", *args], env, cwd=REPO)


@pytest.mark.ros
def test_live_replay_publishes_every_image_with_original_stamps_and_clock(tmp_path, ros_env):
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image

    from da3_ros.conversions import stamp_to_ns

    spec = "kind=room,seed=0,frames=6,size=56x42"
    bag = bags.write_synthetic_bag(spec, tmp_path / "small.mcap")
    expected = [t for _, t, _ in bags.read_messages(bag, ["/camera/image_raw"])]
    images, infos, clocks = [], [], []
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]),
               signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("bag_player_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, "/camera/image_raw", images.append, qos)
        node.create_subscription(CameraInfo, "/cam/info", infos.append, qos)
        node.create_subscription(Clock, "/clock", clocks.append, 10)
        args = [str(bag), "--rate", "5", "--clock", "--wait-subscribers", "15", "--start-delay", "0.5",
                "--topics", "/camera/image_raw", "/camera/camera_info", "--remap", "/camera/camera_info:=/cam/info"]
        with _player(args, ros_env) as proc:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                executor.spin_once(timeout_sec=0.05)
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
        assert proc.returncode == 0, proc.output
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    assert [stamp_to_ns(m.header.stamp) for m in images] == expected, proc.output
    assert [stamp_to_ns(m.header.stamp) for m in infos] == expected
    assert clocks, "no /clock"
    ticks = [stamp_to_ns(c.clock) for c in clocks]
    assert ticks == sorted(ticks) and expected[0] <= ticks[0] and ticks[-1] == expected[-1]
    assert "playing" in proc.output and "done: 12 messages" in proc.output


def test_replay_help_lists_every_node_parameter():
    """`da3_replay --help` formats every node parameter's description (one of them says '94 % of the voxels': argparse
    must not read it as a format)."""
    from da3_ros.params import PARAMS
    from da3_ros.replay import _NODE_ONLY, build_parser

    text = build_parser().format_help()
    for p in PARAMS:
        if p.name not in _NODE_ONLY:
            assert "--" + p.name.replace("_", "-") in text

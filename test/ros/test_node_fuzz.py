"""Robustness: >= 10,000 malformed messages over DDS (1,000 per second), then good frames; the node survives, counts,
warns (throttled).

Two node processes (oracle predictor, reliable input QoS so every message that is sent arrives and can be counted):
``reconstruct`` on raw ``image`` and ``reconstruct_b`` in namespace ``/b`` on ``image/compressed``. A fuzzer process
(``node_helpers.py fuzz``, :class:`node_helpers.FuzzPlan`) sends malformed Images (wrong encodings, zero / huge
sizes, step and data-length mismatches), malformed CompressedImages (random bytes, empty, compressedDepth, too
large), valid Images with duplicate / out-of-order stamps and bad CameraInfo (NaN / zero / negative K, size
mismatch), then the good frames of the sequence.
"""

import json
import os
import signal

import numpy as np
import pytest

try:
    import rclpy  # noqa: F401
    from da3_ros_interfaces.msg import WindowResult  # noqa: F401
except ImportError as exc:  # a venv without the ROS wheels; CI always has them
    if os.environ.get("CI"):
        raise
    pytest.skip(f"ROS 2 interfaces not importable ({exc}); run `make .venv`", allow_module_level=True)

from node_helpers import (
    COMPRESSED_CATEGORIES,
    FUZZ_CAMERA_FRAME,
    NODE_MODULE,
    NODE_OUTPUTS,
    RAW_CATEGORIES,
    collector,
    diagnostics,
    gt_c2w_in_map,
    node_params,
    pose_to_matrix,
    rejected_total,
    ros_process,
    stamp_ns,
)

from da3_core.data.synthetic.sequence import SyntheticSequence
from da3_ros.conversions import image_msg_to_array

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SPEC = "kind=objects,seed=1,frames=14,size=112x84,t0=20"  # t0 far after the fuzz stamps
HELPERS = os.path.join(os.path.dirname(__file__), "node_helpers.py")


def test_fuzz_then_good_frames(ros_env, tmp_path):
    seq = SyntheticSequence.from_spec(SPEC)
    stamps = [seq.stamp_ns(i) for i in range(len(seq))]
    H, W = seq.hw
    # reliable + deep input: every malformed message arrives; queued windows: every good frame is processed
    common = dict(input_qos="reliable", input_queue_depth=1000, max_pending_windows=16)
    summary_path = tmp_path / "fuzz.json"
    with collector(ros_env, namespaces=("", "/b")) as col, \
            ros_process(NODE_MODULE, ros_env, tmp_path, "node", params=node_params(SPEC, **common)) as node, \
            ros_process(NODE_MODULE, ros_env, tmp_path, "node_b", params=node_params(SPEC, use_compressed=True,
                                                                                      **common),
                        remaps={"__ns": "/b", "__node": "reconstruct_b"}) as node_b:
        outputs = [t if t.startswith("/") else f"/{t}" for t in NODE_OUTPUTS]
        ready = col.wait_for(lambda: not (node.alive() and node_b.alive()) or (
            col.node.count_subscribers("/image") >= 1 and col.node.count_subscribers("/b/image/compressed") >= 1
            and all(col.node.count_publishers(t) >= 1 for t in outputs)
            and diagnostics(col) is not None and diagnostics(col, "reconstruct_b") is not None), 40)
        assert ready and node.alive() and node_b.alive(), node.output() + node_b.output()
        with ros_process(HELPERS, ros_env, tmp_path, "fuzzer",
                         script_args=["fuzz", "--spec", SPEC, "--summary", str(summary_path), "--timeout", "60"]) as fz:
            assert fz.wait(75) == 0, fz.output()
        summary = json.loads(summary_path.read_text())
        assert summary.get("done"), summary

        # good frames after the fuzz: 14 frames -> windows of 6, 10, 14 on both nodes
        def finished():
            d, db = diagnostics(col), diagnostics(col, "reconstruct_b")
            return not (node.alive() and node_b.alive()) or (
                d is not None and db is not None and d.get("frames_out") == "14" and db.get("frames_out") == "14"
                and col.last("path") is not None and len(col.last("path").poses) == 14
                and col.last("/b/path") is not None and len(col.last("/b/path").poses) == 14)

        ok = col.wait_for(finished, 30)
        assert node.alive() and node_b.alive(), "a node died\n" + node.output() + node_b.output()
        assert ok, f"good frames not processed: {diagnostics(col)}\n{diagnostics(col, 'reconstruct_b')}"
        diag, diag_b = diagnostics(col), diagnostics(col, "reconstruct_b")
        for proc in (node, node_b):  # still clean to stop after all that
            proc.signal(signal.SIGINT)
            assert proc.wait(10) == 0 and "Traceback" not in proc.stderr(), proc.output()

    # >= 10,000 malformed messages went out and (reliable) all of them were counted
    assert summary["malformed_total"] >= 10_000, summary
    raw_sent, comp_sent = summary["malformed_raw_images"], summary["malformed_compressed_images"]
    margin = 0.01
    by_reason: dict[str, int] = {}
    for cat, n in summary["raw"].items():
        by_reason[RAW_CATEGORIES[cat]] = by_reason.get(RAW_CATEGORIES[cat], 0) + n
    for reason, n in by_reason.items():
        assert int(diag.get(f"rejected_{reason}", 0)) >= n * (1 - margin), (reason, n, diag)
    assert int(diag.get("rejected_out_of_order", 0)) + int(diag.get("rejected_duplicate_stamp", 0)) \
        >= sum(summary["stamp"].values()) * (1 - margin), diag
    assert int(diag.get("rejected_duplicate_stamp", 0)) >= 1
    assert any(k.startswith("rejected_camera_info_") for k in diag), diag  # bad K / size paired with an image
    assert rejected_total(diag) >= raw_sent * (1 - margin), (raw_sent, diag)
    comp_reasons: dict[str, int] = {}
    for cat, n in summary["compressed"].items():
        comp_reasons[COMPRESSED_CATEGORIES[cat]] = comp_reasons.get(COMPRESSED_CATEGORIES[cat], 0) + n
    for reason, n in comp_reasons.items():
        assert int(diag_b.get(f"rejected_{reason}", 0)) >= n * (1 - margin), (reason, n, diag_b)
    assert rejected_total(diag_b) >= comp_sent * (1 - margin)
    assert int(diag["frames_in"]) == 14 and int(diag_b["frames_in"]) == 14
    assert "inference_errors" not in diag and "inference_errors" not in diag_b

    # throttled warnings: present, but far fewer lines than malformed messages
    for proc, sent in ((node, raw_sent), (node_b, comp_sent)):
        warnings = [ln for ln in proc.stderr().splitlines() if "dropped input (" in ln]
        assert 1 <= len(warnings) <= 20 and len(warnings) < sent / 20, (len(warnings), sent)

    # the good frames afterwards: exact oracle depth and poses (map = frame 0, the anchor)
    path = col.last("path")
    assert [stamp_ns(p.header.stamp) for p in path.poses] == stamps
    for p in path.poses:
        np.testing.assert_allclose(pose_to_matrix(p.pose.position, p.pose.orientation),
                                   gt_c2w_in_map(seq, stamps.index(stamp_ns(p.header.stamp)), 0), atol=1e-5)
    path_b = col.last("/b/path")
    assert [stamp_ns(p.header.stamp) for p in path_b.poses] == stamps
    for topic in ("depth", "/b/depth"):
        msgs = col.get(topic)
        assert len(msgs) >= 7, (topic, len(msgs))
        for msg in msgs:
            i = stamps.index(stamp_ns(msg.header.stamp))
            assert (msg.encoding, msg.height, msg.width, msg.header.frame_id) == ("32FC1", H, W, FUZZ_CAMERA_FRAME)
            d, gt = image_msg_to_array(msg), seq.frame(i)
            assert np.array_equal(np.isnan(d), gt.sky)
            np.testing.assert_allclose(d[~gt.sky], gt.depth[~gt.sky], rtol=1e-4)

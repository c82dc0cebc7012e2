"""~/save_map over real DDS: requests that resolve outside ``save_map_root`` are refused and create nothing; a request
inside the root writes the map and the TSDF mesh (map_mesh.ply: empty before any frame, the fused keyframe's surface
after a short feed) there. (The path rules themselves: test_output_root.py.)"""

from __future__ import annotations

import os

import pytest
from node_helpers import CAMERA_MODULE, NODE_MODULE, call_service, collector, diagnostics, node_params, ros_process
from test_reconstruct_node import stop_cleanly, wait_node_ready  # skips the module without the ROS wheels

pytestmark = pytest.mark.ros

SPEC = "kind=objects,seed=0,frames=4,size=56x42"


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_save_map_refuses_paths_outside_its_root(ros_env, tmp_path):
    import signal

    from da3_ros_interfaces.srv import SaveMap

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link_out").symlink_to(outside)
    # windows of 2 (overlap 1): the 4 frames give 3 windows; the first frame is a TSDF keyframe
    params = node_params(SPEC, save_map_root=str(root), window_size=2, overlap=1, tsdf_voxel_size=0.1)
    with collector(ros_env) as col, ros_process(NODE_MODULE, ros_env, tmp_path, "node", params=params) as node:
        wait_node_ready(col, node)
        empty = call_service(col, SaveMap, "/reconstruct/save_map", SaveMap.Request(output_dir="empty"))
        with ros_process(CAMERA_MODULE, ros_env, tmp_path, "camera",
                         params={"sequence": SPEC, "wait_for_subscribers": 1}) as cam:
            fused = col.wait_for(lambda: float((diagnostics(col) or {}).get("tsdf_integrated", "0")) >= 1
                                 or not node.alive(), 30.0)
            assert fused and node.alive(), f"{diagnostics(col)}\n{node.output()}\n{cam.output()}"
        refused = {}
        for request in (str(outside / "evil"), "../outside/evil", "link_out/evil", "/tmp/da3_save_map_evil"):
            refused[request] = call_service(col, SaveMap, "/reconstruct/save_map", SaveMap.Request(output_dir=request))
        inside = call_service(col, SaveMap, "/reconstruct/save_map", SaveMap.Request(output_dir="run1"))
        assert node.alive(), node.output()
        stop_cleanly(node, signal.SIGINT, timeout=20.0)

    for request, res in refused.items():
        assert not res.success, (request, res.message)
        assert "outside the save_map root" in res.message and "save_map_root" in res.message, res.message
        assert res.map_path == "" and res.num_points == 0
    assert files_under(outside) == [], files_under(outside)  # nothing created through the link or '..'
    assert not os.path.exists("/tmp/da3_save_map_evil")
    assert inside.success, inside.message
    assert inside.map_path == str(root / "run1" / "map.ply")
    assert inside.trajectory_path == str(root / "run1" / "trajectory.tum")
    saved = [f"{run}/{name}" for run in ("empty", "run1") for name in ("depth", "map.ply", "map_mesh.ply",
                                                                        "trajectory.tum")]
    depth_files = files_under(root / "run1" / "depth")
    written = [f for f in files_under(root) if not f.startswith("run1/depth/")]
    assert written == sorted(["link_out", "empty", "run1", *saved]), written
    assert empty.success and len(depth_files) == inside.num_frames > 0, (empty.message, depth_files)

    def vertices(run: str) -> int:  # the TSDF mesh (tsdf on by default): a binary PLY
        header = (root / run / "map_mesh.ply").read_bytes().split(b"end_header\n")[0].decode()
        assert header.startswith("ply\nformat binary_little_endian 1.0"), header
        return int(header.split("element vertex ")[1].split()[0])

    assert vertices("empty") == 0  # before any frame: a valid PLY with no vertices
    assert vertices("run1") > 100  # after the feed: the fused keyframe's surface

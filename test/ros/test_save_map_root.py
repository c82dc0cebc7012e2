"""~/save_map over real DDS: requests that resolve outside ``save_map_root`` are refused and create nothing; a request
inside the root writes the map there. (The path rules themselves: test_output_root.py.)"""

from __future__ import annotations

import os

import pytest
from node_helpers import NODE_MODULE, call_service, collector, node_params, ros_process
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
    params = node_params(SPEC, save_map_root=str(root))
    with collector(ros_env) as col, ros_process(NODE_MODULE, ros_env, tmp_path, "node", params=params) as node:
        wait_node_ready(col, node)
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
    assert files_under(root) == ["link_out", "run1", "run1/depth", "run1/map.ply", "run1/trajectory.tum"]

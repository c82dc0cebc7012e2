"""The make venv as a ROS install prefix: what ``ros2 launch da3_ros reconstruct.launch.py`` and launch_ros's
``Node(package="da3_ros", executable="reconstruct")`` look up, done here the way they do it (ament index; a walk of the
share directory that does not follow directory links; ``<prefix>/lib/<package>/<executable>``), plus the start-up
errors a user meets first: a missing weights path, device:=cuda without CUDA, a file that is no checkpoint: one line
naming the parameter and the fix, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFIX = Path(sys.prefix)

pytestmark = pytest.mark.skipif(not (PREFIX / "lib" / "da3_ros").is_dir() and not os.environ.get("CI"),
                                reason="not the make venv (run `make .venv`)")


def share_file(package: str, name: str) -> Path:
    """What ros2launch does for `ros2 launch <package> <file>`: walk the package's share directory for the file."""
    from ament_index_python.packages import get_package_share_directory

    for root, _, files in os.walk(get_package_share_directory(package)):  # os.walk does not enter linked dirs
        if name in files:
            return Path(root) / name
    raise FileNotFoundError(f"file {name!r} was not found in the share directory of package {package!r}")


def test_launch_and_config_files_are_found_in_the_share_directory():
    for folder, names in (("launch", ["reconstruct.launch.py"]),
                          ("config", ["reconstruct.yaml", "robot.yaml", "rig.yaml", "reconstruct.rviz"])):
        for name in names:
            found = share_file("da3_ros", name)
            assert found.parent.name == folder
            assert found.resolve() == (ROOT / folder / name).resolve()  # a link into the checkout (symlink-install)


def test_executables_are_where_launch_ros_looks():
    from ament_index_python.packages import get_package_prefix

    lib = Path(get_package_prefix("da3_ros")) / "lib" / "da3_ros"
    for exe in ("reconstruct", "synthetic_camera", "da3_bag_player"):
        assert os.access(lib / exe, os.X_OK), lib / exe


def _start(args: list[str], env: dict) -> subprocess.CompletedProcess:
    exe = PREFIX / "lib" / "da3_ros" / "reconstruct"
    return subprocess.run([str(exe), "--ros-args", *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.ros
def test_start_up_errors_are_one_line_naming_the_parameter(ros_env, tmp_path):
    import torch

    not_a_checkpoint = tmp_path / "model.safetensors"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    cases = [(["-p", f"weights:={tmp_path / 'missing'}"], "'weights'", "no such file or folder"),
             (["-p", f"weights:={not_a_checkpoint}"], "'weights'", "did not load"),
             (["-p", "device:=gpu"], "'device'", "use auto, cpu, cuda")]
    if not torch.cuda.is_available():
        cases.append((["-p", "device:=cuda"], "'device'", "use device:=cpu"))
    for args, name, fix in cases:
        run = _start(args, ros_env)
        assert run.returncode == 2, (args, run.returncode, run.stderr)
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and name in lines[0] and fix in lines[0], (args, run.stderr)
        assert "Traceback" not in run.stderr


@pytest.mark.ros
def test_sigint_twice_ends_cleanly(ros_env, tmp_path):
    """Ctrl-C under ros2 launch: the terminal signals the process group and launch forwards SIGINT again, so the
    node gets two; the second must not interrupt its clean-up (exit 0, no traceback)."""
    import signal
    import time

    from node_helpers import collector, node_params, ros_process
    from test_reconstruct_node import wait_node_ready

    params = node_params("kind=objects,seed=0,frames=4,size=56x42")
    with collector(ros_env) as col, ros_process("da3_ros.reconstruct_node", ros_env, tmp_path, "node",
                                                params=params) as node:
        wait_node_ready(col, node)
        node.signal(signal.SIGINT)
        time.sleep(0.05)
        node.signal(signal.SIGINT)
        rc = node.wait(20)
    assert rc == 0, node.output()
    assert "Traceback" not in node.stderr(), node.stderr()

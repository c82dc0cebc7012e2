"""Packaging: da3_core stays ROS-free, package.xml / setup.py / setup.cfg agree, the venv has the `da3` script."""

import configparser
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ROS_EXEC_DEPENDS = {
    "rclpy",
    "sensor_msgs",
    "geometry_msgs",
    "nav_msgs",
    "std_msgs",
    "std_srvs",
    "diagnostic_msgs",
    "tf2_ros",
    "tf2_msgs",
    "visualization_msgs",
    "da3_ros_interfaces",
}
PYTHON_EXEC_DEPENDS = {"python3-numpy", "python3-opencv", "python3-yaml", "python3-tqdm", "python3-torch"}

# Runs in a fresh interpreter: refuse every ROS module, then import da3_core and all its submodules.
_BLOCKED_IMPORT_CHECK = textwrap.dedent(
    """
    import importlib, pkgutil, sys, traceback

    ROS_ROOTS = {"rclpy", "rcl", "rosidl_runtime_py", "rosidl_parser", "ament_index_python", "tf2_ros",
                 "tf2_py", "cv_bridge", "sensor_msgs_py", "message_filters", "launch", "launch_ros",
                 "rosbag2_py", "builtin_interfaces", "da3_ros", "da3_ros_interfaces"}
    attempts = []

    def is_ros(name):
        root = name.split(".")[0]
        return root in ROS_ROOTS or root.endswith(("_msgs", "_srvs", "_interfaces"))

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if is_ros(name):
                attempts.append(name)
                raise ImportError(f"{name} is blocked: da3_core must not import ROS")
            return None

    sys.meta_path.insert(0, Blocker())
    import da3_core
    failures = []
    for info in pkgutil.walk_packages(da3_core.__path__, "da3_core."):
        try:
            importlib.import_module(info.name)
        except Exception:
            failures.append(info.name + ":\\n" + traceback.format_exc(limit=3))
    if attempts:
        print("ROS IMPORTS:", sorted(set(attempts)))
    for failure in failures:
        print("FAILED", failure)
    sys.exit(1 if attempts or failures else 0)
    """
)


def _package_xml(path=ROOT / "package.xml"):
    root = ET.parse(path).getroot()
    deps = {tag: {e.text.strip() for e in root.findall(tag)} for tag in ("exec_depend", "depend", "test_depend")}
    return root, deps


def test_da3_core_imports_without_ros():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT_CHECK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_xml_declares_dependencies():
    root, deps = _package_xml()
    assert root.get("format") == "3"
    assert root.findtext("name") == "da3_ros"
    assert root.findtext("license") == "Apache-2.0"
    assert root.findtext("export/build_type") == "ament_python"
    runtime = deps["exec_depend"] | deps["depend"]
    assert ROS_EXEC_DEPENDS <= runtime, ROS_EXEC_DEPENDS - runtime
    assert PYTHON_EXEC_DEPENDS <= runtime, PYTHON_EXEC_DEPENDS - runtime
    assert "python3-pytest" in deps["test_depend"]


@pytest.mark.parametrize(
    "path", [ROOT / "package.xml", ROOT / "msg" / "package.xml", ROOT / "scripts/interfaces/tf2_msgs/package.xml"]
)
def test_package_xml_is_valid_format_3(path):
    catkin_pkg = pytest.importorskip("catkin_pkg.package")
    package = catkin_pkg.parse_package(path)  # validates the manifest against REP 149
    assert package.package_format == 3
    if path.parent.name != ROOT.name:  # the interface packages
        assert "rosidl_interface_packages" in [g.name for g in package.member_of_groups]
        assert package.get_build_type() == "ament_cmake"


def test_ament_python_layout():
    assert (ROOT / "resource" / "da3_ros").is_file()
    assert (ROOT / "da3_ros" / "__init__.py").is_file()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/da3_ros"
    assert cfg["install"]["install_scripts"] == "$base/lib/da3_ros"


def test_console_scripts_declared():
    text = (ROOT / "setup.py").read_text()
    assert '"da3 = da3_core.cli:main"' in text
    assert '"reconstruct = da3_ros.reconstruct_node:main"' in text
    try:
        dist = metadata.distribution("da3_ros")
    except metadata.PackageNotFoundError:
        pytest.skip("project not installed in this environment (make .venv installs it)")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts["da3"] == "da3_core.cli:main"
    assert scripts["reconstruct"] == "da3_ros.reconstruct_node:main"


def test_da3_script_on_venv_path():
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running in a venv")
    bin_dir = Path(sys.prefix) / "bin"
    found = shutil.which("da3", path=str(bin_dir))
    assert found, f"no da3 in {bin_dir}"
    # Ours, not the reference package's `da3` (depth_anything_3.cli), which the editable install replaces.
    assert "da3_core.cli" in Path(found).read_text()


def test_ament_index_finds_da3_ros():
    packages = pytest.importorskip("ament_index_python.packages")
    if not (Path(sys.prefix) / "share" / "ament_index").is_dir():
        pytest.skip("no ament index in this environment")
    share = Path(packages.get_package_share_directory("da3_ros"))
    assert (share / "package.xml").is_file()

"""Test-wide setup: markers, import paths, a quiet/local ROS environment, and the `ros_env` fixture.

`ros_env` gives each test its own ROS_DOMAIN_ID (held with a file lock, so concurrent pytest runs on one
machine never share a domain), loopback-only discovery and a temporary ROS_LOG_DIR. ROS tests start their
peers as subprocesses with that environment; the fixture also applies it to this process (for in-test nodes).
"""

import contextlib
import fcntl
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

TEST_DIR = Path(__file__).resolve().parent
if str(TEST_DIR) not in sys.path:
    sys.path.insert(0, str(TEST_DIR))

MARKERS = {
    "slow": "takes more than a few seconds (CI runs it; `make test-fast` skips it)",
    "ros": "needs rclpy and the generated interfaces; starts ROS processes over loopback",
    "gpu": "needs a CUDA device (skipped without one)",
    "reference": "compares against the official depth-anything-3 package (requirements/reference.txt)",
}

# Process-wide defaults (also inherited by subprocesses): nothing leaves loopback, few threads on small machines.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.pop("ROS_LOCALHOST_ONLY", None)  # ignored by Kilted and deprecated; never rely on it
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")
# ament_index / rosidl find the pip-installed ROS packages through AMENT_PREFIX_PATH.
if (Path(sys.prefix) / "share" / "ament_index").is_dir():
    _paths = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in _paths:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *_paths])

DOMAIN_ID_MIN, DOMAIN_ID_MAX = 1, 101  # safe range for Linux port mapping
_LOCK_DIR = Path(tempfile.gettempdir()) / "da3-ros-test-domains"
_domain_counter = 0


def pytest_configure(config):
    declared = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for name, doc in MARKERS.items():
        if name not in declared:
            config.addinivalue_line("markers", f"{name}: {doc}")


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items):
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs a CUDA device")
            for item in items:
                if "gpu" in item.keywords:
                    item.add_marker(skip)
    if importlib.util.find_spec("depth_anything_3") is None:
        skip = pytest.mark.skip(
            reason="depth-anything-3 not installed (pip install --no-deps -r requirements/reference.txt)"
        )
        for item in items:
            if "reference" in item.keywords:
                item.add_marker(skip)


@contextlib.contextmanager
def _reserve_domain_id():
    """Lock a free ROS_DOMAIN_ID in [1, 101]; the start point varies with pid and a per-process counter."""
    global _domain_counter
    _LOCK_DIR.mkdir(exist_ok=True)
    span = DOMAIN_ID_MAX - DOMAIN_ID_MIN + 1
    start = (os.getpid() * 7 + _domain_counter) % span
    _domain_counter += 1
    for k in range(span):
        domain_id = DOMAIN_ID_MIN + (start + k) % span
        fd = os.open(_LOCK_DIR / f"{domain_id}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield domain_id
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    raise RuntimeError(f"all ROS domain ids {DOMAIN_ID_MIN}..{DOMAIN_ID_MAX} are in use by other test processes")


@pytest.fixture
def ros_env(tmp_path, monkeypatch):
    """Environment dict for ROS subprocesses of this test (also applied to this process for the test's duration)."""
    with _reserve_domain_id() as domain_id:
        log_dir = tmp_path / "ros_log"
        log_dir.mkdir()
        settings = {
            "ROS_DOMAIN_ID": str(domain_id),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "ROS_LOG_DIR": str(log_dir),
            "PYTHONUNBUFFERED": "1",
        }
        # large images between processes on this machine: 32 MiB shared-memory segments, UDP on loopback only
        settings.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or str(
            Path(__file__).resolve().parents[1] / "config" / "fastdds_local_large_data.xml"))
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)
        monkeypatch.delenv("ROS_STATIC_PEERS", raising=False)
        yield dict(os.environ)

"""save_map's output root (ROS-free): what resolves inside is accepted, every way out is refused, nothing is created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from da3_ros.output_root import DEFAULT_NAME, OutsideRootError, default_root, resolve_output_dir, resolve_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_inside_paths_resolve_below_the_root(root):
    assert resolve_output_dir(root, "") == root / DEFAULT_NAME
    assert resolve_output_dir(root, ".") == root
    assert resolve_output_dir(root, "runs/a") == root / "runs" / "a"
    assert resolve_output_dir(root, str(root / "b")) == root / "b"  # absolute, inside
    assert resolve_output_dir(root, "x/../y") == root / "y"  # '..' that stays inside is harmless
    (root / "inner").mkdir()
    (root / "link_in").symlink_to(root / "inner")  # a link that stays inside
    assert resolve_output_dir(root, "link_in") == root / "inner"
    assert tree(root) == {"inner", "link_in"}  # nothing created


@pytest.mark.parametrize("request_of", [
    lambda root, tmp: str(tmp / "elsewhere"),  # absolute, outside
    lambda root, tmp: "../escape",  # '..' out of the root
    lambda root, tmp: "a/../../escape",
    lambda root, tmp: "/etc",
])
def test_outside_paths_are_refused_and_nothing_is_created(root, tmp_path, request_of):
    before = tree(tmp_path)
    with pytest.raises(OutsideRootError, match="outside the save_map root") as exc:
        resolve_output_dir(root, request_of(root, tmp_path))
    assert "save_map_root" in str(exc.value)
    assert tree(tmp_path) == before


def test_links_leading_out_are_refused(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out_link").symlink_to(outside)
    with pytest.raises(OutsideRootError, match="symbolic link"):
        resolve_output_dir(root, "out_link/run")
    # a link in place of a file the save writes (map.ply) that points out of the root
    (root / "run").mkdir()
    (root / "run" / "map.ply").symlink_to(outside / "victim.ply")
    with pytest.raises(OutsideRootError, match="map.ply"):
        resolve_output_dir(root, "run")
    assert not (outside / "victim.ply").exists() and list(outside.iterdir()) == []


def test_default_root_follows_ros_home(monkeypatch, tmp_path):
    monkeypatch.setenv("ROS_HOME", str(tmp_path / "rh"))
    assert default_root() == tmp_path / "rh" / "da3_maps"
    assert resolve_root("") == Path(os.path.realpath(tmp_path / "rh" / "da3_maps"))
    monkeypatch.delenv("ROS_HOME")
    assert default_root() == Path.home() / ".ros" / "da3_maps"

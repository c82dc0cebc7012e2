"""Make a pip venv an install prefix that ``ros2 run`` / ``ros2 launch`` can use for da3_ros (as colcon
``--symlink-install`` lays one out), after the editable install of the project:

- ``share/ament_index/resource_index/packages/da3_ros`` (the ament index entry) and ``share/da3_ros/package.xml``;
- ``share/da3_ros/launch/*`` and ``share/da3_ros/config/*``: one link per *file* into the checkout (ros2launch walks
  the share directory for a launch file and does not descend into a linked directory);
- ``lib/da3_ros/<executable>``: one link per console script of the package (pip puts them in ``bin/``; launch_ros and
  ``ros2 run`` look in ``lib/<package>``).

Idempotent; stale links (a launch file that was removed) are taken away. Usage: ``python scripts/venv_prefix.py VENV``.
"""

from __future__ import annotations

import sys
from importlib.metadata import distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "da3_ros"


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.is_file():
        link.unlink()
    link.symlink_to(target)


def _link_files(src: Path, dst: Path) -> None:
    if dst.is_symlink():  # an older layout: a link to the whole directory
        dst.unlink()
    dst.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in src.iterdir() if p.is_file()} if src.is_dir() else set()
    for old in dst.iterdir():
        if old.is_symlink() and old.name not in wanted:
            old.unlink()
    for name in sorted(wanted):
        _link(src / name, dst / name)


def main(venv: str) -> int:
    prefix = Path(venv).resolve()
    share = prefix / "share" / PACKAGE
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True, exist_ok=True)
    (index / PACKAGE).write_text((ROOT / "resource" / PACKAGE).read_text())
    share.mkdir(parents=True, exist_ok=True)
    _link(ROOT / "package.xml", share / "package.xml")
    for folder in ("launch", "config"):
        _link_files(ROOT / folder, share / folder)
    lib = prefix / "lib" / PACKAGE
    lib.mkdir(parents=True, exist_ok=True)
    scripts = [ep.name for ep in distribution(PACKAGE).entry_points if ep.group == "console_scripts"]
    missing = [s for s in scripts if not (prefix / "bin" / s).is_file()]
    if missing:
        print(f"error: {', '.join(missing)} not in {prefix / 'bin'}; install the project first (pip install -e .)",
              file=sys.stderr)
        return 1
    for name in scripts:
        _link(Path("..") / ".." / "bin" / name, lib / name)
    print(f"venv_prefix: {share} (launch/, config/ file links), {lib} ({', '.join(sorted(scripts))})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))

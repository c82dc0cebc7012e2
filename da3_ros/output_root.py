"""Where ``~/save_map`` may write: one output root, nothing outside it (ROS-free).

ROS services are unauthenticated: any participant of the DDS domain can call ``~/save_map``. The node therefore
writes only below its ``save_map_root`` parameter. A request's ``output_dir`` is taken relative to the root (an
absolute path is accepted only when it lies inside the root), and the check is made on the *resolved* path, so
``..`` escapes and symbolic links that lead out of the root are refused. Files the save would overwrite that are links
leading out are refused too. Nothing is created when a request is refused.

The default root (parameter value ``''``) is ``$ROS_HOME/da3_maps``, or ``~/.ros/da3_maps`` when ``ROS_HOME`` is
unset (where ROS 2 keeps its own logs).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OutsideRootError", "default_root", "resolve_root", "resolve_output_dir"]

DEFAULT_SUBDIR = "da3_maps"
DEFAULT_NAME = "da3_map"  # what an empty output_dir saves into, below the root


class OutsideRootError(ValueError):
    """A requested output directory that is not inside the output root (the message says why and what to do)."""


def default_root() -> Path:
    """``$ROS_HOME/da3_maps`` (``~/.ros/da3_maps`` without ROS_HOME)."""
    ros_home = os.environ.get("ROS_HOME")
    base = Path(ros_home).expanduser() if ros_home else Path.home() / ".ros"
    return base / DEFAULT_SUBDIR


def resolve_root(root: str | Path) -> Path:
    """The absolute, link-free form of the configured root ('' = :func:`default_root`)."""
    return Path(os.path.realpath(Path(root).expanduser() if str(root) else default_root()))


def _links_out(directory: Path, root: Path) -> list[str]:
    """Entries of ``directory`` (and of its ``depth/``) that are symbolic links resolving outside ``root``."""
    bad = []
    for folder in (directory, directory / "depth"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in folder.iterdir():
            if entry.is_symlink() and not Path(os.path.realpath(entry)).is_relative_to(root):
                bad.append(str(entry))
    return bad


def resolve_output_dir(root: str | Path, requested: str) -> Path:
    """The directory to save into for a request's ``output_dir``: below the resolved ``root``.

    ``''`` saves into ``<root>/da3_map``, ``'.'`` into the root itself, a relative path below the root, an absolute
    path only when it lies inside the root. Raises :class:`OutsideRootError` for anything that resolves outside the
    root (``..`` escapes, absolute paths elsewhere, symbolic links leading out, including links in place of the files
    a save writes). Creates nothing."""
    base = resolve_root(root)
    text = requested.strip() if requested else ""
    wanted = Path(text).expanduser() if text else Path(DEFAULT_NAME)
    candidate = wanted if wanted.is_absolute() else base / wanted
    real = Path(os.path.realpath(candidate))
    if not real.is_relative_to(base):
        why = ("'..' leads out of it" if ".." in wanted.parts else "a symbolic link leads out of it"
               if Path(os.path.abspath(candidate)).is_relative_to(base) else "it is not inside it")
        raise OutsideRootError(f"refused output_dir {requested!r}: it resolves to {real}, outside the save_map root "
                               f"{base} ({why}); pass a path relative to the root, or start the node with the "
                               "parameter save_map_root set to where maps may be written")
    links = _links_out(real, base)
    if links:
        raise OutsideRootError(f"refused output_dir {requested!r}: {', '.join(links)} link(s) out of the save_map "
                               f"root {base}; remove the link(s) or choose another output_dir")
    return real

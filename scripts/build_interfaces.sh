#!/usr/bin/env bash
# Generate the ROS 2 interface packages this project needs and install them into a pip venv:
#   - tf2_msgs (our minimal TFMessage-only stand-in, scripts/interfaces/tf2_msgs), skipped when
#     `import tf2_msgs.msg` already works (e.g. a sourced ROS 2 distro);
#   - da3_ros_interfaces (msg/).
# Uses the pip rosidl/ament toolchain from requirements/ros.txt plus Debian's cmake, make and g++
# (see /work/shared/docs/ros2-from-pip.md). Idempotent: a package whose sources are unchanged since
# its last install and which still imports is skipped.
#
# usage: scripts/build_interfaces.sh [VENV]   (default: .venv)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV_ARG=${1:-$ROOT/.venv}
if [[ ! -x "$VENV_ARG/bin/python" ]]; then
  echo "error: no venv at '$VENV_ARG' (run 'make .venv' first)" >&2
  exit 1
fi
VENV=$(cd "$VENV_ARG" && pwd)
PY=$VENV/bin/python
STAMP_DIR=$VENV/share/da3_ros_build
JOBS=$(nproc 2>/dev/null || echo 2)

missing=()
for tool in cmake make g++ gcc; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "error: building the ROS 2 interfaces needs cmake, make and a C/C++ compiler; missing: ${missing[*]}" >&2
  echo "       install with: sudo apt-get install -y cmake make g++" >&2
  exit 1
fi

export VIRTUAL_ENV=$VENV
export AMENT_PREFIX_PATH=$VENV   # else: "No 'rosidl_typesupport_c' found"
export PATH=$VENV/bin:$PATH

# The rosidl wheels' exported *.cmake files hard-code the wheel build host's include dirs; point them at
# this venv's Python and numpy headers (cmake refuses non-existent include paths).
"$PY" - "$VENV" <<'PY'
import pathlib, sys, sysconfig
import numpy

venv = pathlib.Path(sys.argv[1])
py_inc = sysconfig.get_paths()["include"]
if not (pathlib.Path(py_inc) / "Python.h").is_file():
    sys.exit(f"error: Python headers missing ({py_inc}/Python.h); install with: sudo apt-get install -y python3-dev")
host = "/opt/python/cp311-cp311"
subs = [
    (f"{host}/lib/python3.11/site-packages/numpy/_core/include", numpy.get_include()),
    (f"{host}/include/python3.11", py_inc),
]
changed = 0
for f in (venv / "share").glob("**/*.cmake"):
    text = f.read_text()
    if host not in text:
        continue
    new = text
    for old, repl in subs:
        new = new.replace(old, repl)
    if host in new:
        print(f"warning: {f} still references {host}", file=sys.stderr)
    if new != text:
        f.write_text(new)
        changed += 1
if changed:
    print(f"build_interfaces: rewrote wheel-host include dirs in {changed} cmake file(s)")
PY

src_hash() {  # hash of every file in an interface package source folder
  (cd "$1" && find . -type f ! -name COLCON_IGNORE -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

importable() {  # importable PKG KIND Type: the module imports and its C type support loads
  "$PY" -c "from $1.$2 import $3; $3.__class__.__import_type_support__()" >/dev/null 2>&1
}

build_pkg() {  # build_pkg NAME SRC_DIR
  local name=$1 src=$2 build
  build=$(mktemp -d "${TMPDIR:-/tmp}/da3-interfaces-$name.XXXXXX")
  echo "build_interfaces: building $name (in $build)"
  local log=$build/build.log
  if ! {
    cmake -S "$src" -B "$build" \
      -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release &&
      cmake --build "$build" -j "$JOBS" &&
      cmake --install "$build"
  } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "error: building $name failed; full log: $log" >&2
    return 1
  fi
  rm -rf "$build"
  mkdir -p "$STAMP_DIR"
  src_hash "$src" >"$STAMP_DIR/$name.sha256"
}

ensure_pkg() {  # ensure_pkg NAME SRC_DIR KIND TYPE
  local name=$1 src=$2 kind=$3 type=$4 want
  want=$(src_hash "$src")
  if [[ -f "$STAMP_DIR/$name.sha256" && "$(cat "$STAMP_DIR/$name.sha256")" == "$want" ]] && importable "$name" "$kind" "$type"; then
    echo "build_interfaces: $name up to date"
    return 0
  fi
  build_pkg "$name" "$src"
  if ! importable "$name" "$kind" "$type"; then
    echo "error: $name was built but 'from $name.$kind import $type' fails in $PY" >&2
    return 1
  fi
}

# tf2_msgs: a distro's (or any other) tf2_msgs wins; ours is built only where none is importable.
if [[ ! -f "$STAMP_DIR/tf2_msgs.sha256" ]] && importable tf2_msgs msg TFMessage; then
  echo "build_interfaces: tf2_msgs already importable, not building our stand-in"
else
  ensure_pkg tf2_msgs "$ROOT/scripts/interfaces/tf2_msgs" msg TFMessage
fi
ensure_pkg da3_ros_interfaces "$ROOT/msg" msg WindowResult

#!/usr/bin/env bash
# Check the Debian/Ubuntu packages the venv build needs; name the exact apt-get command when one is missing.
# usage: scripts/check_system.sh [PYTHON]   (default: python3)
set -euo pipefail
PYTHON=${1:-python3}
fail=0

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: '$PYTHON' not found; install with: sudo apt-get install -y python3 python3-venv python3-dev" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: da3-ros needs Python 3.11 (the ROS 2 wheels are cp311); '$PYTHON' is $("$PYTHON" -V 2>&1)." >&2
  echo "       On Debian 12: sudo apt-get install -y python3 python3-venv python3-dev; or run make PYTHON=python3.11" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "error: '$PYTHON -m venv' is unavailable; install with: sudo apt-get install -y python3-venv" >&2
  fail=1
fi
if ! "$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  echo "error: Python headers (Python.h) missing; install with: sudo apt-get install -y python3-dev" >&2
  fail=1
fi
missing=()
for tool in cmake make g++ gcc; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "error: missing ${missing[*]} (needed to generate the ROS 2 interfaces);" \
    "install with: sudo apt-get install -y cmake make g++" >&2
  fail=1
fi
exit "$fail"

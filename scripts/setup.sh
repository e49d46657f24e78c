#!/usr/bin/env bash
# One-step set-up on a machine without apt ROS 2: a virtual environment (.venv) with the ROS 2 Kilted wheels,
# torch (CPU) and the other dependencies; the interfaces in msg/ (and tf2_msgs where missing) built into it;
# the package installed non-editable. Idempotent: re-running only redoes what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${SELFI_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST

# open3d needs libusb at import time (Debian package libusb-1.0-0).
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  echo "[setup] installing libusb-1.0-0 (needed by open3d)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q libusb-1.0-0 >/dev/null; }
fi

[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV"; "$PY" -m venv "$VENV"; }
REQ_HASH=$(cat requirements.txt requirements-build.txt | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.selfi_requirements" 2>/dev/null)" != "$REQ_HASH" ]; then
  echo "[setup] installing Python dependencies (first run: a few minutes)"
  # (this machine's pip config names local index folders that may not exist: hide those warnings only)
  "$VENV/bin/pip" install -q --upgrade pip 2> >(grep -v "is ignored: it is neither" >&2)
  "$VENV/bin/pip" install -q -r requirements.txt -r requirements-build.txt 2> >(grep -v "is ignored: it is neither" >&2)
  echo "$REQ_HASH" > "$VENV/.selfi_requirements"
fi

echo "[setup] building ROS interfaces"
VENV="$VENV" bash scripts/build_interfaces.sh

SRC_HASH=$(find selfi_ros launch config resource msg srv setup.py setup.cfg package.xml -type f ! -name "*.pyc" 2>/dev/null | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.selfi_installed" 2>/dev/null)" != "$SRC_HASH" ]; then
  echo "[setup] installing selfi_ros into $VENV"
  "$VENV/bin/pip" install -q --no-deps --no-build-isolation --force-reinstall . 2> >(grep -v "is ignored: it is neither" >&2)
  echo "$SRC_HASH" > "$VENV/.selfi_installed"
fi
echo "[setup] done: $VENV"

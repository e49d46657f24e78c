#!/usr/bin/env bash
# Build this package's ROS 2 interfaces (msg/*.msg -> selfi_ros.msg, srv/*.srv -> selfi_ros.srv) into a Python venv that holds the
# ROS 2 Kilted PyPI wheels, and tf2_msgs/TFMessage where the venv has no tf2_msgs (not on PyPI).
# Recipe: /work/shared/ROS_ENV.md (AMENT_PREFIX_PATH=$VENV while configuring; wheel CMake exports patched
# to this interpreter's include paths). Idempotent; returns in about a second when nothing changed.
#
#   usage: scripts/build_interfaces.sh [VENV]        (default: $VENV or <repo>/.venv)
#   then:  $VENV/bin/pip install --no-deps --no-build-isolation .   (the Python package, via setup.py)
#
# On a robot with ROS 2 installed use `colcon build` instead (CMakeLists.txt builds everything).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${1:-${VENV:-$ROOT/.venv}}" && pwd)"
PY="$VENV/bin/python"
BUILD="$ROOT/build/interfaces"
JOBS="${JOBS:-2}"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
export HOME="${HOME:-/tmp}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST

[ -x "$PY" ] || { echo "build_interfaces: no python at $PY" >&2; exit 1; }
GEN="-G Ninja"; command -v ninja >/dev/null || GEN=""

# Python check run outside the repo so that the checkout's selfi_ros/ does not shadow site-packages.
pycheck() { (cd / && "$PY" -c "$1") >/dev/null 2>&1; }

# Fix 2 of ROS_ENV.md: include paths of the machine that built the wheels -> this interpreter's.
patch_exports() {
  local inc npinc files
  inc="$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")"
  npinc="$("$PY" -c "import numpy; print(numpy.get_include())")"
  files="$(grep -lE '/opt/python/cp[0-9]+-cp[0-9]+/' "$VENV"/share/*/cmake/* 2>/dev/null || true)"
  [ -z "$files" ] && return 0
  echo "build_interfaces: patching include paths in $(echo "$files" | wc -l) CMake export files"
  # shellcheck disable=SC2086
  sed -i -E \
    -e "s#/opt/python/cp[0-9]+-cp[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${npinc}#g" \
    -e "s#/opt/python/cp[0-9]+-cp[0-9]+/include/python3\.[0-9]+#${inc}#g" $files
}

build_pkg() {  # build_pkg SRC_DIR NAME [cmake args...]
  local src="$1" name="$2"; shift 2
  echo "build_interfaces: building $name from $src ..."
  local t0=$SECONDS
  cmake -S "$src" -B "$BUILD/$name" $GEN -DCMAKE_INSTALL_PREFIX="$VENV" -DBUILD_TESTING=OFF \
    -DPython3_EXECUTABLE="$PY" -DCMAKE_BUILD_TYPE=Release "$@" >"$BUILD/$name.log" 2>&1 \
    && cmake --build "$BUILD/$name" -j "$JOBS" >>"$BUILD/$name.log" 2>&1 \
    && cmake --install "$BUILD/$name" >>"$BUILD/$name.log" 2>&1 \
    || { echo "build_interfaces: $name FAILED, log: $BUILD/$name.log" >&2; tail -30 "$BUILD/$name.log" >&2; exit 1; }
  echo "build_interfaces: $name built in $((SECONDS - t0)) s"
}

mkdir -p "$BUILD"

# --- tf2_msgs (only where the real one is missing) ---------------------------------------------
if pycheck "from tf2_msgs.msg import TFMessage"; then
  echo "build_interfaces: tf2_msgs present"
else
  patch_exports
  src="$BUILD/src/tf2_msgs"
  mkdir -p "$src/msg"
  echo "geometry_msgs/TransformStamped[] transforms" >"$src/msg/TFMessage.msg"
  cat >"$src/package.xml" <<'XML'
<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.0.0</version>
  <description>TFMessage only, built from its one-line definition by selfi_ros where tf2_msgs is not installed.</description>
  <maintainer email="selfi_ros@example.com">selfi_ros</maintainer>
  <license>BSD-3-Clause</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
XML
  cat >"$src/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.16)
project(tf2_msgs C CXX)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/TFMessage.msg" DEPENDENCIES geometry_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
CM
  build_pkg "$src" tf2_msgs
  pycheck "from tf2_msgs.msg import TFMessage" || { echo "build_interfaces: tf2_msgs built but not importable" >&2; exit 1; }
fi

# --- selfi_ros interfaces -----------------------------------------------------------------------
HASH="$(cat "$ROOT/CMakeLists.txt" "$ROOT/package.xml" "$ROOT"/msg/*.msg "$ROOT"/srv/*.srv | sha256sum | cut -c1-16)"
STAMP="$VENV/share/selfi_ros/interfaces.sha"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && pycheck "from selfi_ros.msg import SelfiStatus; from selfi_ros.srv import SaveMap, LoadMap"; then
  echo "build_interfaces: selfi_ros interfaces up to date"
else
  patch_exports
  # rosidl installs an empty selfi_ros/__init__.py into site-packages: keep an installed one (pip's).
  SP="$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
  keep=""
  if [ -f "$SP/selfi_ros/__init__.py" ] && [ -s "$SP/selfi_ros/__init__.py" ]; then
    keep="$BUILD/__init__.py.keep"; cp "$SP/selfi_ros/__init__.py" "$keep"
  fi
  build_pkg "$ROOT" selfi_ros -DSELFI_INTERFACES_ONLY=ON
  if [ -n "$keep" ]; then cp "$keep" "$SP/selfi_ros/__init__.py"; fi
  # rosidl also writes a selfi_ros-*.egg-info without a file list: `pip install --force-reinstall .` would
  # then uninstall the whole selfi_ros/ folder (generated msg/ included). pip's own dist-info lists only its
  # files, so it can replace the Python package while msg/ stays.
  rm -rf "$SP"/selfi_ros-*.egg-info
  pycheck "from selfi_ros.msg import SelfiStatus; from selfi_ros.srv import SaveMap, LoadMap" || { echo "build_interfaces: selfi_ros.msg / selfi_ros.srv not importable" >&2; exit 1; }
  echo "$HASH" >"$STAMP"
fi
echo "build_interfaces: done (prefix $VENV)"

"""`colcon build` of the package (ament_cmake + rosidl + the Python sources) installs what `ros2 run` and
`ros2 launch` need: lib/selfi_ros/selfi_node, share/selfi_ros/{launch,config}, the ament index entry and
selfi_ros.msg next to the Python package. Takes ~30 s on 2 cores (a C build of the interfaces)."""
import os
import shutil
import subprocess
import sys

import pytest

from selfi_ros_testing import REPO, free_domain_id, ros_env

VENV = sys.prefix
COLCON = os.path.join(VENV, "bin", "colcon")
PKG_PATHS = ["package.xml", "CMakeLists.txt", "msg", "selfi_ros", "scripts", "launch", "config", "resource", "data"]


@pytest.mark.skipif(not os.path.exists(COLCON) or shutil.which("cmake") is None, reason="colcon/cmake missing")
def test_colcon_build_installs_node_and_interfaces(tmp_path):
    src = tmp_path / "src" / "selfi_ros"  # outside the checkout: the venv inside it would be a source path
    src.mkdir(parents=True)
    for p in PKG_PATHS:
        s = os.path.join(REPO, p)
        if os.path.isdir(s):
            shutil.copytree(s, src / p, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(s, src / p)
    env = ros_env(free_domain_id())
    env.update(AMENT_PREFIX_PATH=VENV, CMAKE_PREFIX_PATH=VENV, PATH=os.path.join(VENV, "bin") + os.pathsep + env["PATH"])
    env.pop("PYTHONPATH", None)
    r = subprocess.run([COLCON, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(tmp_path / "src"),
                        "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
                        "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    inst = tmp_path / "install" / "selfi_ros"
    for rel in ("lib/selfi_ros/selfi_node", "lib/selfi_ros/selfi-ros", "share/selfi_ros/launch/selfi.launch.py",
                "share/selfi_ros/config/selfi.yaml", "share/selfi_ros/package.xml",
                "share/ament_index/resource_index/packages/selfi_ros"):
        assert (inst / rel).exists(), rel
    assert os.access(inst / "lib/selfi_ros/selfi_node", os.X_OK)
    site = inst / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    # the installed package (not the checkout) with its generated messages, found through the ament index
    env.update(PYTHONPATH=str(site), AMENT_PREFIX_PATH=f"{inst}{os.pathsep}{VENV}",
               LD_LIBRARY_PATH=f"{inst / 'lib'}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}")
    code = ("import selfi_ros, selfi_ros.msg, selfi_ros.ros.node as n; "
            "from ament_index_python.packages import get_package_share_directory as g; "
            "print(selfi_ros.__file__); print(selfi_ros.msg.SelfiStatus().state == ''); print(g('selfi_ros'))")
    r = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.split()
    assert lines[0].startswith(str(site)) and lines[1] == "True" and lines[2] == str(inst / "share" / "selfi_ros")
    # the installed executable starts the node: an invalid parameter must stop it with a clear error
    r = subprocess.run([sys.executable, str(inst / "lib/selfi_ros/selfi_node"), "--ros-args", "-p",
                        "publish_tf:=map_to_moon"], cwd="/", env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "publish_tf" in (r.stdout + r.stderr), r.stdout[-2000:] + r.stderr[-2000:]

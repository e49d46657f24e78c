"""`colcon build` of the package (ament_cmake + rosidl + the Python sources) installs what `ros2 run` and
`ros2 launch` need: lib/selfi_ros/selfi_node, share/selfi_ros/{launch,config}, the ament index entry and
selfi_ros.msg next to the Python package; and with BUILD_TESTING=ON, `colcon test` runs the pytest suite
(one ctest test per test/test_*.py, ament_cmake_pytest) and `colcon test-result` reports its results,
failures included. One build (~40 s on 2 cores: a C build of the interfaces) is shared by the tests here.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from selfi_ros_testing import REPO, free_domain_id, ros_env

VENV = sys.prefix
COLCON = os.path.join(VENV, "bin", "colcon")
PKG_PATHS = ["package.xml", "CMakeLists.txt", "msg", "srv", "selfi_ros", "scripts", "launch", "config", "resource", "data",
             "test"]
#: a fast, ROS-free test file of the suite (numpy/scipy only, ~1 s)
FAST_TEST = "test_geometry_sim3"
#: added to the copy of the package only: must make `colcon test-result` report a failure
FAILING_TEST = "test_zz_deliberate_failure"
FAILING_SRC = '"""Deliberately failing test (added by test_colcon_build.py to a copy of the package)."""\n\n\n' \
              "def test_fails_on_purpose():\n    assert 1 + 1 == 3\n"

pytestmark = pytest.mark.skipif(not os.path.exists(COLCON) or shutil.which("cmake") is None,
                                reason="colcon/cmake missing")


def _colcon(ws, env, *args, timeout=300):
    return subprocess.run([COLCON, "--log-base", str(ws / "log"), *args], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def colcon_ws(tmp_path_factory):
    """A colcon workspace outside the checkout (the venv inside it would be a source path) holding a copy of
    the package plus one deliberately failing test file, built once with BUILD_TESTING=ON.
    Returns (workspace path, environment for colcon)."""
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / "selfi_ros"
    src.mkdir(parents=True)
    for p in PKG_PATHS:
        s = os.path.join(REPO, p)
        if os.path.isdir(s):
            shutil.copytree(s, src / p, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
        else:
            shutil.copy2(s, src / p)
    (src / "test" / f"{FAILING_TEST}.py").write_text(FAILING_SRC)
    env = ros_env(free_domain_id())
    env.update(AMENT_PREFIX_PATH=VENV, CMAKE_PREFIX_PATH=VENV, PATH=os.path.join(VENV, "bin") + os.pathsep + env["PATH"])
    env.pop("PYTHONPATH", None)
    r = _colcon(ws, env, "build", "--base-paths", str(ws / "src"), "--build-base", str(ws / "build"),
                "--install-base", str(ws / "install"),
                "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=ON")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return ws, env


def _test_and_report(ws, env, ctest_regex):
    """`colcon test` on the tests matching ``ctest_regex`` after clearing earlier results, then
    `colcon test-result`; returns (junit results folder, test-result's CompletedProcess). The junit files
    go to <build>/selfi_ros/test_results (ament's AMENT_TEST_RESULTS_DIR, fixed at configure time)."""
    pkg_build = ws / "build" / "selfi_ros"
    results = pkg_build / "test_results"
    for d in (results, pkg_build / "Testing"):
        shutil.rmtree(d, ignore_errors=True)
    r = _colcon(ws, env, "test", "--base-paths", str(ws / "src"), "--build-base", str(ws / "build"),
                "--install-base", str(ws / "install"), "--event-handlers", "console_direct-",
                "--ctest-args", "-R", ctest_regex)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = _colcon(ws, env, "test-result", "--test-result-base", str(ws / "build"), "--verbose", timeout=60)
    return results, rep


def _summary(text):
    m = re.search(r"Summary: (\d+) tests?, (\d+) errors?, (\d+) failures?, (\d+) skipped", text)
    assert m, text[-2000:]
    return tuple(int(g) for g in m.groups())


def test_colcon_build_installs_node_and_interfaces(colcon_ws):
    ws, env = colcon_ws
    env = dict(env)
    inst = ws / "install" / "selfi_ros"
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


def test_colcon_test_registers_every_test_file(colcon_ws):
    ws, env = colcon_ws
    r = subprocess.run(["ctest", "-N"], cwd=ws / "build" / "selfi_ros", env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    registered = set(re.findall(r"Test +#\d+: (\S+)", r.stdout))
    files = {f[:-3] for f in os.listdir(os.path.join(REPO, "test")) if f.startswith("test_") and f.endswith(".py")}
    assert files | {FAILING_TEST} == registered, r.stdout[-3000:]


def test_colcon_test_runs_pytest_and_reports_passes(colcon_ws):
    ws, env = colcon_ws
    results, rep = _test_and_report(ws, env, f"^{FAST_TEST}$")
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    n, errors, failures, skipped = _summary(rep.stdout)
    # pytest really ran: junit results of every test function of the file, all passing
    with open(os.path.join(REPO, "test", f"{FAST_TEST}.py")) as f:
        n_defs = len(re.findall(r"^def test_", f.read(), flags=re.M))
    assert n >= n_defs > 0 and errors == failures == skipped == 0, rep.stdout[-3000:]
    assert (results / "selfi_ros" / f"{FAST_TEST}.xunit.xml").exists(), list(results.rglob("*"))


def test_colcon_test_result_reports_a_failing_test(colcon_ws):
    ws, env = colcon_ws
    _, rep = _test_and_report(ws, env, f"^{FAILING_TEST}$")
    assert rep.returncode != 0, rep.stdout[-3000:]
    _, errors, failures, _ = _summary(rep.stdout)
    assert failures + errors >= 1, rep.stdout[-3000:]  # the pytest junit file's failure (+ ctest's own record)
    assert re.search(rf"{FAILING_TEST}\.xunit\.xml: 1 test, 0 errors, 1 failure", rep.stdout), rep.stdout[-3000:]
    assert "test_fails_on_purpose" in rep.stdout, rep.stdout[-3000:]

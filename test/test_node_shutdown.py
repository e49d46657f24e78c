"""selfi_node shut down by SIGINT while it works (frames streaming, windows being built): the worker stops
before the node and the context, so nothing publishes on an invalid context - no "RCLError: publisher's
context is invalid", no traceback, exit status 0; with ``save_on_shutdown`` the map is saved to ``save_dir``
first. Node in its own process (SlowLineBackend: 80 ms per window, 40 ms per localization), inputs from this
one over DDS.
"""
import signal
import threading
import time

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_interfaces.sh)")

from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from selfi_ros_testing import image_pair, node_and_client_factory  # noqa: E402

T0 = 1_000_000_000_000
DT = 50_000_000


@pytest.fixture
def ros(tmp_path):
    yield from node_and_client_factory(tmp_path)


def _stream_until_signalled(node, c, min_poses=3, signals=1):
    """Publish frames at 20 Hz from a thread; SIGINT the node once it published ``min_poses`` poses (it is
    then busy with windows and localizations) while frames keep coming; return its exit status."""
    from geometry_msgs.msg import PoseStamped

    c.record(PoseStamped, "/selfi_node/pose")
    pi, pc = c.publisher(Image, "/camera/image_raw"), c.publisher(CameraInfo, "/camera/camera_info")
    assert c.wait_subscribers(pi, node=node) and c.wait_subscribers(pc, node=node), node.log()[-2000:]
    c.wait_for(lambda: False, 0.5)
    stop = threading.Event()

    def stream():
        k = 0
        while not stop.is_set():
            im, ci = image_pair(T0 + k * DT)
            pc.publish(ci)
            pi.publish(im)
            k += 1
            stop.wait(0.05)

    th = threading.Thread(target=stream, daemon=True)
    th.start()
    try:
        assert c.wait_for(lambda: len(c.get("/selfi_node/pose")) >= min_poses, 60, node), node.log()[-3000:]
        for _ in range(signals):  # ros2 launch: the terminal's Ctrl-C and launch's own forwarded SIGINT
            node.proc.send_signal(signal.SIGINT)
            time.sleep(0.02)
        rc = node.proc.wait(90)
    finally:
        stop.set()
        th.join(5)
    return rc


def test_sigint_mid_run_exits_0_without_traceback(ros):
    node, c = ros(backend="selfi_ros_testing:SlowLineBackend", queue_size=2)
    rc = _stream_until_signalled(node, c)
    log = node.log()
    assert rc == 0, log[-3000:]
    assert "Traceback" not in log and "RCLError" not in log and "context is invalid" not in log, log[-3000:]
    assert "publishing failed" not in log, log[-3000:]


@pytest.mark.parametrize("when", ["at_start", "at_run_time", "at_start_two_sigints"])
def test_save_on_shutdown_writes_the_map(ros, tmp_path, when):
    """``save_on_shutdown`` given at start, or switched on through SetParameters while running (dynamic); a
    second SIGINT right behind the first (``ros2 launch`` forwards the terminal's Ctrl-C) does not skip it."""
    save_dir = tmp_path / "on_shutdown"
    params = dict(backend="selfi_ros_testing:SlowLineBackend", save_dir=str(save_dir))
    if when.startswith("at_start"):
        params["save_on_shutdown"] = True
    node, c = ros(**params)
    if when == "at_run_time":
        from test_node_parameters import set_param

        assert set_param(c, node, "save_on_shutdown", True).successful
    rc = _stream_until_signalled(node, c, min_poses=4, signals=2 if when.endswith("two_sigints") else 1)
    log = node.log()
    assert rc == 0 and "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    for f in ("map.ply", "trajectory.tum", "metadata.json", "ros_map_frame.json"):
        assert (save_dir / f).is_file(), (f, log[-3000:])
    rows = [ln for ln in (save_dir / "trajectory.tum").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(rows) >= 4
    assert f"save_on_shutdown: saved to {save_dir}" in log

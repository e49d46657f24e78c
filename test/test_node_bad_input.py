"""selfi_node under bad input, over DDS (node in its own process): every bad message is logged, counted
by reason (~/status, /diagnostics), and dropped; the node keeps running and nothing mapped is lost."""
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_interfaces.sh)")
status_mod = pytest.importorskip("selfi_ros.msg", reason="selfi_ros interfaces not built (scripts/build_interfaces.sh)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Path  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from selfi_ros_testing import (FAST_ENGINE_PARAMS, NodeProcess, RosClient, diag_values, free_domain_id,  # noqa: E402
                               image_pair)

T0 = 2_000_000_000_000
DT = 100_000_000
STATUS = "/selfi_node/status"


@pytest.fixture
def started(tmp_path):
    made = []

    def start(backend="selfi_ros_testing:LineBackend", **params):
        d = free_domain_id()
        node = NodeProcess(d, {"backend": backend, **FAST_ENGINE_PARAMS, **params}, str(tmp_path / "node.log"))
        c = RosClient(d)
        made.append((node, c))
        c.record(status_mod.SelfiStatus, STATUS)
        c.record(DiagnosticArray, "/diagnostics")
        c.record(Path, "/selfi_node/path")
        pi = c.publisher(Image, "/camera/image_raw")
        pc = c.publisher(CameraInfo, "/camera/camera_info")
        assert c.wait_subscribers(pi, node=node) and c.wait_subscribers(pc, node=node), node.log()[-2000:]
        c.wait_for(lambda: False, 0.5)
        return node, c, pi, pc

    yield start
    for node, c in made:
        c.close()
        node.stop()


def _last_status(c):
    s = c.get(STATUS)
    return s[-1] if s else None


def _diag(c):
    d = [m for m in c.get("/diagnostics") if m.status and m.status[0].name.startswith("selfi_node")]
    return diag_values(d[-1]) if d else {}


def _wait_count(c, node, key, n, timeout=5.0):
    ok = c.wait_for(lambda: int(_diag(c).get(key, 0)) >= n, timeout, node)
    assert ok, f"{key} never reached {n}: {_diag(c)}\n{node.log()[-2000:]}"


def test_bad_inputs_counted_and_dropped(started):
    node, c, pi, pc = started(backend="selfi_ros_testing:SlowLineBackend", queue_size=2)
    stamp = T0
    for k in range(6):  # a good start: a map exists
        im, ci = image_pair(stamp)
        pc.publish(ci)
        pi.publish(im)
        stamp += DT
        c.wait_for(lambda: False, 0.15)
    assert c.wait_for(lambda: (_last_status(c) is not None and _last_status(c).windows >= 1
                               and _last_status(c).queue_depth == 0), 10, node), node.log()[-3000:]
    base = _last_status(c)
    assert base.frames_rejected == 0 and base.frames_dropped == 0 and base.map_points > 0
    last_good = stamp - DT

    # each bad input: publish, then wait for its own counter
    im, ci = image_pair(stamp)
    im.encoding = "64FC1"  # a ROS encoding the node does not convert
    pc.publish(ci)
    pi.publish(im)
    _wait_count(c, node, "count_bad_image", 1)
    stamp += DT

    im, ci = image_pair(stamp)
    im.height, im.width, im.step, im.data = 0, 0, 0, b""
    pi.publish(im)
    _wait_count(c, node, "count_bad_image", 2)
    stamp += DT

    im, ci = image_pair(stamp, encoding="mono8")  # wrong label: mono8 bytes announced as rgb8
    im.encoding = "rgb8"
    pc.publish(ci)
    pi.publish(im)
    _wait_count(c, node, "count_bad_image", 3)
    stamp += DT

    im, _ = image_pair(stamp, w=32, h=24)
    _, ci = image_pair(stamp, w=64, h=48)
    pc.publish(ci)
    pi.publish(im)
    _wait_count(c, node, "count_size_mismatch", 1)
    stamp += DT

    for bad_k in ([np.nan, 0, 32, 0, 51.2, 24, 0, 0, 1], [0.0] * 9):
        im, ci = image_pair(stamp)
        ci.k = [float(v) for v in bad_k]
        pc.publish(ci)
        pi.publish(im)
        stamp += DT
    _wait_count(c, node, "count_bad_camera_info", 2)

    for s, key in ((last_good, "count_stamp_repeated"), (last_good - 3 * DT, "count_stamp_out_of_order")):
        im, ci = image_pair(s)
        pc.publish(ci)
        pi.publish(im)
        _wait_count(c, node, key, 1)

    st = _last_status(c)
    c.wait_for(lambda: _last_status(c).frames_rejected >= 6 and _last_status(c).frames_dropped >= 2, 3, node)
    st = _last_status(c)
    assert st.frames_rejected == 6 and st.frames_dropped == 2, st
    assert st.map_points >= base.map_points and st.windows >= base.windows
    assert node.alive()
    assert "frame rejected (bad_image)" in node.log() and "size_mismatch" in node.log()

    # a 10x faster burst (100 Hz) into a slow engine with a queue of 2: oldest frames dropped, counted
    before = _last_status(c)
    n_paths = len(c.get("/selfi_node/path")[-1].poses)
    for k in range(30):
        im, ci = image_pair(stamp)
        pc.publish(ci)
        pi.publish(im)
        stamp += DT // 10
        time.sleep(0.01)
    assert c.wait_for(lambda: _last_status(c).queue_depth == 0 and int(_diag(c).get("count_queue_full", 0)) > 0,
                      15, node), f"{_last_status(c)} {_diag(c)}"
    after = _last_status(c)
    assert after.frames_dropped > before.frames_dropped
    assert after.map_points >= before.map_points and after.windows >= before.windows
    assert after.poses > before.poses  # it kept mapping during the burst
    map_sizes = [s.map_points for s in c.get(STATUS)]
    assert all(b >= a for a, b in zip(map_sizes, map_sizes[1:])), "map points decreased"
    assert len(c.get("/selfi_node/path")[-1].poses) >= n_paths
    assert node.alive()


def test_missing_camera_info_random_weights_and_silence(started):
    """No CameraInfo at all: after camera_info_timeout_s images run with K unknown (counted); a random-weights
    backend is flagged in status, diagnostics and the log; diagnostics warn when images stop."""
    # use_sim_time without /clock: status/diagnostics timers must keep running (steady clock)
    node, c, pi, pc = started(backend="selfi_ros_testing:RandomLineBackend", camera_info_timeout_s=0.5,
                              camera_info_wait_s=0.1, no_image_warn_s=1.0, use_sim_time=True)
    stamp = T0
    for k in range(6):
        im, _ = image_pair(stamp)
        pi.publish(im)
        stamp += DT
        c.wait_for(lambda: False, 0.15)
    assert c.wait_for(lambda: int(_diag(c).get("count_no_camera_info", 0)) >= 4, 8, node), _diag(c)
    assert c.wait_for(lambda: _last_status(c) is not None and _last_status(c).poses >= 3, 8, node), node.log()[-2000:]
    st = _last_status(c)
    assert st.random_weights and st.frames_rejected == 0
    assert "RANDOM WEIGHTS" in node.log()
    assert c.wait_for(lambda: "no image since" in _diag(c).get("_message", ""), 6, node), _diag(c)
    d = _diag(c)
    assert d["_level"] == 1 and "RANDOM WEIGHTS" in d["_message"]  # WARN
    assert node.alive()

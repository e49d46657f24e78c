"""selfi_node over DDS (node in its own process) when the image stamps jump back 10 s mid-stream (a bag
played again, ``play --loop``, a restarted simulated clock): the jump is counted once (``count_time_jump``),
logged, /diagnostics warns, a new map starts, and the node keeps publishing poses of the frames after it;
a late frame (0.3 s back) is still a counted drop."""
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_interfaces.sh)")
status_mod = pytest.importorskip("selfi_ros.msg", reason="selfi_ros interfaces not built (scripts/build_interfaces.sh)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from selfi_ros_testing import FAST_ENGINE_PARAMS, NodeProcess, RosClient, diag_values, free_domain_id, image_pair  # noqa: E402,E501

T0 = 2_000_000_000_000  # ns
DT = 100_000_000  # 10 Hz
STATUS = "/selfi_node/status"


def _diag(c):
    d = [m for m in c.get("/diagnostics") if m.status and m.status[0].name.startswith("selfi_node")]
    return diag_values(d[-1]) if d else {}


def _pose_stamps(c):
    return [p.header.stamp.sec * 1_000_000_000 + p.header.stamp.nanosec for p in c.get("/selfi_node/pose")]


def test_time_jump_back_starts_a_new_map_and_keeps_publishing(tmp_path):
    d = free_domain_id()
    node = NodeProcess(d, {"backend": "selfi_ros_testing:LineBackend", **FAST_ENGINE_PARAMS},
                       str(tmp_path / "node.log"))
    c = RosClient(d)
    try:
        c.record(status_mod.SelfiStatus, STATUS)
        c.record(DiagnosticArray, "/diagnostics")
        c.record(PoseStamped, "/selfi_node/pose")
        pi = c.publisher(Image, "/camera/image_raw")
        pc = c.publisher(CameraInfo, "/camera/camera_info")
        assert c.wait_subscribers(pi, node=node) and c.wait_subscribers(pc, node=node), node.log()[-2000:]
        c.wait_for(lambda: False, 0.5)

        def send(stamp):
            im, ci = image_pair(stamp)
            pc.publish(ci)
            pi.publish(im)
            c.wait_for(lambda: False, 0.12)

        first = [T0 + k * DT for k in range(8)]
        for s in first:
            send(s)
        assert c.wait_for(lambda: any(s >= first[-2] for s in _pose_stamps(c)), 10, node), node.log()[-3000:]
        assert int(_diag(c).get("count_time_jump", 0)) == 0
        second = [first[-1] - 10_000_000_000 + k * DT for k in range(1, 9)]  # 10 s back, then onwards
        for s in second[:4]:
            send(s)
        send(second[3] - 3 * DT)  # a late frame of the new stream: dropped, not a jump
        for s in second[4:]:
            send(s)
        assert c.wait_for(lambda: any(s >= second[-2] for s in _pose_stamps(c)), 10, node), \
            f"no pose after the jump: {_diag(c)}\n{node.log()[-3000:]}"
        assert c.wait_for(lambda: "time_jump" in _diag(c).get("_message", ""), 5, node), _diag(c)
        # /diagnostics is periodic: wait for the one published after the last image was counted
        assert c.wait_for(lambda: int(_diag(c).get("frames_in", 0)) == 17, 5, node), _diag(c)
        dv = _diag(c)
        assert dv["_level"] == 1 and "new map" in dv["_message"], dv  # WARN
        assert int(dv["count_time_jump"]) == 1, dv
        assert int(dv.get("count_stamp_out_of_order", 0)) == 1, dv
        after = [s for s in _pose_stamps(c) if s in second]
        assert len(set(after)) >= 6, after  # it keeps publishing poses of the new stream
        assert int(dv["frames_in"]) == 17, dv
        assert node.log().count("time_jump: stamps jumped back 9.900 s") == 1, node.log()[-3000:]
        assert node.alive()
    finally:
        c.close()
        node.stop()

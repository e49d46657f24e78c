"""selfi_node's TF tree over DDS when the robot's ``base_link -> camera`` arrives on /tf_static only after the
first poses (robot_state_publisher started after the camera): the node switches cleanly, once, from ``map ->
camera`` to ``map -> base_link``; no frame ever has two parents at one time, ``~/odometry`` switches its child
frame with /tf at the same pose, the switch is logged once and /diagnostics warns; the map is re-anchored to
base_link (REP-105: z up). Node in its own process (LineBackend), inputs and a /tf recorder in this one.
"""
import numpy as np
import pytest

pytest.importorskip("rclpy")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_interfaces.sh)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from selfi_ros.ros.conversions import stamp_to_ns, transform_stamped, transform_to_matrix  # noqa: E402
from selfi_ros_testing import LINE_SPEED, diag_values, node_and_client_factory, publish_image_pairs  # noqa: E402

T0 = 1_000_000_000_000
DT = 100_000_000
# base_link -> cam_optical: REP-103 optical axes (z forward = base x, x right = base -y, y down = base -z)
T_BASE_CAM = np.array([[0, 0, 1, 0.3], [-1, 0, 0, 0.0], [0, -1, 0, 0.2], [0, 0, 0, 1.0]])


@pytest.fixture
def ros(tmp_path):
    yield from node_and_client_factory(tmp_path)


def _parents(tf_msgs):
    """child -> set of parents over a list of TFMessage."""
    out = {}
    for m in tf_msgs:
        for t in m.transforms:
            out.setdefault(t.child_frame_id, set()).add(t.header.frame_id)
    return out


def test_late_tf_static_switches_cleanly_one_parent_per_frame(ros):
    node, c = ros(tf_static_timeout_s=0.3)
    c.record(tf2_msgs.TFMessage, "/tf")
    c.record(Odometry, "/selfi_node/odometry")
    c.record(DiagnosticArray, "/diagnostics")
    pi, pc = c.publisher(Image, "/camera/image_raw"), c.publisher(CameraInfo, "/camera/camera_info")
    assert c.wait_subscribers(pi, node=node) and c.wait_subscribers(pc, node=node), node.log()[-2000:]
    c.wait_for(lambda: False, 0.5)
    before = publish_image_pairs(c, pi, pc, [T0 + k * DT for k in range(5)])
    assert c.wait_for(lambda: sum(len(m.transforms) for m in c.get("/tf")) >= 3, 20, node), node.log()[-3000:]
    assert all(t.child_frame_id == "cam_optical" for m in c.get("/tf") for t in m.transforms)

    static = c.publisher(tf2_msgs.TFMessage, "/tf_static", c.latched)
    assert c.wait_subscribers(static, node=node)
    static.publish(tf2_msgs.TFMessage(transforms=[transform_stamped(T_BASE_CAM, "base_link", "cam_optical", 0)]))
    c.wait_for(lambda: False, 1.0)  # the node gets the latched message
    n_before_tf = len(c.get("/tf"))
    after = publish_image_pairs(c, pi, pc, [T0 + k * DT for k in range(5, 12)])

    def base_tfs():
        return [t for m in c.get("/tf") for t in m.transforms if t.child_frame_id == "base_link"]
    assert c.wait_for(lambda: len(base_tfs()) >= 5, 20, node), node.log()[-3000:]
    c.wait_for(lambda: stamp_to_ns(c.get("/selfi_node/odometry")[-1].header.stamp) >= after[-3], 5, node)

    msgs = c.get("/tf")
    # one parent per frame in /tf; the camera's only parent there is map, and only BEFORE the switch
    parents = _parents(msgs)
    assert parents == {"cam_optical": {"map"}, "base_link": {"map"}}, parents
    cam_stamps = [stamp_to_ns(t.header.stamp) for m in msgs for t in m.transforms if t.child_frame_id == "cam_optical"]
    base_stamps = [stamp_to_ns(t.header.stamp) for t in base_tfs()]
    assert max(cam_stamps) < min(base_stamps)  # no map -> camera once base_link is parented to map
    first_base = next(i for i, m in enumerate(msgs) if any(t.child_frame_id == "base_link" for t in m.transforms))
    assert not [t for m in msgs[first_base:] for t in m.transforms if t.child_frame_id == "cam_optical"]
    # the camera's stamps in /tf are all from before the static arrived (it has two parents at no time)
    assert set(cam_stamps) <= set(before) | set(after[:1]), (cam_stamps, n_before_tf)

    # ~/odometry's child is /tf's child at every stamp
    tf_child = {stamp_to_ns(t.header.stamp): t.child_frame_id for m in msgs for t in m.transforms}
    odo = {stamp_to_ns(o.header.stamp): o.child_frame_id for o in c.get("/selfi_node/odometry")}
    assert all(odo[s] == ch for s, ch in tf_child.items() if s in odo)
    assert {odo[s] for s in base_stamps if s in odo} == {"base_link"}

    # the map re-anchored to base_link at the first anchor: map -> base_link = T_bc @ T_cam0_cam @ inv(T_bc);
    # LineBackend's camera moves along its +x, i.e. the base's -y, level (z stays 0), no rotation
    first = min(cam_stamps)
    for t in base_tfs():
        T = transform_to_matrix(t)
        d = LINE_SPEED * (stamp_to_ns(t.header.stamp) - first) * 1e-9
        assert T[:3, 3] == pytest.approx([0.0, -d, 0.0], abs=1e-6)
        assert np.allclose(T[:3, :3], np.eye(3), atol=1e-6)

    # logged once (WARN), and /diagnostics warns about it
    log = node.log()
    assert log.count("late /tf_static") == 1, log[-3000:]
    assert c.wait_for(lambda: any(diag_values(a)["_level"] == 1 and "late /tf_static" in diag_values(a)["_message"]
                                  for a in c.get("/diagnostics")), 5, node)
    assert node.alive()

"""Publication rules of selfi_ros.ros.outputs: ~/path at a bounded rate, ~/map_cloud serialised only when the
map changed and someone subscribes, and the REP-105 TF modes (T_map_base computed once per pose)."""
import numpy as np
import pytest

pytest.importorskip("nav_msgs")

from selfi_ros.engine.types import PoseEstimate  # noqa: E402
from selfi_ros.ros import conversions as cv  # noqa: E402
from selfi_ros.ros.outputs import MapPublisher, PathPublisher, pose_transforms  # noqa: E402


class FakePub:
    def __init__(self, subscribers=1):
        self.subscribers, self.sent = subscribers, []

    def get_subscription_count(self):
        return self.subscribers

    def publish(self, msg):
        self.sent.append(msg)


def test_path_is_published_at_a_bounded_rate():
    t = [0.0]
    pub = FakePub()
    path = PathPublisher(pub, "map", max_length=5, min_period_s=1.0, clock=lambda: t[0])
    assert not path.maybe_publish()  # nothing to send
    for i in range(30):  # 30 poses at 10 Hz
        t[0] = i * 0.1
        path.add(cv.pose_stamped(np.eye(4), "map", i), i)
        path.maybe_publish()
    assert len(pub.sent) == 3  # t = 0, 1.0, 2.0 (not 30 messages)
    assert [len(m.poses) for m in pub.sent] == [1, 5, 5] and pub.sent[-1].header.frame_id == "map"
    t[0] = 2.95
    assert not path.maybe_publish()  # within the period
    t[0] = 3.0
    assert path.maybe_publish() and cv.stamp_to_ns(pub.sent[-1].header.stamp) == 29  # the newest pose
    t[0] = 10.0
    assert not path.maybe_publish()  # no new pose: nothing re-sent
    pub.subscribers = 0
    path.add(cv.pose_stamped(np.eye(4), "map", 40), 40)
    assert not path.maybe_publish()  # nobody listens: kept pending...
    pub.subscribers = 1
    assert path.maybe_publish() and len(pub.sent) == 5  # ...until someone does
    path.clear()
    assert len(path) == 0


def test_map_is_serialised_only_when_changed_and_subscribed():
    copies = []

    def source():
        copies.append(1)
        return np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8)

    serialised = []
    pub = FakePub(subscribers=0)
    m = MapPublisher(pub, source, lambda p, c, s: serialised.append(s) or ("cloud", s))
    m.mark_changed()
    assert not m.maybe_publish(5) and not copies and not serialised  # no subscriber: no copy, no serialisation
    pub.subscribers = 1
    assert m.maybe_publish(6) and serialised == [6] and len(copies) == 1  # a subscriber came: sent once
    for stamp in range(7, 12):  # the timer fires again and again: the map did not change
        assert not m.maybe_publish(stamp)
    assert serialised == [6] and len(copies) == 1 and m.serialised == 1
    m.mark_changed()  # a new window
    assert m.maybe_publish(12) and serialised == [6, 12]


def test_tf_modes_rep105():
    T_map_cam = np.eye(4)
    T_map_cam[:3, 3] = [1.0, 2.0, 3.0]
    T_base_cam = np.eye(4)
    T_base_cam[:3, 3] = [0.3, 0.0, 0.2]
    pose = PoseEstimate(stamp_ns=10, T_map_cam=T_map_cam, confidence=1.0)
    args = ("map", "cam", "base_link", "odom")
    child, T, tfs, why = pose_transforms(pose, "map_to_camera", None, *args, None)
    assert child == "cam" and np.allclose(T, T_map_cam) and tfs[0].child_frame_id == "cam" and why == ""
    child, T, tfs, why = pose_transforms(pose, "map_to_base_link", T_base_cam, *args, None)
    assert child == "base_link" and np.allclose(T @ T_base_cam, T_map_cam)
    assert np.allclose(cv.transform_to_matrix(tfs[0]), T) and tfs[0].child_frame_id == "base_link"
    assert pose_transforms(pose, "map_to_base_link", None, *args, None)[2:] == ([], "tf_no_static")
    assert pose_transforms(pose, "map_to_odom", T_base_cam, *args, None)[2:] == ([], "tf_no_odometry_at_stamp")
    T_odom_base = np.eye(4)
    T_odom_base[:3, 3] = [0.5, 0.0, 0.0]
    _, T, tfs, _ = pose_transforms(pose, "map_to_odom", T_base_cam, *args, T_odom_base)
    T_map_odom = cv.transform_to_matrix(tfs[0])
    assert tfs[0].child_frame_id == "odom" and np.allclose(T_map_odom @ T_odom_base @ T_base_cam, T_map_cam)
    assert pose_transforms(pose, "none", T_base_cam, *args, None)[2] == []


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, m):
        self.lines.append(("INFO", m))

    def warning(self, m):
        self.lines.append(("WARN", m))


def _static(*pairs):
    from types import SimpleNamespace

    from selfi_ros.ros.outputs import StaticTransforms

    st = StaticTransforms()
    st.add(SimpleNamespace(transforms=[cv.transform_stamped(T, parent, child, 0) for parent, child, T in pairs]))
    return st


def test_tf_plan_bare_camera_then_late_static_switches_once():
    from types import SimpleNamespace

    from selfi_ros.ros.outputs import SWITCH_WARN_S, StaticTransforms, TfPlan

    cfg = SimpleNamespace(publish_tf="auto", base_frame="base_link", odom_topic="", tf_static_timeout_s=2.0)
    st, t, slept, log = StaticTransforms(), [10.0], [], _Log()
    plan = TfPlan(cfg, st, lambda: False, clock=lambda: t[0], sleep=slept.append)
    mode, body, change = plan.resolve("cam", start_s=9.5, log=log)
    assert (mode, body, change) == ("map_to_camera", None, None) and slept == [1.5]  # waited until start + 2 s
    assert np.allclose(plan.T_map_engine, np.eye(4)) and plan.anchor_frame is None
    assert plan.resolve("cam", 9.5, log)[2] is None and slept == [1.5]  # resolved once
    T_bc = np.array([[0, 0, 1, 0.3], [-1, 0, 0, 0], [0, -1, 0, 0.2], [0, 0, 0, 1.0]])
    st.add(SimpleNamespace(transforms=[cv.transform_stamped(T_bc, "base_link", "cam", 0)]))  # late /tf_static
    mode, body, change = plan.resolve("cam", 9.5, log)
    assert mode == "map_to_base_link" and body[0] == "base_link" and np.allclose(change, T_bc)
    assert np.allclose(plan.T_map_engine, T_bc) and plan.switches == 1
    assert [lvl for lvl, _ in log.lines] == ["INFO", "WARN"] and "late /tf_static" in log.lines[1][1]
    assert plan.warnings(t[0] + 1) and not plan.warnings(t[0] + SWITCH_WARN_S + 1)
    assert plan.resolve("cam", 9.5, log)[2] is None and plan.switches == 1  # once


def test_tf_plan_body_is_base_or_the_camera_tree_root_and_anchors_the_map():
    from types import SimpleNamespace

    from selfi_ros.ros.outputs import TfPlan

    T_link_opt = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]])
    T_base_link = np.eye(4)
    T_base_link[:3, 3] = [0.1, 0.0, 0.5]
    cfg = SimpleNamespace(publish_tf="auto", base_frame="base_link", odom_topic="/odom", tf_static_timeout_s=0.0)
    driver_only = _static(("camera_link", "opt", T_link_opt))  # a camera driver alone: no base_link
    plan = TfPlan(cfg, driver_only, lambda: False, sleep=lambda s: None)
    mode, body, change = plan.resolve("opt", 0.0, _Log())
    assert mode == "map_to_base_link" and body[0] == "camera_link" and change is None
    assert np.allclose(plan.T_map_engine, T_link_opt)
    robot = _static(("base_link", "camera_link", T_base_link), ("camera_link", "opt", T_link_opt))
    plan = TfPlan(cfg, robot, lambda: True, sleep=lambda s: None)
    mode, body, _ = plan.resolve("opt", 0.0, _Log())
    assert mode == "map_to_odom" and body[0] == "base_link" and np.allclose(body[1], T_base_link @ T_link_opt)
    # the engine's camera pose re-expressed: at the engine origin, map -> base_link is the identity, z up
    T_map_cam = plan.T_map_engine @ np.eye(4)
    assert np.allclose(T_map_cam @ np.linalg.inv(body[1]), np.eye(4))
    assert np.allclose(T_map_cam[:3, :3] @ [0, -1, 0], [0, 0, 1])  # the camera's up (-y) is map +z


def test_map_to_camera_refuses_a_camera_that_has_a_parent():
    pose = PoseEstimate(stamp_ns=10, T_map_cam=np.eye(4), confidence=1.0)
    child, _, tfs, why = pose_transforms(pose, "map_to_camera", np.eye(4), "map", "cam", "base_link", "odom", None)
    assert child == "cam" and tfs == [] and why == "tf_camera_has_parent"


def test_transform_points_matches_the_homogeneous_product():
    from selfi_ros.ros.spatial import transform_points

    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(3)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.3, -1.1, 0.7]).as_matrix()
    T[:3, 3] = [1.0, -2.0, 0.5]
    p = rng.normal(size=(50, 3)).astype(np.float32)
    expected = (np.c_[p.astype(np.float64), np.ones(50)] @ T.T)[:, :3]
    out = transform_points(T, p)
    assert out.dtype == np.float32 and np.allclose(out, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_loop_correction_rebuilds_the_path_from_the_corrected_trajectory():
    """A loop closure moves earlier poses: ~/path is replaced by the corrected trajectory (re-expressed in the
    ROS map frame, child = body when known, the last max_length poses), the map cloud is marked changed."""
    import types

    from selfi_ros.ros.outputs import NodeOutputs

    t = [0.0]
    pub = FakePub()
    path = PathPublisher(pub, "map", max_length=3, min_period_s=0.0, clock=lambda: t[0])
    for i in range(5):
        path.add(cv.pose_stamped(np.eye(4), "map", i), i)
    marked = []
    A = np.eye(4)
    A[:3, 3] = [1.0, 2.0, 3.0]  # the ROS map anchor (engine frame -> map)
    T_body_cam = np.eye(4)
    T_body_cam[:3, 3] = [0.0, 0.0, 0.5]
    fake = types.SimpleNamespace(
        cfg=types.SimpleNamespace(base_frame="base_link", map_frame="map", odom_frame="odom"),
        plan=types.SimpleNamespace(body=lambda cam: ("base_link", T_body_cam), T_map_engine=A),
        path=path, map=types.SimpleNamespace(mark_changed=lambda: marked.append(1)))
    corrected = []
    for i in range(5):
        T = np.eye(4)
        T[:3, 3] = [0.1 * i, 0.0, 0.0]
        corrected.append(PoseEstimate(stamp_ns=4 - i, T_map_cam=T))  # out of order on purpose
    NodeOutputs.replace_path(fake, corrected, "map_to_base_link", "camera")
    assert marked == [1] and path.maybe_publish()
    msg = pub.sent[-1]
    assert [cv.stamp_to_ns(p.header.stamp) for p in msg.poses] == [2, 3, 4]  # newest 3, in stamp order
    for p in msg.poses:
        s = cv.stamp_to_ns(p.header.stamp)
        x = 0.1 * (4 - s)
        expect = A @ np.array([[1, 0, 0, x], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]) @ np.linalg.inv(T_body_cam)
        np.testing.assert_allclose(cv.pose_to_matrix(p.pose), expect, rtol=0, atol=1e-9)

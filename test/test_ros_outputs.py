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

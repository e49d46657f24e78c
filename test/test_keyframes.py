"""Keyframe selection (time, optical flow, odometry) and the bounded keyframe buffer."""
import numpy as np
import pytest

from selfi_ros.engine.keyframes import FLOW_WIDTH, Keyframe, KeyframeBuffer, KeyframeSelector, flow_image, median_flow
from selfi_ros.engine.types import Frame


def textured(seed=0, h=240, w=320):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    import cv2

    return cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST), (5, 5), 0)


def shifted(img, dx):
    return np.roll(img, dx, axis=1)


def frame(i, img, dt_ns=100_000_000):
    return Frame(stamp_ns=1_000_000_000 + i * dt_ns, image=img, index=i)


def test_median_flow_measures_a_known_shift():
    img = textured()
    g0 = flow_image(img)
    import cv2

    pts = cv2.goodFeaturesToTrack(g0, 200, 0.01, 5)
    # the image is 320 px wide, flow is measured at 256 px: a 10 px shift is 8 px there
    d, frac = median_flow(g0, pts, flow_image(shifted(img, 10)))
    assert d == pytest.approx(10 * FLOW_WIDTH / 320, abs=0.5)
    assert frac > 0.8


def test_selector_flow_time_and_min_interval():
    img = textured()
    sel = KeyframeSelector(min_interval_s=0.0, max_interval_s=10.0, min_flow_px=12.0, min_odom_dist_m=0.0)
    assert sel.check(frame(0, img)).reason == "first"
    d = sel.check(frame(1, shifted(img, 5)))  # 4 px at 256: not enough
    assert not d.is_keyframe and d.reason == "static"
    d = sel.check(frame(2, shifted(img, 20)))  # 16 px at 256
    assert d.is_keyframe and d.reason == "flow" and d.flow_px == pytest.approx(16, abs=1)
    # the reference moved to frame 2: the same image again is static
    assert not sel.check(frame(3, shifted(img, 20))).is_keyframe
    # time: force after max interval even without motion
    sel2 = KeyframeSelector(max_interval_s=0.25, min_flow_px=0.0)
    flags = [sel2.check(frame(i, img)).is_keyframe for i in range(8)]
    assert flags == [True, False, False, True, False, False, True, False]
    # min interval: a large motion right after a keyframe is ignored
    sel3 = KeyframeSelector(min_interval_s=0.15, min_flow_px=5.0)
    sel3.check(frame(0, img))
    assert sel3.check(frame(1, shifted(img, 40))).reason == "too_soon"
    assert sel3.check(frame(2, shifted(img, 40))).is_keyframe


def test_selector_odometry_distance():
    img = textured()
    sel = KeyframeSelector(max_interval_s=10.0, min_flow_px=0.0, min_odom_dist_m=0.1)
    sel.check(frame(0, img), np.zeros(3))
    assert not sel.check(frame(1, img), np.array([0.05, 0, 0])).is_keyframe
    d = sel.check(frame(2, img), np.array([0.08, 0.07, 0]))
    assert d.is_keyframe and d.reason == "odometry" and d.odom_dist_m == pytest.approx(np.hypot(0.08, 0.07))


def test_selector_tracking_loss_makes_a_keyframe():
    sel = KeyframeSelector(max_interval_s=10.0, min_flow_px=1000.0)
    sel.check(frame(0, textured(0)))
    assert sel.check(frame(1, textured(99))).reason == "tracking"  # unrelated image


def test_buffer_is_bounded_and_counts_drops():
    buf = KeyframeBuffer(3)
    img = np.zeros((4, 4, 3), np.uint8)
    for i in range(5):
        buf.append(Keyframe(frame(i, img)))
    assert len(buf) == 3 and buf.dropped == 2
    assert [k.frame.index for k in buf] == [2, 3, 4]
    assert [k.frame.index for k in buf.since(frame(2, img).stamp_ns)] == [3, 4]
    assert buf.nbytes == 3 * img.nbytes
    with pytest.raises(ValueError):
        KeyframeBuffer(0)

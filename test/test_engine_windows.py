"""Window policy: new-window rule, anchor choice (overlap + coverage), anchor coverage; windows in the engine."""
import numpy as np
import pytest

from selfi_ros.backends.oracle import OracleBackend, make_box_room_sequence
from selfi_ros.engine.engine import Engine, EngineConfig
from selfi_ros.engine.keyframes import Keyframe
from selfi_ros.engine.types import Frame
from selfi_ros.engine.windows import WindowPolicy, anchor_coverage, select_for_coverage

IMG = np.zeros((4, 4, 3), np.uint8)


def kf(i, centre=None, yaw=0.0):
    k = Keyframe(Frame(stamp_ns=i * 1000 + 1, image=IMG, index=i))
    if centre is not None:
        T = np.eye(4)
        c, s = np.cos(yaw), np.sin(yaw)
        T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        T[:3, 3] = centre
        k.T_map_cam = T
    return k


def test_trigger_rules():
    p = WindowPolicy(window_size=6, overlap=2, max_keyframes=10, min_confidence=0.5, min_overlap=0.4)
    assert p.min_new_keyframes == 2
    assert p.trigger(10, 0.9, 0.9).reason == "max_keyframes"
    assert not p.trigger(5, 0.9, 0.9).new_window
    assert p.trigger(5, 0.2, 0.9).reason == "low_confidence"
    assert p.trigger(5, float("nan"), 0.9).reason == "low_confidence"  # failed localization
    assert p.trigger(5, 0.9, 0.1).reason == "low_overlap"
    assert not p.trigger(1, 0.1, 0.1).new_window  # too few new keyframes to form a window yet
    with pytest.raises(ValueError):
        WindowPolicy(window_size=4, overlap=4)


def test_select_anchors_overlap_and_coverage():
    p = WindowPolicy(window_size=5, overlap=2)
    prev = [kf(i, [0.1 * i, 0, 0]) for i in range(6)]
    # candidates: a tight cluster of 6 near x=1 and two far ones; coverage must pick the far ones
    cands = [kf(10 + i, [1.0 + 0.001 * i, 0, 0]) for i in range(6)] + [kf(20, [3, 0, 0]), kf(21, [1, 0, 2])]
    anchors = p.select_anchors(prev, cands)
    idx = [k.frame.index for k in anchors]
    assert len(anchors) == 5
    assert idx == sorted(idx)  # time order
    assert sum(i < 10 for i in idx) == 2  # exactly `overlap` previous anchors
    assert 5 in idx and 4 in idx  # the most recent previous anchors are shared (content shared with the new)
    assert 21 in idx and 20 in idx  # most recent candidate kept, far one chosen
    # uniform choice would have taken mostly the cluster
    new = [i for i in idx if i >= 10]
    assert sum(10 <= i < 16 for i in new) == 1
    # without poses: uniform in time, most recent kept
    nop = [kf(i) for i in range(10)]
    assert [k.frame.index for k in select_for_coverage(nop, 3)] == [0, 4, 9]
    assert [k.frame.index for k in select_for_coverage(nop, 2)] == [0, 9]
    # fewer candidates than free slots: a smaller window, not stretched back with older anchors
    a2 = p.select_anchors(prev, cands[:1])
    assert [k.frame.index for k in a2] == [4, 5, 10]


def test_anchor_coverage_counts_grid_cells():
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    T = np.eye(4)
    # points filling the whole image at z=2
    v, u = np.mgrid[0:48:2, 0:64:2]
    pts = np.stack([(u - 32) / 50 * 2, (v - 24) / 50 * 2, np.full(u.shape, 2.0)], -1).reshape(-1, 3)
    assert anchor_coverage(pts, T, K, 48, 64) == pytest.approx(1.0)
    left = pts[pts[:, 0] < 0]  # left half of the image
    assert anchor_coverage(left, T, K, 48, 64) == pytest.approx(0.5)
    Tb = np.eye(4)
    Tb[:3, :3] = np.diag([-1, 1, -1])  # looking backwards: nothing visible
    assert anchor_coverage(pts, Tb, K, 48, 64) == 0.0


class Recorder(OracleBackend):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.windows = []

    def reconstruct_window(self, window_id, anchors):
        self.windows.append([f.index for f in anchors])
        return super().reconstruct_window(window_id, anchors)


def test_engine_windows_share_overlap_anchors_and_respect_max_keyframes():
    frames, scene = make_box_room_sequence(60)
    be = Recorder(scene, scale_range=(0.5, 2.0), seed=1)
    cfg = EngineConfig(keyframe_min_flow_px=0, keyframe_max_interval_s=0.25, window_size=5, window_overlap=2,
                       window_max_keyframes=4, window_min_anchor_coverage=0.0, voxel_size=0.05)
    eng = Engine(be, cfg)
    for f in frames:
        eng.process_frame(f)
    W = be.windows
    assert len(W) >= 4
    assert W[0] == [0, 3, 6, 9, 12]  # the first window = the first 5 keyframes (every 3rd frame)
    for a, b in zip(W, W[1:]):
        assert len(b) == 5 and b == sorted(b)
        shared = set(a) & set(b)
        assert len(shared) == 2  # window_overlap
        assert max(a) in b  # the newest anchor of a window is always shared
        assert shared == set(sorted(a)[-2:])  # the most recent anchors of the previous window
        new = [i for i in b if i not in a]
        assert len(new) == 3
    assert eng.status().windows == len(W)
    with pytest.raises(ValueError, match="keyframe_buffer_size"):
        Engine(be, EngineConfig(window_size=8, keyframe_buffer_size=4))


def test_policy_defaults_are_the_engine_config():
    """One source of defaults: WindowPolicy() and an Engine's policy take EngineConfig's values."""
    c = EngineConfig()
    p = WindowPolicy()
    assert (p.window_size, p.overlap, p.max_keyframes, p.min_confidence, p.min_overlap) == (
        c.window_size, c.window_overlap, c.window_max_keyframes, c.min_localization_confidence,
        c.window_min_anchor_coverage)
    cfg = EngineConfig(window_size=7, window_overlap=3, window_max_keyframes=9, min_localization_confidence=0.6,
                       window_min_anchor_coverage=0.2)
    frames, scene = make_box_room_sequence(2)
    q = Engine(OracleBackend(scene), cfg).policy
    assert (q.window_size, q.overlap, q.max_keyframes, q.min_confidence, q.min_overlap) == (7, 3, 9, 0.6, 0.2)


@pytest.mark.parametrize("kw", [{}, dict(window_size=4, overlap=1, max_keyframes=2, min_new_keyframes=4),
                                dict(min_new_keyframes=5)])
def test_may_trigger_is_trigger_for_the_worst_localization(kw):
    """may_trigger(n) is False exactly when no localization (NaN confidence = a failed one, the worst) can
    make trigger(n, ...) start a window: the engine defers such keyframes into the batch's localize call."""
    p = WindowPolicy(**kw)
    seen = set()
    for n in range(0, 3 * p.max_keyframes):
        worst = p.trigger(n, float("nan"), 0.0).new_window
        assert p.may_trigger(n) == worst, (n, kw)
        if not worst:
            assert not p.trigger(n, 1.0, 1.0).new_window and not p.trigger(n, 0.0, 0.0).new_window
        seen.add(worst)
    assert seen == {False, True}

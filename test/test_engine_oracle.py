"""The oracle backend (ground truth + noise) and the engine's stream behaviour: per-frame stamps, held frames,
backend failures counted without crashing, bad input rejected."""
import numpy as np
import pytest

from selfi_ros.engine.backend import Backend, BackendError
from selfi_ros.backends import make_backend
from selfi_ros.backends.oracle import OracleBackend, make_box_room_sequence, render_box_room
from selfi_ros.engine.engine import Engine, EngineConfig
from selfi_ros.engine.types import PoseKind
from selfi_ros.geometry.camera import project
from selfi_ros.geometry.se3 import invert_transform

CFG = dict(keyframe_min_flow_px=0, keyframe_max_interval_s=0.25, window_size=5, window_overlap=2,
           window_max_keyframes=4, voxel_size=0.05)


@pytest.fixture(scope="module")
def seq():
    return make_box_room_sequence(60)


def test_render_box_room_depth_hits_the_walls():
    K = np.array([[40.0, 0, 15.5], [0, 40.0, 11.5], [0, 0, 1]])
    T = np.eye(4)  # at the centre looking along +z: the wall z = 3 is 3 m ahead, fronto-parallel
    d, img = render_box_room(T, K, 24, 32, half_extent=(3, 1.5, 3))
    assert np.allclose(d[10:14, 14:18], 3.0)
    assert d.min() > 0 and img.dtype == np.uint8 and img.std() > 20  # textured


def test_oracle_window_geometry_is_consistent(seq):
    frames, scene = seq
    be = make_backend("oracle", scene=scene, scale_range=(2.0, 2.0), downsample=2)
    assert isinstance(be, Backend)
    with pytest.raises(BackendError):
        be.localize(frames[:1])  # no window yet
    a = [frames[i] for i in (0, 5, 10)]
    w = be.reconstruct_window(0, a)
    np.testing.assert_allclose(w.extrinsics[0], np.eye(4)[:3], atol=1e-12)  # first anchor = window frame
    # the window is the world seen from anchor 0, times 2
    T01 = invert_transform(scene.T_world_cam[0]) @ scene.T_world_cam[5]
    np.testing.assert_allclose(invert_transform(w.extrinsics[1])[:3, 3], 2 * T01[:3, 3], atol=1e-9)
    np.testing.assert_allclose(w.depth[1], 2 * scene.depth[5][::2, ::2], rtol=1e-6)
    # points of anchor 2 project to their own pixels with the window's extrinsics/intrinsics
    P = w.points[2].reshape(-1, 3).astype(np.float64)
    E = w.extrinsics[2]
    uv, z = project(P @ E[:3, :3].T + E[:3, 3], w.intrinsics[2])
    v, u = np.mgrid[0:w.image_size_hw[0], 0:w.image_size_hw[1]]
    np.testing.assert_allclose(uv, np.stack([u, v], -1).reshape(-1, 2), atol=1e-3)
    loc = be.localize([frames[7]])[0]
    T07 = invert_transform(scene.T_world_cam[0]) @ scene.T_world_cam[7]
    np.testing.assert_allclose(invert_transform(loc.extrinsics)[:3, 3], 2 * T07[:3, 3], atol=1e-9)
    with pytest.raises(BackendError):
        OracleBackend(scene, fail_windows=[3]).reconstruct_window(3, a)


def test_poses_per_frame_with_own_stamps_and_held_frames(seq):
    frames, scene = seq
    eng = Engine(OracleBackend(scene, downsample=2), EngineConfig(**CFG))
    outs = [eng.process_frame(f) for f in frames]
    first = next(i for i, o in enumerate(outs) if o.window is not None)
    assert first == 12  # 5 keyframes every 3rd frame: 0, 3, 6, 9, 12
    assert all(not o.poses for o in outs[:first])
    # the first window emits a pose for every earlier frame (anchors + held frames), each with its stamp
    got = outs[first].poses
    assert [p.stamp_ns for p in got] == [f.stamp_ns for f in frames[:first + 1]]
    assert [p.kind for p in got if p.frame_index % 3 == 0] == [PoseKind.ANCHOR] * 5
    for p in got:  # K in input-image pixels (anchors: the window's intrinsics_image; queries: the frame's)
        np.testing.assert_allclose(p.K, scene.K, atol=1e-9)
    assert all(p.kind == PoseKind.QUERY for p in got if p.frame_index % 3)
    # afterwards: exactly one pose per frame, stamped with that frame's stamp, returned in the same call
    for f, o in zip(frames[first + 1:], outs[first + 1:]):
        assert [p.stamp_ns for p in o.poses] == [f.stamp_ns]
        assert o.poses[0].frame_index == f.index and o.poses[0].width == 64
    st = eng.status()
    assert st.poses == len(frames) and st.frames_in == 60 and st.frames_rejected == 0
    assert st.state in ("localizing", "mapping") and st.keyframes == 20


def test_status_poses_counts_distinct_frames_when_anchors_are_re_posed(seq):
    """Overlapping windows pose their shared anchors again; ``status().poses`` counts each frame once."""
    frames, scene = seq
    eng = Engine(OracleBackend(scene, downsample=2), EngineConfig(**CFG))
    stored = []
    add = eng.traj.add
    eng.traj.add = lambda p: (stored.append(int(p.stamp_ns)), add(p))[1]
    for f in frames:
        eng.process_frame(f)
    st = eng.status()
    distinct = {p.stamp_ns for p in eng.trajectory()}
    assert st.windows >= 3 and len(stored) > len(set(stored))  # anchors were re-posed by later windows
    assert set(stored) == distinct and len(distinct) == len(frames)
    assert st.poses == len(distinct) == 60


def test_backend_errors_are_counted_and_the_engine_keeps_going(seq):
    frames, scene = seq
    be = OracleBackend(scene, downsample=2, fail_windows=[0, 2], fail_frames=[20, 21, 22])
    eng = Engine(be, EngineConfig(**CFG))
    outs = [eng.process_frame(f) for f in frames]
    st = eng.status()
    assert st.window_failures == 2 and st.backend_errors == 2
    assert st.localization_failures == 3
    assert st.windows >= 3  # attempt 0 failed, retried (id 1) after dropping its oldest keyframe; id 2 failed
    assert "reconstruct_window 2" in st.last_error or st.last_error.startswith("localize")
    # every frame after the first window got a pose except the three that failed
    first = next(i for i, o in enumerate(outs) if o.window is not None)
    missing = [f.index for f, o in zip(frames[first + 1:], outs[first + 1:]) if not o.poses]
    assert missing == [20, 21, 22]
    # the failed first window: no window at keyframe 12; it was rebuilt at keyframe 15 without frame 0
    assert first == 15 and 0 not in [p.frame_index for p in outs[first].poses if p.kind == PoseKind.ANCHOR]
    # and the trajectory is still exact (no noise): the previous window stayed valid across the failure
    traj = eng.trajectory()
    from selfi_ros.geometry.sim3 import umeyama

    est = np.array([p.T_map_cam[:3, 3] for p in traj])
    gt = np.array([scene.T_world_cam[p.frame_index][:3, 3] for p in traj])
    S = umeyama(est, gt)
    assert np.sqrt(np.mean(np.sum((S.apply(est) - gt) ** 2, 1))) < 1e-6


class Exploding(OracleBackend):
    def localize(self, frames):
        raise BackendError("boom")

    def localize_in(self, memory, frames):  # no rescue by relocalization / revisits either
        raise BackendError("boom")


def test_bad_input_is_rejected_and_localize_errors_counted(seq):
    frames, scene = seq
    eng = Engine(Exploding(scene, downsample=2), EngineConfig(**CFG))
    outs = [eng.process_frame(f) for f in frames[:20]]
    st = eng.status()
    assert st.backend_errors >= 7 and st.localization_failures >= 7
    # nothing localizes; failed keyframes trigger new windows (chained by the shared anchors alone),
    # so only keyframes (as anchors) get poses from then on
    assert st.windows >= 2
    assert all(o.is_keyframe for o in outs[13:] if o.poses)
    assert all(p.kind == PoseKind.ANCHOR for o in outs[13:] for p in o.poses)
    o = eng.process_frame(frames[5])  # stamp going backwards
    assert "not after" in o.rejected and eng.status().frames_rejected == 1
    o = eng.process_frame("not a frame")
    assert o.rejected and eng.status().frames_rejected == 2
    eng.reset()
    assert eng.status().frames_in == 0 and eng.trajectory() == [] and len(eng.map_cloud()[0]) == 0
    assert not eng.process_frame(frames[0]).rejected


def test_non_keyframes_not_localized_when_disabled(seq):
    frames, scene = seq
    eng = Engine(OracleBackend(scene, downsample=2), EngineConfig(**{**CFG, "localize_non_keyframes": False}))
    outs = [eng.process_frame(f) for f in frames]
    posed = sorted(p.frame_index for o in outs for p in o.poses)
    assert posed == list(range(0, 60, 3))


class Malformed(OracleBackend):
    def reconstruct_window(self, window_id, anchors):
        w = super().reconstruct_window(window_id, anchors)
        if window_id == 0:
            w.colors = w.colors[:, :-1]  # wrong shape
        return w


def test_malformed_window_is_a_counted_failure_not_a_crash(seq):
    frames, scene = seq
    eng = Engine(Malformed(scene, downsample=2), EngineConfig(**CFG))
    outs = [eng.process_frame(f) for f in frames[:20]]
    st = eng.status()
    assert "colors must be" in st.last_error
    assert st.window_failures == 1 and st.windows >= 1 and st.frames_rejected == 0
    assert sum(o.window is not None for o in outs) == st.windows


def test_low_anchor_coverage_starts_new_windows(seq):
    frames, scene = seq
    counts = {}
    for cov in (0.0, 0.5):
        eng = Engine(OracleBackend(scene, downsample=2),
                     EngineConfig(**{**CFG, "window_max_keyframes": 100, "window_min_anchor_coverage": cov}))
        for f in frames:
            eng.process_frame(f)
        counts[cov] = eng.status().windows
    assert counts[0.0] == 1  # the camera turns 270 deg: only coverage can ask for new windows
    assert counts[0.5] >= 4


def test_hold_list_is_bounded_and_drops_are_counted(seq):
    frames, scene = seq
    eng = Engine(OracleBackend(scene, downsample=2), EngineConfig(**{**CFG, "max_held_frames": 3}))
    outs = [eng.process_frame(f) for f in frames[:13]]
    st = eng.status()
    assert st.held_dropped == 8 - 3  # 8 non-keyframes before the first window, 3 kept
    assert sorted(p.frame_index for p in outs[12].poses) == [0, 3, 6, 8, 9, 10, 11, 12]  # held: 8, 10, 11


class Crashing(OracleBackend):
    def reconstruct_window(self, window_id, anchors):
        if window_id == 1:
            raise MemoryError("simulated out of memory")
        return super().reconstruct_window(window_id, anchors)


def test_unexpected_backend_exception_is_counted(seq):
    frames, scene = seq
    eng = Engine(Crashing(scene, downsample=2), EngineConfig(**CFG))
    outs = [eng.process_frame(f) for f in frames]
    st = eng.status()
    assert st.window_failures == 1 and st.backend_errors == 1 and st.frames_rejected == 0
    assert st.windows >= 3 and all(o.poses for o in outs[13:])


class CallSizes(OracleBackend):
    """Records the number of frames of every localize call."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.sizes = []

    def localize(self, frames):
        self.sizes.append(len(frames))
        return super().localize(frames)


def test_process_frames_localizes_a_batch_in_one_call(seq):
    """A batch of N non-keyframes is one localize call of N frames, with the poses of N single calls; a
    mixed batch gives the same outputs as frame-by-frame calls with fewer localize calls."""
    frames, scene = seq
    cfg = EngineConfig(**{**CFG, "keyframe_max_interval_s": 1.0, "window_size": 3, "window_overlap": 1,
                          "skip_stale_non_keyframes": False})  # localize every frame, stale or not
    single, batched = (CallSizes(scene, downsample=2, seed=4, rot_noise_deg=0.2, trans_noise_m=0.005)
                       for _ in range(2))  # two identical backends
    e1, e2 = Engine(single, cfg), Engine(batched, cfg)
    head = [e1.process_frame(f) for f in frames[:21]]
    assert head[20].window is not None and head[20].is_keyframe  # window 0 at keyframe 20 (frames 0, 10, 20)
    assert [len(o.poses) for o in e2.process_frames(frames[:21])] == [len(o.poses) for o in head]
    batch = frames[21:30]  # non-keyframes (next keyframe at frame 30)
    calls = dict(batched.calls)
    outs2 = e2.process_frames(batch)
    assert batched.calls["localize"] - calls["localize"] == 1 and batched.sizes[-1] == len(batch)
    calls = dict(single.calls)
    outs1 = [e1.process_frame(f) for f in batch]
    assert single.calls["localize"] - calls["localize"] == len(batch)
    assert len(outs2) == len(batch) and not any(o.is_keyframe or o.rejected for o in outs2)
    for f, o1, o2 in zip(batch, outs1, outs2):
        assert [p.stamp_ns for p in o2.poses] == [f.stamp_ns]  # each pose keeps its own image stamp
        np.testing.assert_allclose(o2.poses[0].T_map_cam, o1.poses[0].T_map_cam, rtol=1e-9, atol=1e-12)
    # a mixed batch (keyframes, window events, a rejected frame): the same outputs as single calls
    rest = frames[30:]
    n1 = single.calls["localize"]
    outs1 = [e1.process_frame(f) for f in rest]
    n2 = batched.calls["localize"]
    outs2 = e2.process_frames(rest[:10] + [rest[3]] + rest[10:])
    del outs2[10]
    assert batched.calls["localize"] - n2 < single.calls["localize"] - n1
    assert e2.status().frames_rejected == 1 and e2.status().windows == e1.status().windows >= 2
    for o1, o2 in zip(outs1, outs2):
        assert (o1.is_keyframe, o1.window is None) == (o2.is_keyframe, o2.window is None)
        assert [p.stamp_ns for p in o1.poses] == [p.stamp_ns for p in o2.poses]
        for p1, p2 in zip(o1.poses, o2.poses):
            np.testing.assert_allclose(p2.T_map_cam, p1.T_map_cam, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.stack([p.T_map_cam for p in e2.trajectory()]),
                               np.stack([p.T_map_cam for p in e1.trajectory()]), rtol=1e-9, atol=1e-12)


def test_process_frames_skips_stale_non_keyframes_like_single_calls_under_load(seq):
    """With skip_stale_non_keyframes (default) a batch behaves as frame-by-frame calls with under_load set
    while newer frames wait: older non-keyframes skipped (counted), keyframes processed, the newest localized."""
    frames, scene = seq
    cfg = EngineConfig(**{**CFG, "keyframe_max_interval_s": 1.0, "window_size": 3, "window_overlap": 1})
    single, batched = CallSizes(scene, downsample=2, seed=4), CallSizes(scene, downsample=2, seed=4)
    e1, e2 = Engine(single, cfg), Engine(batched, cfg)
    for f in frames[:21]:
        e1.process_frame(f)
    e2.process_frames(frames[:21])
    batch = frames[21:35]  # non-keyframes 21..29, keyframe 30, non-keyframes 31..34
    outs1 = [e1.process_frame(f, under_load=k < len(batch) - 1) for k, f in enumerate(batch)]
    skipped = e2.status().frames_skipped
    outs2 = e2.process_frames(batch)
    assert e2.status().frames_skipped - skipped == len(batch) - 2 == sum(not o.is_keyframe and not o.poses
                                                                           for o in outs2)
    assert outs2[9].is_keyframe and outs2[9].poses and outs2[-1].poses
    for o1, o2 in zip(outs1, outs2):
        assert o1.is_keyframe == o2.is_keyframe
        assert [p.stamp_ns for p in o1.poses] == [p.stamp_ns for p in o2.poses]
        for p1, p2 in zip(o1.poses, o2.poses):
            np.testing.assert_allclose(p2.T_map_cam, p1.T_map_cam, rtol=1e-9, atol=1e-12)


def test_memory_backend_status_and_idle(seq):
    frames, scene = seq

    class Idle(OracleBackend):
        idle = []

        def set_idle(self, idle):
            self.idle.append(idle)

    be = Idle(scene, downsample=2)
    eng = Engine(be, EngineConfig(**CFG))
    eng.process_frames(frames[:20])
    assert eng.memory_bytes() >= eng.map.nbytes + eng.keyframes.nbytes > 0
    assert eng.backend_status() == be.status()
    eng.set_idle(True)
    eng.set_idle(False)
    assert be.idle == [True, False]
    assert eng.process_frames([]) == []

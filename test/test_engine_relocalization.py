"""Relocalization when lost (same map frame, no new segment) and the merge of a map segment back into the map
by a later loop closure; oracle backend, two laps of the box room keyed by stamp so that failures can be
injected in the second lap only."""
import numpy as np

from selfi_ros.backends.oracle import OracleBackend, OracleScene, make_box_room_sequence
from selfi_ros.engine.engine import Engine, EngineConfig
from selfi_ros.engine.types import Frame

W, H = 64, 48
LAP_NS = 100_000_000_000
CFG = dict(keyframe_min_flow_px=5.0, keyframe_max_interval_s=1.0, window_size=8, window_overlap=2,
           window_max_keyframes=6, voxel_size=0.02)


def two_laps():
    frames, sc = make_box_room_sequence(60, width=W, height=H)
    laps = [[Frame(f.stamp_ns + k * LAP_NS, f.image, f.K, f.frame_id, f.index, f.source) for f in frames]
            for k in range(2)]
    allf = laps[0] + laps[1]
    scene = OracleScene(depth={f.stamp_ns: sc.depth[f.index] for f in allf},
                        T_world_cam={f.stamp_ns: sc.T_world_cam[f.index] for f in allf}, K=sc.K)
    return laps, scene


def by_index(eng, lap_frames):
    stamps = {f.stamp_ns: f.index for f in lap_frames}
    return {stamps[p.stamp_ns]: p.T_map_cam for p in eng.trajectory() if p.stamp_ns in stamps}


def extent(poses):
    c = np.array([T[:3, 3] for T in poses.values()])
    return float(np.sqrt(((c - c.mean(0)) ** 2).sum(1).mean()))


def test_relocalization_after_a_forced_loss_continues_in_the_same_map_frame():
    laps, scene = two_laps()
    be = OracleBackend(scene, key="stamp", rot_noise_deg=0.1, trans_noise_m=0.002, scale_range=(0.5, 2.0),
                       downsample=2, seed=1)
    eng = Engine(be, EngineConfig(**CFG, revisit_windows=False))
    for f in laps[0]:
        eng.process_frame(f)
    lap0 = by_index(eng, laps[0])
    nw = eng._next_window_id
    # lap 2: the current window localizes nothing and no window can be made: only relocalization can help
    be.fail_frames = {f.stamp_ns for f in laps[1]}
    be.fail_windows = set(range(nw, nw + 1000))
    states = []
    for f in laps[1]:
        eng.process_frame(f)
        states.append(eng.status().state)
    st = eng.status()
    assert st.relocalizations >= 1 and st.map_segments == 0 and st.windows == len(eng.db)
    assert states[-1] != "lost"  # found again (relocalization runs when the lost threshold is reached)
    lap1 = by_index(eng, laps[1])
    assert len(lap1) >= 30  # lost frames (10 before each relocalization; revisits are off here) have no pose
    # the same place has the same pose as in lap 1: the map frame did not change
    err = [np.linalg.norm(lap1[i][:3, 3] - lap0[i][:3, 3]) for i in lap1 if i in lap0]
    assert np.median(err) < 0.05 * extent(lap0), (np.median(err), extent(lap0))


def test_relocalization_fails_then_a_segment_is_merged_back_by_a_loop():
    laps, scene = two_laps()
    be = OracleBackend(scene, key="stamp", rot_noise_deg=0.1, trans_noise_m=0.002, scale_range=(0.5, 2.0),
                       downsample=2, seed=2)
    eng = Engine(be, EngineConfig(**CFG))
    for f in laps[0]:
        eng.process_frame(f)
    lap0 = by_index(eng, laps[0])
    nw = eng._next_window_id
    early = {f.stamp_ns for f in laps[1][:30]}
    be.fail_frames = early  # lost at the start of lap 2 ...
    be.fail_relocalize = early  # ... relocalization fails too ...
    be.fail_windows = set(range(nw, nw + 8))  # ... and so do the first window attempts: a new map segment
    segments = []
    for f in laps[1]:
        eng.process_frame(f)
        segments.append(eng.status().map_segments)
    st = eng.status()
    assert st.relocalization_failures >= 1
    assert max(segments) == 1  # a segment was started ...
    assert segments[-1] == 0 and st.loop_closures >= 1  # ... and merged back by a loop closure
    lap1 = by_index(eng, laps[1])
    # after the merge, lap 2's poses (segment windows included) are in lap 1's map frame
    late = [i for i in lap1 if i >= 30 and i in lap0]
    assert len(late) >= 20
    err = [np.linalg.norm(lap1[i][:3, 3] - lap0[i][:3, 3]) for i in late]
    assert np.median(err) < 0.05 * extent(lap0), (np.median(err), extent(lap0))


def test_restart_stream_keeps_the_map_and_relocalizes_the_replayed_stream():
    """A time jump back with time_jump_action:=relocalize (Engine.restart_stream): the same bag played again,
    same stamps. The map is kept; the first frames of the replay relocalize against the stored windows and
    the camera goes on in the same map frame - no new segment, poses where the first pass put them."""
    laps, scene = two_laps()
    be = OracleBackend(scene, key="stamp", rot_noise_deg=0.1, trans_noise_m=0.002, scale_range=(0.5, 2.0),
                       downsample=2, seed=3)
    eng = Engine(be, EngineConfig(**CFG))
    for f in laps[0]:
        eng.process_frame(f)
    first = by_index(eng, laps[0])
    before = eng.status()
    windows_before, points_before = len(eng.db), len(eng.map)
    assert eng.restart_stream() is True
    st = eng.status()
    assert st.state == "lost" and st.frames_in == before.frames_in  # counters kept
    assert len(eng.db) == windows_before and len(eng.map) == points_before  # the map is kept
    replay = {}
    for f in laps[0]:  # the same stamps again (a looped bag)
        for p in eng.process_frame(f).poses:
            replay[f.index] = p.T_map_cam
    st = eng.status()
    assert st.relocalizations >= 1 and st.map_segments == 0, st
    assert 0 in replay or 1 in replay  # relocalized at once, not after a window of its own
    assert len(replay) >= 50
    err = [np.linalg.norm(replay[i][:3, 3] - first[i][:3, 3]) for i in replay if i in first]
    assert np.median(err) < 0.05 * extent(first), (np.median(err), extent(first))


def test_restart_stream_without_a_map_is_a_reset():
    laps, scene = two_laps()
    eng = Engine(OracleBackend(scene, key="stamp"), EngineConfig(**CFG))
    for f in laps[0][:3]:  # no window yet
        eng.process_frame(f)
    assert eng.restart_stream() is False
    assert eng.status().frames_in == 0 and len(eng.keyframes) == 0

"""Voxel map (one point per voxel, capped), trajectory store, output files, and bounded memory of the engine."""
import json
import os

import numpy as np
import pytest

from selfi_ros.engine import io as eio
from selfi_ros.backends.oracle import OracleBackend, make_box_room_sequence
from selfi_ros.engine.engine import Engine, EngineConfig
from selfi_ros.engine.map import PointMap, TrajectoryStore, voxel_downsample, voxel_keys
from selfi_ros.engine.types import Frame, PoseEstimate, PoseKind
from selfi_ros.geometry.se3 import invert_transform


def one_per_voxel(points, v):
    k = voxel_keys(points, v)
    return len(np.unique(k, axis=0)) == len(k)


def test_voxel_downsample_means_per_voxel():
    rng = np.random.default_rng(0)
    P = rng.uniform(-1, 1, (5000, 3))
    C = rng.integers(0, 256, (5000, 3)).astype(np.uint8)
    Q, QC, n = voxel_downsample(P, C, 0.25)
    assert one_per_voxel(Q, 0.25) and n.sum() == 5000 and len(Q) <= 8 ** 3
    # independent computation for one voxel
    k = np.floor(P / 0.25).astype(int)
    sel = np.all(k == [0, 0, 0], axis=1)
    j = np.nonzero(np.all(voxel_keys(Q, 0.25) == [0, 0, 0], axis=1))[0][0]
    np.testing.assert_allclose(Q[j], P[sel].mean(0), atol=1e-12)
    np.testing.assert_allclose(QC[j], np.round(C[sel].mean(0)), atol=0.51)
    assert n[j] == sel.sum()


def test_point_map_merges_and_is_capped():
    rng = np.random.default_rng(1)
    m = PointMap(voxel_size=0.1, max_points=500)
    P = rng.uniform(0, 1, (3000, 3))
    m.add(P)
    n1 = len(m)
    assert n1 <= 500 and one_per_voxel(m.points, m.voxel_size)
    assert m.voxel_size > 0.1 and m.coarsenings >= 1  # 1000 voxels at 0.1 did not fit
    m.add(rng.uniform(5, 6, (3000, 3)))  # a new region: the map stays within the cap, coarser
    assert len(m) <= 500 and one_per_voxel(m.points, m.voxel_size)
    # below the cap: the same points again add nothing; a shifted copy adds voxels
    m2 = PointMap(voxel_size=0.1, max_points=100_000)
    m2.add(P)
    n2 = len(m2)
    assert n2 == len(np.unique(np.floor(P / 0.1), axis=0))
    m2.add(P)
    assert len(m2) == n2 and m2.counts.sum() == 6000
    m2.add(P + 2.0)
    assert len(m2) == 2 * n2
    m.add(np.array([[np.nan, 0, 0]]))  # non-finite points are dropped
    assert np.isfinite(m.points).all()
    with pytest.raises(ValueError):
        PointMap(voxel_size=0)


def pe(stamp, x=0.0, kind=PoseKind.QUERY):
    T = np.eye(4)
    T[0, 3] = x
    return PoseEstimate(stamp, T, kind=kind)


def test_trajectory_store_bounded_and_replaces():
    t = TrajectoryStore(capacity=3)
    for i in range(5):
        t.add(pe(i, x=i))
    assert [p.stamp_ns for p in t.poses()] == [2, 3, 4] and t.dropped == 2
    t.add(pe(3, x=33.0, kind=PoseKind.ANCHOR))
    assert t.get(3).T_map_cam[0, 3] == 33.0 and len(t) == 3


def test_io_roundtrips(tmp_path):
    rng = np.random.default_rng(2)
    P = rng.normal(size=(100, 3)).astype(np.float32)
    C = rng.integers(0, 256, (100, 3)).astype(np.uint8)
    path = eio.write_ply(str(tmp_path / "m.ply"), P, C)
    P2, C2 = eio.read_ply(path)
    np.testing.assert_array_equal(P2, P)
    np.testing.assert_array_equal(C2, C)
    from scipy.spatial.transform import Rotation

    poses = []
    for i in range(5):
        T = np.eye(4)
        T[:3, :3] = Rotation.random(random_state=i).as_matrix()
        T[:3, 3] = rng.normal(size=3)
        poses.append(PoseEstimate(1_700_000_000_123_456_789 + i, T, K=np.eye(3), width=64, height=48,
                                  source=f"f{i}.png", frame_index=i))
    tp = eio.write_tum(str(tmp_path / "t.tum"), poses)
    stamps, Ts = eio.read_tum(tp)
    assert list(stamps) == [p.stamp_ns for p in poses]  # ns preserved
    np.testing.assert_allclose(Ts, np.array([p.T_map_cam for p in poses]), atol=1e-8)
    from evo.tools import file_interface

    tr = file_interface.read_tum_trajectory_file(tp)  # evo reads it (x y z qx qy qz qw order)
    np.testing.assert_allclose(tr.positions_xyz, Ts[:, :3, 3], atol=1e-8)
    np.testing.assert_allclose(tr.poses_se3[2], Ts[2], atol=1e-6)
    ents = eio.cameras_entries(poses)
    E = np.array(ents[1]["extrinsics"])
    np.testing.assert_allclose(E, invert_transform(poses[1].T_map_cam)[:3], atol=1e-12)
    assert ents[1]["image"] == "f1.png" and ents[1]["width"] == 64 and ents[1]["height"] == 48
    eio.write_json(str(tmp_path / "c.json"), {"a": float("nan"), "b": np.float32(1.5)})
    assert json.load(open(tmp_path / "c.json")) == {"a": None, "b": 1.5}
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # no temporaries left


def test_engine_memory_bounded_over_a_long_run_and_save(tmp_path):
    frames, scene = make_box_room_sequence(40)
    be = OracleBackend(scene, scale_range=(0.5, 2.0), downsample=2)
    cap, traj_cap = 3000, 50
    eng = Engine(be, EngineConfig(keyframe_min_flow_px=0, keyframe_max_interval_s=0.25, window_size=4,
                                  window_overlap=1, window_max_keyframes=3, voxel_size=0.02, max_map_points=cap,
                                  max_trajectory_poses=traj_cap, keyframe_buffer_size=8,
                                  max_points_per_window=2000, revisit_windows=False,  # windows keep coming
                                  window_db_max_windows=6))
    mem = []
    for lap in range(4):  # the same path again and again, with new stamps
        for f in frames:
            g = Frame(f.stamp_ns + lap * 10_000_000_000, f.image, f.K, f.frame_id, f.index, f.source)
            out = eng.process_frame(g)
            assert not out.rejected
            if out.window_points is not None:
                assert len(out.window_points) <= 2000
        mem.append(eng.memory_bytes())
    st = eng.status()
    assert st.windows >= 12
    assert st.map_points <= cap and len(eng.trajectory()) == traj_cap
    assert len(eng.keyframes) <= 8 and st.keyframes_dropped > 0
    assert one_per_voxel(eng.map.points, eng.map.voxel_size)
    assert mem[-1] <= 1.1 * mem[1]  # no growth once the bounds are reached
    paths = eng.save(str(tmp_path / "out"))
    for k in ("map", "trajectory", "cameras", "metadata"):
        assert os.path.isfile(paths[k])
    stamps, _ = eio.read_tum(paths["trajectory"])
    assert list(stamps) == [p.stamp_ns for p in eng.trajectory()]
    cams = json.load(open(paths["cameras"]))["frames"]
    assert len(cams) == traj_cap and cams[0]["width"] == 64 and cams[0]["image"].startswith("frame_")
    meta = json.load(open(paths["metadata"]))
    assert meta["backend"] == "oracle" and meta["metric"] is False and "up to scale" in meta["units"]
    P, _ = eio.read_ply(paths["map"])
    assert len(P) == st.map_points

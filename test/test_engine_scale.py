"""Metric scale from odometry: interpolation, the ratio estimator and its uncertainty, and the engine.

Bound for the engine case: odometry noise 1 cm per axis, estimated poses ~9 mm (oracle noise, see
test_engine_chaining), pairs >= 0.2 m apart: each distance ratio is off by about
sqrt(2 * 1.7^2 + 2 * 1.5^2) cm / >= 20 cm <= ~16 % (1 sigma, worst case baseline; ~8 % at typical 0.4 m);
the median of ~15 such ratios has a std of ~1.25 * 8 % / sqrt(15) ~ 2.6 %. We require the estimate within
8 % of the truth and the reported std to cover the error at 3 sigma.
"""
import numpy as np
import pytest

from selfi_ros.backends.oracle import OracleBackend, make_box_room_sequence
from selfi_ros.engine.engine import Engine, EngineConfig
from selfi_ros.engine.scale import OdometryBuffer, ScaleEstimator
from selfi_ros.engine.types import OdometrySample
from selfi_ros.geometry.sim3 import umeyama


def T_at(xyz):
    T = np.eye(4)
    T[:3, 3] = xyz
    return T


def test_odometry_buffer_interpolates_and_rejects():
    b = OdometryBuffer(capacity=3, max_gap_s=0.5)
    assert b.position_at(0) is None
    assert b.add(0, T_at([0, 0, 0])) and b.add(200_000_000, T_at([2, 0, 0]))
    np.testing.assert_allclose(b.position_at(50_000_000), [0.5, 0, 0])
    np.testing.assert_allclose(b.position_at(200_000_000), [2, 0, 0])
    assert b.position_at(300_000_000) is None  # no extrapolation
    assert not b.add(100_000_000, T_at([9, 9, 9]))  # out of order
    assert not b.add(900_000_000, np.full((4, 4), np.nan))  # not finite
    assert b.rejected == 2
    assert b.add(1_000_000_000, T_at([3, 0, 0]))
    assert b.position_at(600_000_000) is None  # gap of 0.8 s > 0.5 s
    b.add(1_100_000_000, T_at([4, 0, 0]))
    assert len(b) == 3  # bounded


def test_scale_estimator_recovers_scale_and_its_std_covers_the_error():
    true_s = 2.7  # metres per map unit
    covered, errs = 0, []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        t = np.linspace(0, 4 * np.pi, 40)
        odo = np.stack([2 * np.cos(t / 2), np.sin(t), 0.1 * t], 1)
        est = odo / true_s + rng.normal(0, 0.004, odo.shape)  # map units
        odo_n = odo + rng.normal(0, 0.01, odo.shape)
        odo_n[5] += [3, 0, 0]  # one gross odometry outlier
        se = ScaleEstimator(min_baseline_m=0.3, min_pairs=5, max_rel_std=0.05, seed=seed)
        for i in range(len(t)):
            se.add(i, est[i], odo_n[i])
        e = se.update()
        assert e.valid and e.num_pairs >= 20
        errs.append(abs(e.scale - true_s) / true_s)
        covered += abs(e.scale - true_s) <= 2 * e.std
    assert np.median(errs) < 0.02
    assert covered >= 0.85 * 40  # a 2-sigma interval covers the truth (nominal 95 %)
    # too little motion: no pairs, not valid, scale stays 1
    se = ScaleEstimator(min_baseline_m=1.0)
    for i in range(5):
        se.add(i, np.zeros(3) + 0.01 * i, np.zeros(3) + 0.01 * i)
    e = se.update()
    assert not e.valid and e.scale == 1.0 and e.num_pairs == 0


def run(with_odom, seed=0):
    frames, scene = make_box_room_sequence(60)
    be = OracleBackend(scene, rot_noise_deg=0.2, trans_noise_m=0.005, depth_noise=0.005, scale_range=(0.3, 3.0),
                       downsample=2, seed=seed)
    eng = Engine(be, EngineConfig(keyframe_min_flow_px=0, keyframe_max_interval_s=0.25, window_size=5,
                                  window_overlap=2, window_max_keyframes=4, voxel_size=0.05,
                                  scale_min_baseline_m=0.2, scale_min_pairs=5, scale_max_rel_std=0.05))
    rng = np.random.default_rng(100 + seed)
    outs = []
    for f in frames:
        if with_odom:  # odometry of the camera itself, 1 cm noise, 5 ms before the image
            eng.add_odometry(OdometrySample(f.stamp_ns - 5_000_000, T_at(scene.T_world_cam[f.index][:3, 3]
                                                                       + rng.normal(0, 0.01, 3))))
        outs.append(eng.process_frame(f))
    return eng, be, scene, outs


@pytest.mark.parametrize("seed", [0, 1])
def test_engine_metric_scale_from_noisy_odometry(seed):
    eng, be, scene, outs = run(True, seed)
    st = eng.status()
    assert st.metric
    true_scale = 1.0 / be.window_scales[0]  # the map is in window-0 units
    assert st.scale == pytest.approx(true_scale, rel=0.08)
    assert abs(st.scale - true_scale) <= 3 * st.scale_std
    # outputs say metric from some frame on, and all later poses are metric
    flags = [p.metric for o in outs for p in o.poses]
    first = flags.index(True)
    assert all(flags[first:]) and not any(flags[:first])
    # metric trajectory needs no scale to align with the truth
    traj = eng.trajectory()
    est = np.array([p.T_map_cam[:3, 3] for p in traj])
    gt = np.array([scene.T_world_cam[p.frame_index][:3, 3] for p in traj])
    S = umeyama(est, gt)
    assert S.s == pytest.approx(1.0, rel=0.08)
    assert np.sqrt(np.mean(np.sum((umeyama(est, gt, with_scale=False).apply(est) - gt) ** 2, 1))) < 0.06
    pts, _ = eng.map_cloud()
    pts_units = eng.map.points
    np.testing.assert_allclose(pts, pts_units * st.scale, rtol=1e-5, atol=1e-5)


def test_engine_without_odometry_is_up_to_scale():
    eng, be, scene, outs = run(False)
    st = eng.status()
    assert not st.metric and st.scale == 1.0 and np.isnan(st.scale_std)
    assert not any(p.metric for o in outs for p in o.poses)

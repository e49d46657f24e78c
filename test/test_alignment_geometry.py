"""PnP localizer, pose check, bundle adjustment, depth-drift correction and feature matching."""
import numpy as np
import torch

from selfi_ros.alignment.bundle_adjustment import (BAProblem, bundle_adjust, camera_errors, problem_from_matches,
                                                   rotvec_to_matrix)
from selfi_ros.alignment.depth_correction import correct_depths, fit_depth_affine
from selfi_ros.alignment.localizer import PoseChecker, check_pose, solve_pnp
from selfi_ros.alignment.matching import Matches, match_features

K = np.array([[300.0, 0, 160.0], [0, 300.0, 120.0], [0, 0, 1]])


def _extr(rv, t):
    return np.hstack([rotvec_to_matrix(np.asarray(rv, float))[0], np.asarray(t, float).reshape(3, 1)])


def _project(E, X):
    Xc = X @ E[:, :3].T + E[:, 3]
    p = Xc @ K.T
    return p[:, :2] / p[:, 2:], Xc[:, 2]


def test_rotvec_matches_scipy():
    from scipy.spatial.transform import Rotation
    rv = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_allclose(rotvec_to_matrix(rv), Rotation.from_rotvec(rv).as_matrix(), atol=1e-12)


def test_pnp_recovers_known_pose_with_outliers():
    rng = np.random.default_rng(0)
    X = rng.uniform([-2, -1.5, 4], [2, 1.5, 8], size=(200, 3))
    E = _extr([0.05, -0.1, 0.02], [0.3, -0.1, 0.5])
    uv, z = _project(E, X)
    uv += rng.normal(0, 0.3, uv.shape)
    out = rng.choice(200, 60, replace=False)
    uv[out] = rng.uniform([0, 0], [320, 240], size=(60, 2))
    res = solve_pnp(uv, X, K, reproj_px=3.0)
    assert res.success
    r, t = __import__("selfi_ros.alignment.localizer", fromlist=["x"]).pose_difference(res.extrinsics, E)
    assert r < 0.5 and t < 0.02
    assert res.inliers[out].mean() < 0.2 and res.inliers.sum() >= 120


def test_pnp_fails_cleanly_on_too_few_points():
    res = solve_pnp(np.zeros((4, 2)), np.ones((4, 3)), K)
    assert not res.success and "too few" in res.reason


def test_check_pose_flags_disagreeing_pose_and_counts():
    E = _extr([0, 0, 0], [0, 0, 0])
    E_close = _extr([0, 0.01, 0], [0.01, 0, 0])
    E_far = _extr([0, 0.3, 0], [0, 0, 0])  # ~17 deg
    assert check_pose(E, E_close, 5.0, 0.1).ok
    bad = check_pose(E, E_far, 5.0, 0.1)
    assert not bad.ok and abs(bad.rot_err_deg - np.degrees(0.3)) < 1e-6 and "rotation" in bad.reason
    moved = check_pose(E, _extr([0, 0, 0], [0, 0, 0.5]), 5.0, 0.1)
    assert not moved.ok and abs(moved.trans_err - 0.5) < 1e-9
    checker = PoseChecker(5.0, 0.1)
    checker(E, E_close); checker(E, E_far); checker(E, None)
    assert (checker.checked, checker.flagged, checker.unverified) == (3, 1, 1)


def _ba_scene(seed=0, n_cam=4, n_pts=150, noise_px=0.3):
    rng = np.random.default_rng(seed)
    X = rng.uniform([-2, -1.5, 4], [2, 1.5, 7], size=(n_pts, 3))
    Es = [_extr([0, 0, 0], [0, 0, 0])]
    for i in range(1, n_cam):
        Es.append(_extr([0.02 * i, -0.04 * i, 0.01], [-0.3 * i, 0.05 * i, 0.1 * i]))
    Es = np.stack(Es)
    ci, pi, uv = [], [], []
    for c in range(n_cam):
        p, z = _project(Es[c], X)
        ok = (z > 0) & (p[:, 0] >= 0) & (p[:, 0] < 320) & (p[:, 1] >= 0) & (p[:, 1] < 240)
        ci.append(np.full(ok.sum(), c)); pi.append(np.flatnonzero(ok)); uv.append(p[ok] + rng.normal(0, noise_px, (ok.sum(), 2)))
    return Es, X, np.concatenate(ci), np.concatenate(pi), np.concatenate(uv), rng


def test_ba_reduces_pose_error_from_perturbed_start():
    Es, X, ci, pi, uv, rng = _ba_scene()
    E0 = Es.copy()
    for c in range(1, len(Es)):
        dR = rotvec_to_matrix(rng.normal(0, 0.02, 3))[0]
        E0[c, :, :3] = dR @ Es[c, :, :3]
        E0[c, :, 3] = Es[c, :, 3] + rng.normal(0, 0.05, 3)
    X0 = X + rng.normal(0, 0.05, X.shape)
    prob = BAProblem(E0, np.repeat(K[None], len(Es), 0), X0, ci, pi, uv)
    res = bundle_adjust(prob, huber_px=1.0)
    r0, t0 = camera_errors(E0, Es)
    r1, t1 = camera_errors(res.extrinsics, Es)
    assert res.final_rms < res.initial_rms / 5 and res.final_rms < 1.0
    assert r1[1:].mean() < r0[1:].mean() / 3 and t1[1:].mean() < t0[1:].mean() / 3
    np.testing.assert_allclose(res.extrinsics[0], Es[0], atol=1e-12)  # gauge: first camera fixed


def test_ba_refines_shared_focal():
    Es, X, ci, pi, uv, rng = _ba_scene(seed=1, n_cam=5)
    Kw = np.repeat(K[None], len(Es), 0).copy()
    Kw[:, 0, 0] *= 1.05; Kw[:, 1, 1] *= 1.05
    res = bundle_adjust(BAProblem(Es.copy(), Kw, X.copy(), ci, pi, uv), refine_focal=True, huber_px=1.0)
    assert abs(res.K[0, 0, 0] - 300.0) < abs(Kw[0, 0, 0] - 300.0) / 3
    assert res.final_rms < res.initial_rms


def test_problem_from_matches_unprojects_with_depth():
    E = np.stack([_extr([0, 0, 0], [0, 0, 0]), _extr([0, 0.05, 0], [-0.2, 0, 0])])
    depth = np.full((2, 240, 320), 5.0)
    uv0 = np.array([[100.0, 50.0], [200.0, 150.0]])
    X = np.c_[(uv0 - K[:2, 2]) / 300.0 * 5.0, np.full(2, 5.0)]
    uv1, _ = _project(E[1], X)
    prob = problem_from_matches({(0, 1): Matches(uv0.astype(np.float32), uv1.astype(np.float32), np.ones(2))},
                                depth, E, np.repeat(K[None], 2, 0))
    np.testing.assert_allclose(prob.points, X, atol=1e-9)
    assert prob.cam_idx.tolist() == [0, 0, 1, 1] and prob.point_idx.tolist() == [0, 1, 0, 1]


def test_depth_affine_recovers_known_map_with_outliers():
    rng = np.random.default_rng(0)
    d = rng.uniform(1, 5, 300)
    z = 1.3 * d - 0.2 + rng.normal(0, 0.01, 300)
    z[:30] = rng.uniform(1, 10, 30)
    fit = fit_depth_affine(d, z)
    assert fit.ok and abs(fit.scale - 1.3) < 0.01 and abs(fit.shift + 0.2) < 0.03
    assert fit.num_inliers < 300 and fit.num_inliers >= 265
    np.testing.assert_allclose(fit.apply(np.array([2.0, 0.0])), [2.4, 0.0], atol=0.05)
    assert not fit_depth_affine(d[:5], z[:5]).ok


def test_correct_depths_per_frame_from_ba_points():
    E = np.stack([_extr([0, 0, 0], [0, 0, 0]), _extr([0, 0.05, 0], [-0.2, 0, 0])])
    rng = np.random.default_rng(2)
    X = rng.uniform([-1, -1, 3], [1, 1, 6], (80, 3))
    ci, pi, uvs = [], [], []
    true_depth = np.zeros((2, 240, 320))
    for c in range(2):
        uv, z = _project(E[c], X)
        ci.append(np.full(80, c)); pi.append(np.arange(80)); uvs.append(uv)
        xi, yi = np.round(uv).astype(int).T
        true_depth[c, yi, xi] = z
    pred = true_depth.copy()
    pred[0][pred[0] > 0] = (pred[0][pred[0] > 0] - 0.1) / 0.9  # frame 0 drifted: true = 0.9 pred + 0.1
    corrected, fits = correct_depths(pred, E, X, np.concatenate(ci), np.concatenate(pi), np.concatenate(uvs))
    assert abs(fits[0].scale - 0.9) < 1e-6 and abs(fits[0].shift - 0.1) < 1e-6
    assert abs(fits[1].scale - 1.0) < 1e-6
    np.testing.assert_allclose(corrected, true_depth, atol=1e-6)


def test_match_features_mutual_nn_on_shifted_random_features():
    torch.manual_seed(0)
    f0 = torch.randn(16, 20, 24)
    f1 = torch.roll(f0, shifts=(2, 3), dims=(1, 2))  # content moves +3 px in x, +2 px in y
    f1[:, :2] = torch.randn(16, 2, 24)
    f1[:, :, :3] = torch.randn(16, 20, 3)
    m = match_features(f0, f1, stride=2, cycle_px=0.0, ratio=0.8)
    assert len(m) > 20
    correct = np.all(m.uv1 - m.uv0 == np.array([3.0, 2.0]), axis=1)
    assert correct.mean() > 0.95  # random 16-D features: a rare chance mutual match may survive
    # without any filter, queries whose counterpart was overwritten produce wrong matches
    m_all = match_features(f0, f1, stride=2, cycle_px=None, ratio=None)
    assert len(m_all) == m_all.num_candidates == 10 * 12
    assert np.mean(np.all(m_all.uv1 - m_all.uv0 == np.array([3.0, 2.0]), axis=1)) < correct.mean()


def test_localize_query_against_anchor_point_map():
    """Query with the anchor's own features (same camera): matches are the identity, PnP gives the anchor's
    pose; a second anchor with unrelated features contributes (almost) nothing."""
    from selfi_ros.alignment.localizer import AnchorView, localize_query, pose_difference
    rng = np.random.default_rng(0)
    Hh, Ww = 24, 32
    Ks = np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])
    E = _extr([0.1, -0.2, 0.05], [0.3, 0.1, -0.2])
    depth = rng.uniform(2, 5, (Hh, Ww))
    u, v = np.meshgrid(np.arange(Ww), np.arange(Hh))
    Xc = np.stack([(u - 15.5) / 30 * depth, (v - 11.5) / 30 * depth, depth], -1)
    Xw = (Xc - E[:, 3]) @ E[:, :3]  # R^T (Xc - t)
    feat = torch.randn(16, Hh, Ww)
    other = AnchorView(torch.randn(16, Hh, Ww), Xw + 10.0)
    res = localize_query(feat, [AnchorView(feat, Xw), other], Ks, stride=2, reproj_px=1.0, min_inliers=20)
    assert res.success
    r, t = pose_difference(res.extrinsics, E)
    assert r < 1e-3 and t < 1e-4
    assert res.num_inliers >= 0.9 * (Hh // 2) * (Ww // 2)


def test_robust_ba_rejects_outlier_points():
    from selfi_ros.alignment.bundle_adjustment import robust_bundle_adjust
    Es, X, ci, pi, uv, rng = _ba_scene(seed=3, n_cam=4, n_pts=120)
    bad = rng.choice(120, 30, replace=False)
    sel = np.isin(pi, bad) & (ci == 2)
    uv = uv.copy()
    uv[sel] += rng.uniform(15, 40, (sel.sum(), 2)) * rng.choice([-1, 1], (sel.sum(), 2))
    E0 = Es.copy()
    for c in range(1, 4):
        E0[c, :, 3] += rng.normal(0, 0.03, 3)
    prob = BAProblem(E0, np.repeat(K[None], 4, 0), X + rng.normal(0, 0.02, X.shape), ci, pi, uv)
    res, keep = robust_bundle_adjust(prob, reject_px=(6.0, 2.0), huber_px=1.0)
    corrupted = np.isin(np.arange(120), pi[sel])
    assert not keep[corrupted].any() and keep[~corrupted].mean() > 0.95
    r1, t1 = camera_errors(res.extrinsics, Es)
    r_plain, t_plain = camera_errors(bundle_adjust(prob, huber_px=1.0).extrinsics, Es)
    assert t1[1:].mean() < t_plain[1:].mean()
    assert t1[1:].max() < 0.02 and r1[1:].max() < 0.3

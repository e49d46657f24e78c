"""Sim(3) fitting (Umeyama, RANSAC, Huber IRLS) and pinhole helpers against independent computations."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from selfi_ros.geometry.camera import depth_to_points_world, project, scale_intrinsics, unproject
from selfi_ros.geometry.se3 import invert_transform
from selfi_ros.geometry.sim3 import Sim3, ransac_sim3, robust_sim3, umeyama


def random_sim3(rng, s=None):
    return Sim3(s if s is not None else float(np.exp(rng.uniform(-1, 1))),
                Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix(), rng.normal(0, 3, 3))


def test_sim3_matrix_roundtrip_inverse_and_composition():
    rng = np.random.default_rng(1)
    A, B = random_sim3(rng), random_sim3(rng)
    x = rng.normal(size=(10, 3))
    M = A.matrix()
    np.testing.assert_allclose(A.apply(x), x @ M[:3, :3].T + M[:3, 3], atol=1e-12)
    A2 = Sim3.from_matrix(M)
    assert A2.s == pytest.approx(A.s) and np.allclose(A2.R, A.R) and np.allclose(A2.t, A.t)
    np.testing.assert_allclose(A.inverse().apply(A.apply(x)), x, atol=1e-10)
    np.testing.assert_allclose((A @ B).apply(x), A.apply(B.apply(x)), atol=1e-10)
    np.testing.assert_allclose((A @ B).matrix(), A.matrix() @ B.matrix(), atol=1e-10)


def test_transform_pose_is_rigid_and_moves_centre():
    rng = np.random.default_rng(2)
    S = random_sim3(rng, s=2.5)
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=3).as_matrix()
    T[:3, 3] = [1, 2, 3]
    T2 = S.transform_pose(T)
    np.testing.assert_allclose(T2[:3, :3] @ T2[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(T2[:3, 3], S.apply(T[:3, 3]))
    # a point seen in the camera maps consistently: S(T p) == T2 (s p)
    p = np.array([0.3, -0.2, 1.7])
    np.testing.assert_allclose(S.apply(T[:3, :3] @ p + T[:3, 3]), T2[:3, :3] @ (S.s * p) + T2[:3, 3], atol=1e-12)


def test_umeyama_recovers_exact_sim3_and_weights_matter():
    rng = np.random.default_rng(3)
    S = random_sim3(rng)
    src = rng.normal(size=(50, 3))
    dst = S.apply(src)
    F = umeyama(src, dst)
    assert F.s == pytest.approx(S.s, rel=1e-10)
    np.testing.assert_allclose(F.R, S.R, atol=1e-10)
    np.testing.assert_allclose(F.t, S.t, atol=1e-9)
    # corrupt 10 points; zero weight on them recovers the exact transform, uniform weights do not
    bad = dst.copy()
    bad[:10] += rng.normal(0, 5, (10, 3))
    w = np.ones(50)
    w[:10] = 0
    assert np.allclose(umeyama(src, bad, w).matrix(), S.matrix(), atol=1e-9)
    assert not np.allclose(umeyama(src, bad).matrix(), S.matrix(), atol=1e-3)
    # no scale: an SE(3) fit keeps s = 1
    assert umeyama(src, dst, with_scale=False).s == 1.0


def test_umeyama_handles_reflection_case_and_errors():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(20, 3))
    dst = src * np.array([1, 1, -1])  # a mirror: best proper rotation must still be a rotation
    F = umeyama(src, dst)
    assert np.linalg.det(F.R) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        umeyama(src[:, :2], dst[:, :2])
    with pytest.raises(ValueError, match="3 points"):
        umeyama(src[:2], dst[:2])
    with pytest.raises(ValueError, match="identical"):
        umeyama(np.ones((5, 3)), dst[:5])


def test_robust_sim3_rejects_outliers_with_ransac_and_huber():
    rng = np.random.default_rng(5)
    S = random_sim3(rng, s=0.7)
    src = rng.uniform(-2, 2, (300, 3))
    dst = S.apply(src) + rng.normal(0, 0.002, (300, 3))
    out = rng.choice(300, 90, replace=False)  # 30 % gross outliers
    dst[out] += rng.uniform(-3, 3, (90, 3))
    res = robust_sim3(src, dst, rng=np.random.default_rng(0))
    assert res.sim3.s == pytest.approx(0.7, rel=2e-3)
    ang = np.degrees(np.arccos(np.clip((np.trace(res.sim3.R.T @ S.R) - 1) / 2, -1, 1)))
    assert ang < 0.2
    assert res.rms < 0.01
    # outliers flagged: most of them outside, most inliers inside
    assert res.inliers[out].mean() < 0.1
    assert np.delete(res.inliers, out).mean() > 0.95
    # plain least squares is visibly biased on the same data
    assert abs(umeyama(src, dst).s - 0.7) > 5 * abs(res.sim3.s - 0.7)
    S2, mask = ransac_sim3(src, dst, threshold=0.05, rng=np.random.default_rng(1))
    assert mask[out].mean() < 0.1 and S2.s == pytest.approx(0.7, rel=5e-3)


def test_camera_project_unproject_roundtrip_and_world_points():
    rng = np.random.default_rng(6)
    K = np.array([[60.0, 0, 31.5], [0, 55.0, 23.5], [0, 0, 1]])
    P = np.column_stack([rng.uniform(-1, 1, 40), rng.uniform(-1, 1, 40), rng.uniform(0.5, 4, 40)])
    uv, z = project(P, K)
    np.testing.assert_allclose(unproject(uv, z, K), P, atol=1e-12)
    # independent check with the matrix form
    h = P @ K.T
    np.testing.assert_allclose(uv, h[:, :2] / h[:, 2:], atol=1e-12)
    assert np.isnan(project(np.array([[0, 0, -1.0]]), K)[0]).all()
    # a depth map of a fronto-parallel plane at z=2 in a camera at c: world points have z_world = c_z + 2
    T = np.eye(4)
    T[:3, 3] = [0.5, -1, 3]
    pts = depth_to_points_world(np.full((4, 5), 2.0), K, invert_transform(T)[:3])
    np.testing.assert_allclose(pts[..., 2], 5.0)
    K2 = scale_intrinsics(K, 0.5, 0.5)
    assert K2[0, 0] == 30.0 and K2[0, 2] == pytest.approx((31.5 + 0.5) * 0.5 - 0.5)

"""Pose encoding (absT_quaR_FoV) and depth unprojection against independent computations."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from selfi_ros.model.utils import (
    closed_form_inverse_se3,
    depth_to_world_points,
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    project_world_points,
    quat_to_mat,
    unproject_depth_map_to_point_map,
)


def _random_cameras(n, seed=0, H=294, W=518):
    rng = np.random.default_rng(seed)
    R = Rotation.random(n, random_state=seed).as_matrix()
    t = rng.normal(size=(n, 3))
    E = np.concatenate([R, t[:, :, None]], axis=2)
    K = np.zeros((n, 3, 3))
    K[:, 0, 0] = rng.uniform(200, 600, n)
    K[:, 1, 1] = rng.uniform(200, 600, n)
    K[:, 0, 2] = W / 2
    K[:, 1, 2] = H / 2
    K[:, 2, 2] = 1
    return E, K


def test_quat_to_mat_matches_scipy_and_ignores_scale():
    q = torch.tensor(Rotation.random(20, random_state=1).as_quat(), dtype=torch.float64)  # xyzw
    R_ref = torch.tensor(Rotation.from_quat(q.numpy()).as_matrix())
    assert torch.allclose(quat_to_mat(q), R_ref, atol=1e-12)
    scale = torch.linspace(0.1, 7.0, 20, dtype=torch.float64)[:, None]
    assert torch.allclose(quat_to_mat(q * scale), R_ref, atol=1e-12)
    assert torch.allclose(quat_to_mat(-q), R_ref, atol=1e-12)


def test_mat_to_quat_roundtrip_and_sign():
    # include rotations near 180 degrees where w ~ 0 (the ill-conditioned case for the naive formula)
    rots = list(Rotation.random(50, random_state=2).as_quat())
    for axis in np.eye(3):
        rots.append(Rotation.from_rotvec(axis * (math.pi - 1e-7)).as_quat())
        rots.append(Rotation.from_rotvec(axis * math.pi).as_quat())
    rots.append([0, 0, 0, 1.0])
    q_ref = torch.tensor(np.array(rots))
    q_ref = torch.where(q_ref[:, 3:] < 0, -q_ref, q_ref)
    R = quat_to_mat(q_ref)
    q = mat_to_quat(R)
    assert (q[:, 3] >= 0).all()
    assert torch.allclose(q.norm(dim=-1), torch.ones(len(q), dtype=q.dtype), atol=1e-12)
    # same rotation (q and -q are equivalent when w == 0)
    assert torch.allclose(quat_to_mat(q), R, atol=1e-9)
    mask = q_ref[:, 3] > 1e-3
    assert torch.allclose(q[mask], q_ref[mask], atol=1e-9)


def test_roundtrip_extri_intri_nonsquare():
    H, W = 294, 518
    E, K = _random_cameras(12, H=H, W=W)
    E_t = torch.tensor(E).reshape(3, 4, 3, 4)
    K_t = torch.tensor(K).reshape(3, 4, 3, 3)
    enc = extri_intri_to_pose_encoding(E_t, K_t, (H, W))
    assert enc.shape == (3, 4, 9)
    # fov_h goes with H and fy; fov_w with W and fx
    assert torch.allclose(enc[..., 7], 2 * torch.atan(H / 2 / K_t[..., 1, 1]))
    assert torch.allclose(enc[..., 8], 2 * torch.atan(W / 2 / K_t[..., 0, 0]))
    E2, K2 = pose_encoding_to_extri_intri(enc, (H, W))
    assert torch.allclose(E2, E_t, atol=1e-10)
    assert torch.allclose(K2, K_t, atol=1e-8)
    assert K2[0, 0, 0, 2] == W / 2 and K2[0, 0, 1, 2] == H / 2


def test_decode_non_unit_quaternion_and_fov():
    enc = torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 5.0, 1.0, 1.2]])  # quaternion 5 * identity
    E, K = pose_encoding_to_extri_intri(enc, (100, 300))
    assert torch.allclose(E[0, :, :3], torch.eye(3))
    assert torch.allclose(E[0, :, 3], torch.tensor([1.0, 2.0, 3.0]))
    assert math.isclose(K[0, 1, 1].item(), 50 / math.tan(0.5), rel_tol=1e-6)
    assert math.isclose(K[0, 0, 0].item(), 150 / math.tan(0.6), rel_tol=1e-6)
    with pytest.raises(ValueError):
        pose_encoding_to_extri_intri(torch.zeros(2, 8), (10, 10))


def test_closed_form_inverse_numpy_torch():
    E, _ = _random_cameras(5)
    inv = closed_form_inverse_se3(E)
    E4 = np.concatenate([E, np.tile([[[0, 0, 0, 1.0]]], (5, 1, 1))], axis=1)
    assert np.allclose(inv, np.linalg.inv(E4), atol=1e-12)
    inv_t = closed_form_inverse_se3(torch.tensor(E4))
    assert torch.allclose(inv_t, torch.tensor(np.linalg.inv(E4)), atol=1e-12)
    with pytest.raises(ValueError):
        closed_form_inverse_se3(np.zeros((2, 3, 3)))


def test_unprojection_against_pixel_loop_and_reprojection():
    H, W = 6, 9
    E, K = _random_cameras(2, seed=3, H=H, W=W)
    rng = np.random.default_rng(4)
    depth = rng.uniform(0.5, 5.0, size=(2, H, W, 1)).astype(np.float32)
    pts = unproject_depth_map_to_point_map(depth, E, K)
    assert pts.shape == (2, H, W, 3) and pts.dtype == np.float64
    for s in range(2):
        R, t = E[s, :, :3], E[s, :, 3]
        for v in range(H):
            for u in range(W):
                d = float(depth[s, v, u, 0])
                x_cam = np.array([(u - K[s, 0, 2]) * d / K[s, 0, 0], (v - K[s, 1, 2]) * d / K[s, 1, 1], d])
                x_world = np.linalg.solve(R, x_cam - t)
                assert np.allclose(pts[s, v, u], x_world, atol=1e-5)
    # torch path agrees, and projecting back gives the pixel grid and the depth
    pts_t, valid = depth_to_world_points(torch.tensor(depth, dtype=torch.float64), torch.tensor(E),
                                         torch.tensor(K))
    assert valid.all()
    assert np.allclose(pts_t.numpy(), pts, atol=1e-5)
    uv, z = project_world_points(pts_t.reshape(2, -1, 3), torch.tensor(E), torch.tensor(K))
    vv, uu = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    assert np.allclose(uv[0, :, 0].numpy(), uu.reshape(-1), atol=1e-6)
    assert np.allclose(uv[1, :, 1].numpy(), vv.reshape(-1), atol=1e-6)
    assert np.allclose(z.numpy(), depth.reshape(2, -1), atol=1e-6)


def test_unprojection_bad_shapes():
    with pytest.raises(ValueError):
        unproject_depth_map_to_point_map(np.ones((2, 4, 4)), np.zeros((3, 3, 4)), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError):
        unproject_depth_map_to_point_map(np.ones((4, 4)), np.zeros((1, 3, 4)), np.zeros((1, 3, 3)))

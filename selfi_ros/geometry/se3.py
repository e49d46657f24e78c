"""Rigid transforms and quaternions (numpy, float64).

See :mod:`selfi_ros.geometry` for the frame conventions used here.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def as_4x4(T: np.ndarray) -> np.ndarray:
    """Return a (..., 4, 4) float64 homogeneous copy of a (..., 3, 4) or (..., 4, 4) transform.

    Raises:
        ValueError: if the trailing shape is neither (3, 4) nor (4, 4).
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape[-2:] == (4, 4):
        return T.copy()
    if T.shape[-2:] != (3, 4):
        raise ValueError(f"expected a (...,3,4) or (...,4,4) transform, got shape {T.shape}")
    out = np.zeros(T.shape[:-2] + (4, 4))
    out[..., :3, :] = T
    out[..., 3, 3] = 1.0
    return out


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Closed-form inverse of rigid transforms (..., 3|4, 4) -> (..., 4, 4): ``[R|t]^-1 = [R^T | -R^T t]``."""
    T = as_4x4(T)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def extrinsics_to_T_world_cam(extrinsics: np.ndarray) -> np.ndarray:
    """Camera-from-world extrinsics (..., 3|4, 4) -> camera-to-world poses ``T_world_cam`` (..., 4, 4)."""
    return invert_transform(extrinsics)


def T_world_cam_to_extrinsics(T_world_cam: np.ndarray) -> np.ndarray:
    """Camera-to-world poses (..., 4, 4) -> camera-from-world extrinsics (..., 3, 4)."""
    return invert_transform(T_world_cam)[..., :3, :]


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """ROS-order quaternion(s) (..., 4) ``(x, y, z, w)`` -> rotation matrices (..., 3, 3).

    Non-unit quaternions are normalised. Raises ValueError for a zero quaternion.
    """
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n < 1e-12):
        raise ValueError("zero-norm quaternion")
    flat = (q / n).reshape(-1, 4)
    return Rotation.from_quat(flat).as_matrix().reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> ROS-order unit quaternions (..., 4) ``(x, y, z, w)`` with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    q = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()
    q = np.where(q[:, 3:4] < 0, -q, q)
    return q.reshape(R.shape[:-2] + (4,))


def transform_points(T_a_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Apply ``T_a_b`` (3|4 x 4) to points (..., 3) given in frame b; returns points in frame a (float64)."""
    T = as_4x4(T_a_b)
    p = np.asarray(points_b, dtype=np.float64)
    return p @ T[:3, :3].T + T[:3, 3]

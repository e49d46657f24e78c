"""Pinhole projection helpers (numpy, OpenCV optical axes: x right, y down, z forward).

Pixel coordinates follow OpenCV: ``(u, v)`` with the centre of the top-left pixel at ``(0, 0)``;
``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.
"""
from __future__ import annotations

import numpy as np

from selfi_ros.geometry.se3 import as_4x4


def check_K(K: np.ndarray) -> np.ndarray:
    """Return K as a (3, 3) float64; raises ValueError for another shape or non-positive focal lengths."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"intrinsics must be a finite (3, 3) with fx, fy > 0, got {K!r}")
    return K


def pixel_grid(height: int, width: int) -> np.ndarray:
    """(H, W, 2) float64 pixel coordinates ``(u, v)`` of every pixel centre."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([u, v], axis=-1)


def project(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project camera-frame points (..., 3) -> pixels (..., 2) and depths z (...,).

    Points with z <= 0 get NaN pixels (they are behind the camera).
    """
    K = check_K(K)
    p = np.asarray(points_cam, dtype=np.float64)
    z = p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = p[..., 0] / z
        y = p[..., 1] / z
    uv = np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], axis=-1)
    uv[z <= 0] = np.nan
    return uv, z


def unproject(uv: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (..., 2) with z-depths (...,) -> camera-frame points (..., 3) float64."""
    K = check_K(K)
    uv = np.asarray(uv, dtype=np.float64)
    z = np.asarray(depth, dtype=np.float64)
    y = (uv[..., 1] - K[1, 2]) / K[1, 1]
    x = (uv[..., 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.stack([x * z, y * z, z], axis=-1)


def depth_to_points_cam(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Z-depth map (H, W) -> (H, W, 3) float64 camera-frame point map."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {depth.shape}")
    return unproject(pixel_grid(*depth.shape), depth, K)


def depth_to_points_world(depth: np.ndarray, K: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    """Z-depth (H, W) of a camera with camera-from-world ``extrinsics`` (3|4 x 4) -> (H, W, 3) world points."""
    E = as_4x4(extrinsics)
    Pc = depth_to_points_cam(depth, K)
    R, t = E[:3, :3], E[:3, 3]
    return (Pc - t) @ R  # R^T (Pc - t)


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics for an image resized by factors (sx, sy) (new = old * factor), pixel-centre convention."""
    K = check_K(K).copy()
    K[0, 0] *= sx
    K[0, 1] *= sx
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 1] *= sy
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K

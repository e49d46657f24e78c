"""Depth unprojection and closed-form SE(3) inverse, in numpy and torch (as the official github
facebookresearch/vggt ``vggt/utils/geometry.py``: ``unproject_depth_map_to_point_map``,
``closed_form_inverse_se3``).

Conventions: OpenCV camera axes (x right, y down, z forward); ``extrinsics`` are camera-from-world
``[R | t]`` (``X_cam = R X_world + t``); ``depth`` is z-depth along the optical axis (not ray length);
pixel ``(u, v)`` = (column, row) integer indices with no +0.5 offset; intrinsics
``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` (skew ignored, as in VGGT).
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = [
    "closed_form_inverse_se3",
    "depth_to_cam_points",
    "depth_to_world_points",
    "unproject_depth_map_to_point_map",
    "project_world_points",
]


def _squeeze_depth(depth: ArrayLike, name: str = "depth") -> ArrayLike:
    if depth.ndim == 4 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 3:
        raise ValueError(f"{name} must be (S, H, W) or (S, H, W, 1), got shape {tuple(depth.shape)}")
    return depth


def closed_form_inverse_se3(T: ArrayLike) -> ArrayLike:
    """Invert rigid transforms in closed form: ``[R | t]^-1 = [R^T | -R^T t]``.

    Args:
        T: (..., 3, 4) or (..., 4, 4) rigid transforms, numpy array or torch tensor.
    Returns:
        (..., 4, 4) inverses, same library, dtype and device as the input.
    Raises:
        ValueError: on a trailing shape other than (3, 4) / (4, 4).
    """
    if tuple(T.shape[-2:]) not in ((3, 4), (4, 4)):
        raise ValueError(f"expected (..., 3, 4) or (..., 4, 4) transforms, got {tuple(T.shape)}")
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    if isinstance(T, torch.Tensor):
        Rt = R.transpose(-1, -2)
        out = torch.zeros(T.shape[:-2] + (4, 4), dtype=T.dtype, device=T.device)
        out[..., :3, :3] = Rt
        out[..., :3, 3:] = -Rt @ t
        out[..., 3, 3] = 1
        return out
    T = np.asarray(T)
    Rt = np.swapaxes(R, -1, -2)
    out = np.zeros(T.shape[:-2] + (4, 4), dtype=T.dtype)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1
    return out


def depth_to_cam_points(depth: ArrayLike, intrinsics: ArrayLike) -> ArrayLike:
    """Camera-frame points of every pixel: ``((u - cx) d / fx, (v - cy) d / fy, d)``.

    Args:
        depth: (S, H, W) or (S, H, W, 1) z-depth.
        intrinsics: (S, 3, 3) K in pixels.
    Returns:
        (S, H, W, 3) points in each camera's frame; numpy float32 for numpy input (as VGGT), the
        input dtype for torch.
    Raises:
        ValueError: on mismatched shapes.
    """
    depth = _squeeze_depth(depth)
    S, H, W = depth.shape
    if tuple(intrinsics.shape) != (S, 3, 3):
        raise ValueError(f"intrinsics must be ({S}, 3, 3) for depth {tuple(depth.shape)}, "
                         f"got {tuple(intrinsics.shape)}")
    if isinstance(depth, torch.Tensor):
        K = intrinsics.to(depth)
        v, u = torch.meshgrid(torch.arange(H, device=depth.device, dtype=depth.dtype),
                              torch.arange(W, device=depth.device, dtype=depth.dtype), indexing="ij")
        fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
        cx, cy = K[:, 0, 2, None, None], K[:, 1, 2, None, None]
        x = (u[None] - cx) * depth / fx
        y = (v[None] - cy) * depth / fy
        return torch.stack([x, y, depth], dim=-1)
    depth = np.asarray(depth)
    K = np.asarray(intrinsics)
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
    cx, cy = K[:, 0, 2, None, None], K[:, 1, 2, None, None]
    x = (u[None] - cx) * depth / fx
    y = (v[None] - cy) * depth / fy
    return np.stack([x, y, depth], axis=-1).astype(np.float32)


def depth_to_world_points(depth: ArrayLike, extrinsics: ArrayLike, intrinsics: ArrayLike,
                          eps: float = 1e-8) -> Tuple[ArrayLike, ArrayLike]:
    """Unproject depth maps into world-frame point maps: ``X_world = R^T (X_cam - t)``.

    Args:
        depth: (S, H, W) or (S, H, W, 1) z-depth.
        extrinsics: (S, 3, 4) or (S, 4, 4) camera-from-world.
        intrinsics: (S, 3, 3).
        eps: pixels with depth <= eps are flagged invalid (their points are still computed).
    Returns:
        (points (S, H, W, 3), valid (S, H, W) bool). numpy: float64 points (VGGT's fp64 inverse);
        torch: the promoted dtype of depth and extrinsics.
    Raises:
        ValueError: on mismatched shapes.
    """
    depth = _squeeze_depth(depth)
    S = depth.shape[0]
    if tuple(extrinsics.shape) not in ((S, 3, 4), (S, 4, 4)):
        raise ValueError(f"extrinsics must be ({S}, 3, 4) or ({S}, 4, 4), got {tuple(extrinsics.shape)}")
    cam = depth_to_cam_points(depth, intrinsics)
    if isinstance(depth, torch.Tensor):
        E = extrinsics.to(device=depth.device)
        dtype = torch.promote_types(depth.dtype, E.dtype)
        inv = closed_form_inverse_se3(E.to(dtype))
        pts = torch.einsum("sij,shwj->shwi", inv[:, :3, :3], cam.to(dtype)) + inv[:, None, None, :3, 3]
        return pts, depth > eps
    inv = closed_form_inverse_se3(np.asarray(extrinsics, dtype=np.float64))
    pts = np.einsum("sij,shwj->shwi", inv[:, :3, :3], cam.astype(np.float64)) + inv[:, None, None, :3, 3]
    return pts, np.asarray(depth) > eps


def unproject_depth_map_to_point_map(depth: ArrayLike, extrinsics: ArrayLike,
                                     intrinsics: ArrayLike) -> ArrayLike:
    """VGGT's ``unproject_depth_map_to_point_map``: world point map (S, H, W, 3) from depth + cameras.

    Same as :func:`depth_to_world_points` without the validity mask (numpy in -> float64 out).
    """
    return depth_to_world_points(depth, extrinsics, intrinsics)[0]


def project_world_points(points: ArrayLike, extrinsics: ArrayLike, intrinsics: ArrayLike
                         ) -> Tuple[ArrayLike, ArrayLike]:
    """Project world points into pixels of each camera.

    Args:
        points: (S, N, 3) world points (one set per camera) or (N, 3) shared by all cameras.
        extrinsics: (S, 3, 4) or (S, 4, 4) camera-from-world.
        intrinsics: (S, 3, 3).
    Returns:
        (uv (S, N, 2) pixels (column, row), z (S, N) camera z-depth). Points with z <= 0 get
        non-finite or meaningless uv; filter them with z.
    """
    is_t = isinstance(points, torch.Tensor)
    S = extrinsics.shape[0]
    if points.ndim == 2:
        points = points[None].expand(S, -1, -1) if is_t else np.broadcast_to(points, (S,) + points.shape)
    if points.ndim != 3 or points.shape[0] != S or points.shape[-1] != 3:
        raise ValueError(f"points must be (N, 3) or ({S}, N, 3), got {tuple(points.shape)}")
    R = extrinsics[:, :3, :3]
    t = extrinsics[:, :3, 3]
    if is_t:
        cam = torch.einsum("sij,snj->sni", R, points) + t[:, None]
        pix = torch.einsum("sij,snj->sni", intrinsics, cam)
    else:
        cam = np.einsum("sij,snj->sni", R, points) + t[:, None]
        pix = np.einsum("sij,snj->sni", intrinsics, cam)
    z = cam[..., 2]
    return pix[..., :2] / pix[..., 2:3], z

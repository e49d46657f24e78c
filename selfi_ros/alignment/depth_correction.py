"""Affine depth-drift correction (Selfi, arXiv 2512.08930, Sec. "applications": after bundle adjustment
the sparse points have moved; an affine map fitted per frame between the dense predicted depths and the
BA-refined sparse depths corrects the dense depth maps).

Per frame i: for every BA point observed in i, ``z_ba`` is its depth in the refined camera i and
``d`` the dense predicted depth at the observed pixel. A robust fit ``z_ba ~ a d + b`` (Huber IRLS
started from a least-squares fit, with a trimmed-median scale) gives ``(a, b)``; the corrected dense depth
is ``a D + b``. Units are those of the reconstruction (z-depth).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class DepthAffine:
    """Affine depth correction ``d' = scale * d + shift`` for one frame.

    Attributes:
        scale, shift: the fitted map (identity when the fit failed).
        num_points: number of sparse samples used.
        num_inliers: samples within the final robust threshold.
        rms: RMS residual of the inliers (depth units).
        ok: False when there were too few samples (identity returned).
    """

    scale: float = 1.0
    shift: float = 0.0
    num_points: int = 0
    num_inliers: int = 0
    rms: float = float("nan")
    ok: bool = False

    def apply(self, depth: np.ndarray) -> np.ndarray:
        """Corrected copy of a depth map (any shape); non-positive input depths stay as they are."""
        d = np.asarray(depth)
        out = self.scale * d + self.shift
        return np.where(d > 0, out, d).astype(d.dtype, copy=False)


def fit_depth_affine(
    dense: np.ndarray,
    sparse: np.ndarray,
    weights: Optional[np.ndarray] = None,
    min_points: int = 10,
    huber_k: float = 1.345,
    iterations: int = 20,
    fit_shift: bool = True,
) -> DepthAffine:
    """Robustly fit ``sparse ~ a * dense + b``.

    Args:
        dense: (M,) dense predicted depths at the sparse points' pixels.
        sparse: (M,) BA-refined depths of the same points.
        weights: optional (M,) non-negative prior weights.
        min_points: fewer valid samples -> identity with ``ok=False``.
        huber_k: Huber constant in units of the robust residual scale (1.4826 * MAD).
        fit_shift: False fits a pure scale (b = 0).
    Returns:
        :class:`DepthAffine`.
    Raises:
        ValueError: if ``dense`` and ``sparse`` differ in length.
    """
    x = np.asarray(dense, np.float64).ravel()
    y = np.asarray(sparse, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"dense (M,) and sparse (M,) must match, got {x.shape} and {y.shape}")
    w0 = np.ones_like(x) if weights is None else np.asarray(weights, np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0) & (w0 > 0)
    x, y, w0 = x[ok], y[ok], w0[ok]
    if len(x) < min_points:
        return DepthAffine(num_points=int(len(x)))
    A = np.stack([x, np.ones_like(x)], 1) if fit_shift else x[:, None]
    # robust start: median of ratios for scale (shift 0) beats an outlier-dominated least squares
    p = np.array([np.median(y / x), 0.0]) if fit_shift else np.array([np.median(y / x)])
    w = w0.copy()
    sigma = 1.0
    for _ in range(iterations):
        r = y - A @ p
        mad = np.median(np.abs(r - np.median(r)))
        sigma = max(1.4826 * mad, 1e-9 * max(1.0, float(np.median(np.abs(y)))))
        u = np.abs(r) / (huber_k * sigma)
        w = w0 * np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
        Aw = A * w[:, None]
        p_new = np.linalg.lstsq(Aw.T @ A, Aw.T @ y, rcond=None)[0]
        if np.allclose(p_new, p, rtol=1e-10, atol=1e-12):
            p = p_new
            break
        p = p_new
    r = y - A @ p
    inl = np.abs(r) <= 3 * huber_k * sigma
    a = float(p[0])
    b = float(p[1]) if fit_shift else 0.0
    if not np.isfinite(a) or a <= 0:
        return DepthAffine(num_points=int(len(x)))
    rms = float(np.sqrt(np.mean(r[inl] ** 2))) if inl.any() else float("nan")
    return DepthAffine(a, b, int(len(x)), int(inl.sum()), rms, True)


def sparse_depth_samples(points_world: np.ndarray, uv: np.ndarray, extrinsics: np.ndarray,
                         dense_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense depth at the pixels (nearest) and z of the (refined) world points in a (refined) camera.

    Args:
        points_world: (M, 3) points; uv: (M, 2) their pixels (x, y) in this frame;
        extrinsics: (3, 4) camera-from-world of this frame; dense_depth: (H, W).
    Returns:
        (dense (M,), sparse (M,)) float64.
    """
    H, W = dense_depth.shape
    x = np.clip(np.round(uv[:, 0]).astype(int), 0, W - 1)
    y = np.clip(np.round(uv[:, 1]).astype(int), 0, H - 1)
    z = np.asarray(points_world, np.float64) @ extrinsics[2, :3] + extrinsics[2, 3]
    return dense_depth[y, x].astype(np.float64), z


def correct_depths(
    depth: np.ndarray,
    extrinsics_ba: np.ndarray,
    points_ba: np.ndarray,
    cam_idx: np.ndarray,
    point_idx: np.ndarray,
    uv: np.ndarray,
    min_points: int = 10,
) -> tuple[np.ndarray, list[DepthAffine]]:
    """Correct every frame's dense depth with the BA result (Selfi's depth-drift correction).

    Args:
        depth: (N, H, W) dense predicted depths.
        extrinsics_ba: (N, 3, 4) refined camera-from-world; points_ba: (P, 3) refined points.
        cam_idx, point_idx, uv: the BA observations (see :class:`.bundle_adjustment.BAProblem`).
    Returns:
        (corrected (N, H, W) depths, per-frame :class:`DepthAffine`).
    """
    out = np.array(depth, copy=True)
    fits = []
    for i in range(len(depth)):
        sel = cam_idx == i
        d, z = sparse_depth_samples(points_ba[point_idx[sel]], uv[sel], extrinsics_ba[i], depth[i])
        fit = fit_depth_affine(d, z, min_points=min_points)
        fits.append(fit)
        out[i] = fit.apply(depth[i])
    return out, fits

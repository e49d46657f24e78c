"""Similarity transforms Sim(3): closed-form weighted fit (Umeyama), robust IRLS (Huber) and RANSAC.

Convention (see :mod:`selfi_ros.geometry`): ``S = (s, R, t)`` acts as ``x -> s R x + t``; as a 4x4 matrix
the rotation block holds ``s R``. ``T_a_b`` maps frame-b coordinates into frame a.

Method: S. Umeyama, "Least-squares estimation of transformation parameters between two point
patterns", IEEE TPAMI 13(4), 1991 (closed form with scale, here with per-point weights); robust
re-weighting with the Huber loss (P. J. Huber, 1964) by iteratively re-weighted least squares; a RANSAC
start (Fischler & Bolles, 1981) on minimal 3-point samples.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from selfi_ros.geometry.se3 import as_4x4


@dataclass
class Sim3:
    """A similarity transform ``x -> s R x + t``.

    Attributes:
        s: scale (> 0), unitless ratio of target units to source units.
        R: (3, 3) float64 rotation.
        t: (3,) float64 translation in target units.
    """

    s: float = 1.0
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        self.s = float(self.s)
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)
        if not (np.isfinite(self.s) and self.s > 0):
            raise ValueError(f"Sim3 scale must be finite and > 0, got {self.s}")

    @staticmethod
    def identity() -> "Sim3":
        return Sim3()

    @staticmethod
    def from_matrix(M: np.ndarray) -> "Sim3":
        """(4, 4) or (3, 4) matrix with ``s R`` in the rotation block -> Sim3 (scale = cube root of det)."""
        M = as_4x4(M)
        A = M[:3, :3]
        det = np.linalg.det(A)
        if not det > 0:
            raise ValueError(f"Sim(3) matrix must have a positive determinant, got {det}")
        s = det ** (1.0 / 3.0)
        U, _, Vt = np.linalg.svd(A / s)
        R = U @ Vt
        return Sim3(s, R, M[:3, 3])

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 with ``s R`` in the rotation block."""
        M = np.eye(4)
        M[:3, :3] = self.s * self.R
        M[:3, 3] = self.t
        return M

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transform points (..., 3) -> (..., 3) float64."""
        x = np.asarray(x, dtype=np.float64)
        return self.s * (x @ self.R.T) + self.t

    def inverse(self) -> "Sim3":
        Rt = self.R.T
        return Sim3(1.0 / self.s, Rt, -(Rt @ self.t) / self.s)

    def __matmul__(self, other: "Sim3") -> "Sim3":
        """Composition ``self ∘ other`` (apply ``other`` first)."""
        return Sim3(self.s * other.s, self.R @ other.R, self.s * (self.R @ other.t) + self.t)

    def transform_pose(self, T_b_cam: np.ndarray) -> np.ndarray:
        """Map a rigid camera pose ``T_b_cam`` (4x4, frame b units) to a rigid ``T_a_cam`` in frame a units.

        The rotation becomes ``R @ R_b_cam`` and the camera centre ``s R c + t``; the result is rigid (no
        scale inside), which is what a camera pose in the target frame must be.
        """
        T = as_4x4(T_b_cam)
        out = np.eye(4)
        out[:3, :3] = self.R @ T[:3, :3]
        out[:3, 3] = self.apply(T[:3, 3])
        return out


def umeyama(src: np.ndarray, dst: np.ndarray, weights: Optional[np.ndarray] = None,
            with_scale: bool = True) -> Sim3:
    """Weighted least-squares Sim(3) with ``dst ≈ s R src + t`` (Umeyama 1991, weighted form).

    Args:
        src, dst: (N, 3) corresponding points (N >= 3 non-collinear for a unique rotation).
        weights: (N,) non-negative weights, or None for uniform.
        with_scale: False fixes s = 1 (SE(3) fit).

    Raises:
        ValueError: bad shapes, fewer than 3 points with positive weight, or degenerate (all points equal).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(f"umeyama needs src, dst of shape (N, 3), got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != src.shape[0] or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("umeyama weights must be (N,) finite and non-negative")
    if np.count_nonzero(w > 0) < 3:
        raise ValueError("umeyama needs at least 3 points with positive weight")
    W = w.sum()
    mu_s = (w[:, None] * src).sum(0) / W
    mu_d = (w[:, None] * dst).sum(0) / W
    xs = src - mu_s
    xd = dst - mu_d
    var_s = (w * (xs ** 2).sum(1)).sum() / W
    if var_s < 1e-30:
        raise ValueError("umeyama: source points are all identical (degenerate)")
    C = (w[:, None] * xd).T @ xs / W  # (3,3) cross-covariance dst x src
    U, D, Vt = np.linalg.svd(C)
    E = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        E[2, 2] = -1.0
    R = U @ E @ Vt
    s = float(np.trace(np.diag(D) @ E) / var_s) if with_scale else 1.0
    if not s > 0:
        raise ValueError("umeyama: non-positive scale (degenerate configuration)")
    t = mu_d - s * R @ mu_s
    return Sim3(s, R, t)


@dataclass
class RobustSim3Result:
    """Output of :func:`robust_sim3`.

    Attributes:
        sim3: the fitted transform (dst ≈ sim3.apply(src)).
        residuals: (N,) Euclidean residual of each correspondence (dst units).
        inliers: (N,) bool, residual below the inlier threshold.
        weights: (N,) final IRLS weights (prior weight x Huber weight).
        rms: weighted RMS residual over inliers (dst units).
        iterations: IRLS iterations run.
    """

    sim3: Sim3
    residuals: np.ndarray
    inliers: np.ndarray
    weights: np.ndarray
    rms: float
    iterations: int


def _huber_weights(r: np.ndarray, delta: float) -> np.ndarray:
    w = np.ones_like(r)
    big = r > delta
    w[big] = delta / r[big]
    return w


def ransac_sim3(src: np.ndarray, dst: np.ndarray, threshold: float, iterations: int = 200,
                weights: Optional[np.ndarray] = None, rng: Optional[np.random.Generator] = None,
                with_scale: bool = True, min_iterations: int = 10) -> tuple[Sim3, np.ndarray]:
    """RANSAC over minimal 3-point samples; returns the best model refit on its inliers and the inlier mask.

    ``threshold`` is in dst units; the score is the summed prior weight of inliers. At most ``iterations``
    samples, fewer once the adaptive count for 99.9 % confidence at the best inlier ratio is reached (at
    least ``min_iterations``).
    Raises ValueError when no sample gives a model with at least 3 inliers.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = len(src)
    if n < 3:
        raise ValueError(f"ransac_sim3 needs >= 3 correspondences, got {n}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    rng = rng if rng is not None else np.random.default_rng(0)
    p = w / w.sum() if w.sum() > 0 else None
    best_score, best_mask = -1.0, None
    n_iter, it = int(iterations), 0
    total = float(w.sum()) if w.sum() > 0 else float(n)
    while it < n_iter:
        it += 1
        idx = rng.choice(n, size=3, replace=False, p=p) if np.count_nonzero(w > 0) >= 3 else rng.choice(n, 3, False)
        try:
            S = umeyama(src[idx], dst[idx], with_scale=with_scale)
        except ValueError:
            continue
        r = np.linalg.norm(S.apply(src) - dst, axis=1)
        mask = r < threshold
        score = float(w[mask].sum())
        if score > best_score:
            best_score, best_mask = score, mask
            # adaptive stop (Fischler & Bolles): iterations for 99.9 % confidence at this inlier ratio
            ratio = min(1.0 - 1e-9, score / total)
            if ratio > 0:
                need = np.log(1e-3) / np.log(max(1e-12, 1.0 - ratio ** 3))
                n_iter = min(n_iter, max(min_iterations, int(np.ceil(need))))
    if best_mask is None or np.count_nonzero(best_mask) < 3:
        raise ValueError("ransac_sim3: no model with >= 3 inliers")
    S = umeyama(src[best_mask], dst[best_mask], w[best_mask], with_scale=with_scale)
    return S, best_mask


def robust_sim3(src: np.ndarray, dst: np.ndarray, weights: Optional[np.ndarray] = None,
                huber_delta: Optional[float] = None, iterations: int = 10,
                ransac_iterations: int = 100, ransac_threshold: Optional[float] = None,
                rng: Optional[np.random.Generator] = None, with_scale: bool = True,
                initial: Optional[Sim3] = None) -> RobustSim3Result:
    """Robust weighted Sim(3) (dst ≈ s R src + t): RANSAC start, then IRLS with Huber weights.

    Args:
        src, dst: (N, 3) correspondences (N >= 3).
        weights: (N,) prior (e.g. confidence) weights, or None.
        huber_delta: Huber threshold in dst units; None -> 1.4826 * MAD of the start's residuals
            (at least 1e-9 times the dst extent).
        iterations: maximum IRLS iterations (stops early when the transform no longer changes).
        ransac_iterations: 0 skips RANSAC (start from ``initial`` or the plain weighted Umeyama fit).
        ransac_threshold: RANSAC inlier threshold in dst units; None -> 5 % of the dst RMS extent.
        initial: optional starting transform (skips RANSAC).

    Raises:
        ValueError: bad shapes or a degenerate configuration.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(f"robust_sim3 needs src, dst of shape (N, 3), got {src.shape} and {dst.shape}")
    n = len(src)
    w0 = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w0.shape[0] != n:
        raise ValueError(f"weights must be ({n},), got {w0.shape}")
    extent = float(np.sqrt(((dst - dst.mean(0)) ** 2).sum(1).mean())) + 1e-12
    if initial is not None:
        S = initial
    elif ransac_iterations > 0 and n > 3:
        thr = ransac_threshold if ransac_threshold is not None else 0.05 * extent
        try:
            S, _ = ransac_sim3(src, dst, thr, ransac_iterations, w0, rng, with_scale)
        except ValueError:
            S = umeyama(src, dst, w0, with_scale)
    else:
        S = umeyama(src, dst, w0, with_scale)
    r = np.linalg.norm(S.apply(src) - dst, axis=1)
    if huber_delta is None:
        med = np.median(r)
        huber_delta = max(1.4826 * np.median(np.abs(r - med)) + med, 1e-9 * extent)
    w = w0 * _huber_weights(r, huber_delta)
    it = 0
    for it in range(1, int(iterations) + 1):
        S_new = umeyama(src, dst, w, with_scale)
        r = np.linalg.norm(S_new.apply(src) - dst, axis=1)
        w = w0 * _huber_weights(r, huber_delta)
        change = np.linalg.norm(S_new.matrix() - S.matrix())
        S = S_new
        if change < 1e-10 * (1.0 + np.linalg.norm(S.t)):
            break
    inliers = r < 3.0 * huber_delta
    wi = w[inliers]
    rms = float(np.sqrt((wi * r[inliers] ** 2).sum() / wi.sum())) if wi.sum() > 0 else float("nan")
    return RobustSim3Result(S, r, inliers, w, rms, it)

"""Geometric localization of a query frame against anchors with aligned-feature matches, and a
consistency check between a learned pose and the geometric one.

Query-to-anchor matches (from :mod:`.matching`) become 2D-3D correspondences through the anchors' point
maps (window / world frame, e.g. VGGT's point head or unprojected depth), then
``cv2.solvePnPRansac`` + Levenberg-Marquardt refinement on the inliers gives the query's extrinsics.
This is the classical counterpart to SAIL-Recon's learned localization (arXiv 2508.17972): the two can be
compared with :func:`check_pose` and a disagreeing learned pose flagged or rejected.

Conventions: extrinsics camera-from-world (3x4, ``X_cam = R X_world + t``); K 3x3 in pixels of the query
image; pixels (x, y); points in the anchors' world (window) frame; distances in the same units.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

from selfi_ros.alignment.matching import Matches, match_features

log = logging.getLogger(__name__)


@dataclass
class PnPResult:
    """Result of a PnP localization.

    Attributes:
        extrinsics: (3, 4) float64 camera-from-world, or None on failure.
        inliers: (M,) bool mask over the input correspondences (all False on failure).
        num_matches: number of 2D-3D correspondences given.
        reprojection_rms: RMS reprojection error of the inliers in px (NaN on failure).
        reason: failure reason ("" on success).
    """

    extrinsics: Optional[np.ndarray]
    inliers: np.ndarray
    num_matches: int
    reprojection_rms: float = float("nan")
    reason: str = ""

    @property
    def success(self) -> bool:
        return self.extrinsics is not None

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def solve_pnp(
    points2d: np.ndarray,
    points3d: np.ndarray,
    K: np.ndarray,
    reproj_px: float = 4.0,
    iterations: int = 1000,
    confidence: float = 0.999,
    min_inliers: int = 12,
    seed: int = 0,
) -> PnPResult:
    """Robust PnP: ``cv2.solvePnPRansac`` (EPnP minimal solver) then LM refinement on the inliers.

    Args:
        points2d: (M, 2) pixels (x, y) in the query image.
        points3d: (M, 3) world points.
        K: (3, 3) query intrinsics (pixels); no distortion.
        reproj_px: RANSAC inlier threshold in pixels.
        min_inliers: fewer inliers than this is a failure.
        seed: seed for OpenCV's RNG (RANSAC sampling), for reproducibility.
    Returns:
        :class:`PnPResult`; never raises for degenerate data (the reason says why it failed).
    Raises:
        ValueError: on malformed shapes.
    """
    p2 = np.asarray(points2d, np.float64).reshape(-1, 2)
    p3 = np.asarray(points3d, np.float64).reshape(-1, 3)
    K = np.asarray(K, np.float64)
    if len(p2) != len(p3):
        raise ValueError(f"points2d (M,2) and points3d (M,3) must have equal M, got {len(p2)} and {len(p3)}")
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got {K.shape}")
    M = len(p2)
    none = np.zeros(M, bool)
    finite = np.isfinite(p2).all(1) & np.isfinite(p3).all(1)
    if finite.sum() < max(min_inliers, 6):
        return PnPResult(None, none, M, reason=f"too few finite correspondences ({int(finite.sum())})")
    idx = np.flatnonzero(finite)
    cv2.setRNGSeed(seed)
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            p3[idx], p2[idx], K, None, iterationsCount=iterations, reprojectionError=reproj_px,
            confidence=confidence, flags=cv2.SOLVEPNP_EPNP)
    except cv2.error as e:  # degenerate configurations
        return PnPResult(None, none, M, reason=f"solvePnPRansac failed: {e}")
    if not ok or inl is None or len(inl) < min_inliers:
        return PnPResult(None, none, M, reason=f"too few inliers ({0 if inl is None else len(inl)})")
    inl = idx[inl.reshape(-1)]
    rvec, tvec = cv2.solvePnPRefineLM(p3[inl], p2[inl], K, None, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    E = np.hstack([R, tvec.reshape(3, 1)])
    # final inlier set under the refined pose
    proj = (p3[idx] @ R.T + tvec.reshape(1, 3))
    z = proj[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (proj @ K.T)[:, :2] / z[:, None]
    err = np.linalg.norm(uv - p2[idx], axis=1)
    good = (z > 0) & (err < reproj_px)
    inliers = np.zeros(M, bool)
    inliers[idx[good]] = True
    if inliers.sum() < min_inliers:
        return PnPResult(None, none, M, reason=f"too few inliers after refinement ({int(inliers.sum())})")
    rms = float(np.sqrt(np.mean(err[good] ** 2)))
    return PnPResult(E, inliers, M, reprojection_rms=rms)


@dataclass
class AnchorView:
    """One anchor as the localizer needs it.

    Attributes:
        features: (C, H, W) aligned features (torch tensor).
        points: (H, W, 3) point map in the world (window) frame, same resolution as ``features``.
        valid: optional (H, W) bool of trustworthy points (e.g. confidence above a threshold).
    """

    features: "object"
    points: np.ndarray
    valid: Optional[np.ndarray] = None


def localize_query(
    query_features,
    anchors: Sequence[AnchorView],
    K: np.ndarray,
    stride: int = 4,
    reproj_px: float = 4.0,
    min_inliers: int = 12,
    cycle_px: float = 1.5,
    ratio: Optional[float] = 0.9,
) -> PnPResult:
    """Localize one query frame: match it to every anchor, gather 2D-3D pairs, run :func:`solve_pnp`.

    Args:
        query_features: (C, H, W) aligned features of the query (torch tensor).
        anchors: anchors with features and point maps at the same (H, W) as the query features.
        K: (3, 3) query intrinsics in pixels of the feature resolution.
    Returns:
        :class:`PnPResult` with the query's camera-from-world extrinsics in the anchors' frame.
    """
    p2, p3 = [], []
    for a in anchors:
        pts = np.asarray(a.points)
        if pts.shape[:2] != tuple(query_features.shape[-2:]) or pts.shape[-1] != 3:
            raise ValueError(f"anchor points must be (H, W, 3) with (H, W) = feature size "
                             f"{tuple(query_features.shape[-2:])}, got {pts.shape}")
        m: Matches = match_features(query_features, a.features, stride=stride, cycle_px=cycle_px, ratio=ratio)
        if len(m) == 0:
            continue
        ax = np.clip(np.round(m.uv1[:, 0]).astype(int), 0, pts.shape[1] - 1)
        ay = np.clip(np.round(m.uv1[:, 1]).astype(int), 0, pts.shape[0] - 1)
        ok = np.isfinite(pts[ay, ax]).all(1)
        if a.valid is not None:
            ok &= np.asarray(a.valid)[ay, ax]
        p2.append(m.uv0[ok])
        p3.append(pts[ay, ax][ok])
    if not p2:
        return PnPResult(None, np.zeros(0, bool), 0, reason="no matches to any anchor")
    return solve_pnp(np.concatenate(p2), np.concatenate(p3), K, reproj_px=reproj_px, min_inliers=min_inliers)


# ---------------------------------------------------------------------------------------------------------
@dataclass
class PoseCheck:
    """Outcome of comparing a learned pose with a geometric one.

    Attributes:
        ok: True when both errors are within the thresholds.
        rot_err_deg: angle of ``R_learned R_geometric^T`` in degrees.
        trans_err: distance between the two camera centres (world units).
        reason: "" when ok, else which threshold failed.
    """

    ok: bool
    rot_err_deg: float
    trans_err: float
    reason: str = ""


def pose_difference(E_a: np.ndarray, E_b: np.ndarray) -> tuple[float, float]:
    """Rotation angle (deg) and camera-centre distance between two camera-from-world extrinsics (3|4 x 4)."""
    A = np.asarray(E_a, np.float64)[:3]
    B = np.asarray(E_b, np.float64)[:3]
    Rd = A[:, :3] @ B[:, :3].T
    ang = float(np.degrees(np.arccos(np.clip((np.trace(Rd) - 1) / 2, -1.0, 1.0))))
    ca = -A[:, :3].T @ A[:, 3]
    cb = -B[:, :3].T @ B[:, 3]
    return ang, float(np.linalg.norm(ca - cb))


def check_pose(learned: np.ndarray, geometric: Optional[np.ndarray], max_rot_deg: float = 5.0,
               max_trans: float = 0.1) -> PoseCheck:
    """Flag a learned pose (camera-from-world 3x4) that disagrees with a geometric (PnP) pose.

    ``max_trans`` is in world units (metres only when the map is metric). A missing geometric pose
    (PnP failed) cannot confirm or refute: the result is ok with NaN errors and reason "no geometric pose".
    """
    if geometric is None:
        return PoseCheck(True, float("nan"), float("nan"), "no geometric pose")
    r, t = pose_difference(learned, geometric)
    reasons = []
    if not r <= max_rot_deg:
        reasons.append(f"rotation differs by {r:.2f} deg > {max_rot_deg}")
    if not t <= max_trans:
        reasons.append(f"position differs by {t:.4g} > {max_trans}")
    return PoseCheck(not reasons, r, t, "; ".join(reasons))


@dataclass
class PoseChecker:
    """Thread-safe counter around :func:`check_pose` (for diagnostics: how many poses were rejected).

    Attributes:
        max_rot_deg, max_trans: thresholds (deg, world units).
        checked, flagged, unverified: counters.
    """

    max_rot_deg: float = 5.0
    max_trans: float = 0.1
    checked: int = 0
    flagged: int = 0
    unverified: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, learned: np.ndarray, geometric: Optional[np.ndarray]) -> PoseCheck:
        res = check_pose(learned, geometric, self.max_rot_deg, self.max_trans)
        with self._lock:
            self.checked += 1
            if geometric is None:
                self.unverified += 1
            elif not res.ok:
                self.flagged += 1
                log.warning("learned pose rejected by the geometric check: %s", res.reason)
        return res

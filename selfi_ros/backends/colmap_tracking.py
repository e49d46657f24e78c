"""Cheap per-frame pose of the colmap backend: KLT tracking of the window's observed 3D points + PnP RANSAC.

A frame that is not a keyframe needs no SIFT: the 2D positions of the window's 3D points in a nearby posed
image (an anchor, from COLMAP's own observations, or the last tracked frame) are followed into the new
image with pyramidal Lucas-Kanade optical flow (``cv2.calcOpticalFlowPyrLK``; Bouguet, "Pyramidal
Implementation of the Lucas Kanade Feature Tracker", Intel 2000), kept only where the backward flow returns
to the start (forward-backward check; Kalal et al., "Forward-Backward Error", ICPR 2010), and the pose
comes from :func:`absolute_pose` (COLMAP's P3P in LO-RANSAC + non-linear refinement,
``pycolmap.estimate_and_refine_absolute_pose``). When too few tracks survive, the caller falls back to
SIFT matching against the window's descriptors and re-seeds the tracker from its inliers.

Coordinates: the tracker works in OpenCV pixels (centre of the top-left pixel at (0, 0));
:func:`absolute_pose` takes COLMAP pixels (+0.5) like every pycolmap estimator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


def k_to_colmap_params(K: np.ndarray) -> list[float]:
    """OpenCV K -> COLMAP PINHOLE params ``fx, fy, cx, cy`` (pixel-centre convention +0.5)."""
    return [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]) + 0.5, float(K[1, 2]) + 0.5]


@dataclass
class PoseFit:
    """A PnP RANSAC result: ``extrinsics`` (3, 4) float64 camera-from-window, ``inlier_mask`` (n,) bool
    over the given correspondences, ``num_inliers``; ``query_index`` (n,) int64 keypoint of each
    correspondence when it came from descriptor matching (else None)."""

    extrinsics: np.ndarray
    inlier_mask: np.ndarray
    num_inliers: int
    query_index: Optional[np.ndarray] = None


def absolute_pose(xy_colmap: np.ndarray, xyz: np.ndarray, K: np.ndarray, width: int, height: int,
                  max_error_px: float, seed: int, max_trials: int = 1000) -> tuple[Optional[PoseFit], str]:
    """Camera-from-window pose from 2D-3D correspondences with fixed PINHOLE intrinsics ``K``.

    Args:
        xy_colmap: (n, 2) float64 image points, COLMAP pixels.
        xyz: (n, 3) float64 window-frame points.
        K: (3, 3) OpenCV intrinsics; width, height: image size (px).
        max_error_px: RANSAC reprojection threshold (px).
        seed: RANSAC random seed.
        max_trials: RANSAC iterations at most (COLMAP's 10000 at confidence 0.99999 spends ~20 ms on a frame
            that cannot be localized; 1000 at 0.999 still finds a model at 25 % inliers with margin: P3P
            needs about 440 trials there).
    Returns:
        ``(PoseFit, "")`` or ``(None, reason)`` (too few points, degenerate input, no model).
    Source: ``pycolmap.estimate_and_refine_absolute_pose`` (COLMAP ``src/colmap/estimators/pose.cc``).
    """
    import pycolmap as pc

    if len(xy_colmap) < 4:
        return None, f"{len(xy_colmap)} correspondences"
    camera = pc.Camera(model="PINHOLE", width=int(width), height=int(height), params=k_to_colmap_params(K))
    est = pc.AbsolutePoseEstimationOptions()
    est.ransac.max_error = float(max_error_px)
    est.ransac.max_num_trials = int(max_trials)
    est.ransac.confidence = 0.999
    if hasattr(est.ransac, "random_seed"):
        est.ransac.random_seed = int(seed)
    try:
        ans = pc.estimate_and_refine_absolute_pose(np.ascontiguousarray(xy_colmap, dtype=np.float64),
                                                  np.ascontiguousarray(xyz, dtype=np.float64), camera, est)
    except Exception as exc:  # noqa: BLE001 - pycolmap raises on degenerate input
        return None, f"absolute pose failed: {exc}"
    if not ans:
        return None, f"absolute pose RANSAC found no model ({len(xy_colmap)} correspondences)"
    mask = np.asarray(ans["inlier_mask"], dtype=bool).reshape(-1)
    return PoseFit(np.asarray(ans["cam_from_world"].matrix(), dtype=np.float64), mask, int(ans["num_inliers"])), ""


@dataclass
class TrackSeed:
    """A posed image the tracker can start from.

    Attributes:
        stamp_ns: its stamp; grey: (H, W) uint8 image; xy: (M, 2) float32 OpenCV pixels of window points;
        rows: (M,) int64 rows of those points in the window's point array; tracked: True for a tracked frame
        (False: an anchor, whose positions are COLMAP's own keypoints).
    """

    stamp_ns: int
    grey: np.ndarray
    xy: np.ndarray
    rows: np.ndarray
    tracked: bool = False


class KltTracker:
    """KLT + PnP against one window's points (see module docstring).

    Args:
        window_px: KLT search window side (px); levels: pyramid levels above the image;
        fb_max_px: forward-backward error above which a track is dropped (px);
        max_points: most tracks followed per frame (the best-spread subset by point row order);
        max_gap_s: a seed older (or newer) than this is not tracked from (s).

    Attributes:
        seeds: the window's anchors (set by :meth:`reset_window`) plus the last tracked frame.
    """

    def __init__(self, window_px: int = 21, levels: int = 3, fb_max_px: float = 1.0, max_points: int = 400,
                 max_gap_s: float = 1.0) -> None:
        self.window_px = int(window_px)
        self.levels = int(levels)
        self.fb_max_px = float(fb_max_px)
        self.max_points = int(max_points)
        self.max_gap_ns = int(max_gap_s * 1e9)
        self.anchor_seeds: list[TrackSeed] = []
        self.last: Optional[TrackSeed] = None

    def reset_window(self, seeds: list[TrackSeed]) -> None:
        """Start over on a new window: its anchors' observations become the seeds; the last tracked frame
        (in the old window's frame) is forgotten."""
        self.anchor_seeds = list(seeds)
        self.last = None

    def clear(self) -> None:
        self.anchor_seeds = []
        self.last = None

    def nearest_seed(self, stamp_ns: int, shape: tuple) -> Optional[TrackSeed]:
        """The seed closest in time to ``stamp_ns`` with an image of ``shape`` within ``max_gap_s``."""
        cands = [s for s in [*self.anchor_seeds, self.last] if s is not None and s.grey.shape == shape
                 and abs(int(s.stamp_ns) - int(stamp_ns)) <= self.max_gap_ns and len(s.xy)]
        if not cands:
            return None
        return min(cands, key=lambda s: (abs(int(s.stamp_ns) - int(stamp_ns)), s.tracked))

    def track(self, seed: TrackSeed, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Follow ``seed``'s points into ``grey``: (k, 2) float32 OpenCV pixels and (k,) int64 rows of the
        tracks that pass the status and forward-backward checks."""
        import cv2

        xy, rows = seed.xy, seed.rows
        if len(xy) > self.max_points:  # an even subsample keeps the spread of the points
            pick = np.linspace(0, len(xy) - 1, self.max_points).astype(np.int64)
            xy, rows = xy[pick], rows[pick]
        p0 = np.ascontiguousarray(xy, dtype=np.float32).reshape(-1, 1, 2)
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
        kw = dict(winSize=(self.window_px, self.window_px), maxLevel=self.levels, criteria=crit)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(seed.grey, grey, p0, None, **kw)
        if p1 is None:
            return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
        p0b, st2, _ = cv2.calcOpticalFlowPyrLK(grey, seed.grey, p1, None, **kw)
        fb = np.linalg.norm((p0b - p0).reshape(-1, 2), axis=1)
        h, w = grey.shape
        q = p1.reshape(-1, 2)
        ok = ((st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & (fb < self.fb_max_px)
              & (q[:, 0] >= 0) & (q[:, 1] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] <= h - 1))
        return q[ok].astype(np.float32), rows[ok]

"""Chaining a new window into the map frame with a Sim(3) (each window has its own unknown scale).

Inputs are the frames whose poses are known both in the map (from the previous window, or from
localization against it) and in the new window (as its anchors), and, when the backends give point
maps, the same pixels of those shared images seen by both windows (pixel-aligned correspondences: a
dense, well-conditioned constraint on scale and rotation).

Method:
1. Pose start: rotation = chordal L2 mean of ``R_map_cam_i R_win_cam_i^T`` (weighted, projected to
   SO(3) by SVD); scale and translation by weighted least squares on camera centres given that rotation
   (needs >= 2 distinct centres).
2. With >= ``min_points`` point pairs: a RANSAC Sim(3) on the points alone competes with the pose start
   (more weighted inliers wins, so one wrong shared pose cannot spoil the start); from the winner, robust
   Sim(3) (weighted Umeyama, Huber IRLS) on points + camera centres, weights = confidence.
The residual reported is the weighted RMS distance (map units) of the shared camera centres after the fit
(and separately that of the points).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from selfi_ros.geometry.sim3 import Sim3, ransac_sim3, robust_sim3, umeyama


class ChainingError(RuntimeError):
    """Not enough shared information to fix the Sim(3) of a window."""


@dataclass
class SharedFrame:
    """One frame known in both the map and the new window.

    Attributes:
        T_map_cam: (4, 4) rigid camera-to-map pose (map units).
        T_win_cam: (4, 4) rigid camera-to-window pose (window units).
        weight: confidence weight (>= 0).
    """

    T_map_cam: np.ndarray
    T_win_cam: np.ndarray
    weight: float = 1.0


@dataclass
class ChainResult:
    """Output of :func:`chain_window`.

    Attributes:
        T_map_window: Sim(3) window -> map.
        residual: weighted RMS camera-centre residual after the fit (map units).
        point_residual: RMS residual of the inlier point pairs (map units), NaN without points.
        rotation_residual_deg: weighted mean angle between mapped and known shared rotations (deg).
        num_frames: shared frames used.
        num_points: point pairs used.
        inlier_fraction: fraction of point pairs within 3 Huber widths (NaN without points).
        method: "poses" or "points+poses".
    """

    T_map_window: Sim3
    residual: float
    point_residual: float
    rotation_residual_deg: float
    num_frames: int
    num_points: int
    inlier_fraction: float
    method: str


def _rotation_mean(Rs: np.ndarray, w: np.ndarray) -> np.ndarray:
    M = (w[:, None, None] * Rs).sum(0)
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def fit_from_poses(shared: Sequence[SharedFrame]) -> Sim3:
    """Sim(3) from shared poses alone (step 1 of the module docstring).

    Raises:
        ChainingError: fewer than 2 frames with positive weight, or coincident camera centres.
    """
    w = np.array([max(0.0, float(f.weight)) for f in shared])
    if np.count_nonzero(w > 0) < 2:
        raise ChainingError(f"need >= 2 shared frames with positive weight, got {np.count_nonzero(w > 0)}")
    Rm = np.array([f.T_map_cam[:3, :3] for f in shared])
    Rw = np.array([f.T_win_cam[:3, :3] for f in shared])
    R = _rotation_mean(Rm @ np.swapaxes(Rw, 1, 2), w)
    cm = np.array([f.T_map_cam[:3, 3] for f in shared])
    cw = np.array([f.T_win_cam[:3, 3] for f in shared])
    W = w.sum()
    mu_m = (w[:, None] * cm).sum(0) / W
    mu_w = (w[:, None] * cw).sum(0) / W
    xw = (cw - mu_w) @ R.T
    xm = cm - mu_m
    den = (w * (xw ** 2).sum(1)).sum()
    if den < 1e-18 * (1.0 + (w * (cw ** 2).sum(1)).sum()):
        raise ChainingError("shared camera centres coincide in the window: scale unobservable")
    s = (w * (xw * xm).sum(1)).sum() / den
    if not s > 0:
        raise ChainingError(f"shared camera centres give a non-positive scale ({s:.3g})")
    return Sim3(s, R, mu_m - s * R @ mu_w)


def _best_start(pose_start: Optional[Sim3], mp: np.ndarray, wp: np.ndarray, pw: np.ndarray,
                rng: np.random.Generator, iterations: int = 64, max_points: int = 400) -> Sim3:
    """The better of the pose start and a RANSAC start on the points alone (more weighted inliers within
    5 % of the map points' RMS extent); the pose start is kept on ties."""
    if len(mp) > max_points:  # RANSAC and scoring on a random subset (cost independent of N)
        sub = rng.choice(len(mp), max_points, replace=False)
        mp, wp, pw = mp[sub], wp[sub], pw[sub]
    extent = float(np.sqrt(((mp - mp.mean(0)) ** 2).sum(1).mean())) + 1e-12
    thr = 0.05 * extent
    cands = [pose_start] if pose_start is not None else []
    try:
        cands.append(ransac_sim3(wp, mp, thr, iterations, pw, rng)[0])
    except ValueError:
        pass
    if not cands:
        return umeyama(wp, mp, pw)
    scores = [float(pw[np.linalg.norm(S.apply(wp) - mp, axis=1) < thr].sum()) for S in cands]
    return cands[int(np.argmax(scores))]


def chain_window(shared: Sequence[SharedFrame], map_points: Optional[np.ndarray] = None,
                 win_points: Optional[np.ndarray] = None, point_weights: Optional[np.ndarray] = None,
                 min_points: int = 30, centre_weight: float = 10.0,
                 rng: Optional[np.random.Generator] = None) -> ChainResult:
    """Sim(3) ``T_map_window`` from shared frames and (optionally) pixel-aligned point pairs.

    Args:
        shared: frames known in both map and window (see :class:`SharedFrame`).
        map_points, win_points: (N, 3) the same surface samples in map and window coordinates.
        point_weights: (N,) confidences (>= 0) or None.
        min_points: fewer pairs than this -> poses only.
        centre_weight: weight of a shared camera centre relative to a point of weight 1, times
            ``N / 100`` so that centres are not swamped by thousands of points.

    Raises:
        ChainingError: when neither poses nor points fix the transform.
    """
    shared = list(shared)
    rng = rng if rng is not None else np.random.default_rng(0)
    start: Optional[Sim3] = None
    start_err = ""
    try:
        start = fit_from_poses(shared)
    except ChainingError as e:
        start_err = str(e)
    n_pts = 0 if map_points is None or win_points is None else len(map_points)
    method = "poses"
    point_res = float("nan")
    inl_frac = float("nan")
    if n_pts >= min_points:
        mp = np.asarray(map_points, dtype=np.float64).reshape(-1, 3)
        wp = np.asarray(win_points, dtype=np.float64).reshape(-1, 3)
        pw = np.ones(n_pts) if point_weights is None else np.clip(np.asarray(point_weights, float), 0, None)
        ok = np.isfinite(mp).all(1) & np.isfinite(wp).all(1) & np.isfinite(pw)
        mp, wp, pw = mp[ok], wp[ok], pw[ok]
        cm = np.array([f.T_map_cam[:3, 3] for f in shared]).reshape(-1, 3)
        cw = np.array([f.T_win_cam[:3, 3] for f in shared]).reshape(-1, 3)
        cwt = np.array([max(0.0, f.weight) for f in shared]) * centre_weight * max(1.0, len(mp) / 100.0)
        src = np.vstack([wp, cw])
        dst = np.vstack([mp, cm])
        wts = np.concatenate([pw, cwt])
        if len(mp) >= min_points:
            try:
                init = _best_start(start, mp, wp, pw, rng)
                fit = robust_sim3(src, dst, wts, initial=init, ransac_iterations=0, rng=rng)
                start = fit.sim3
                method = "points+poses"
                pi = fit.inliers[: len(mp)]
                inl_frac = float(pi.mean())
                point_res = float(np.sqrt(np.mean(fit.residuals[: len(mp)][pi] ** 2))) if pi.any() else float("nan")
            except ValueError as e:
                start_err = start_err or str(e)
    if start is None:
        raise ChainingError(f"cannot chain window: {start_err or 'no shared frames or points'}")
    S = start
    w = np.array([max(0.0, f.weight) for f in shared]) if shared else np.zeros(0)
    if len(shared) and w.sum() > 0:
        cm = np.array([f.T_map_cam[:3, 3] for f in shared])
        cw = np.array([f.T_win_cam[:3, 3] for f in shared])
        r = np.linalg.norm(S.apply(cw) - cm, axis=1)
        res = float(np.sqrt((w * r ** 2).sum() / w.sum()))
        ang = []
        for f in shared:
            dR = (S.R @ f.T_win_cam[:3, :3]).T @ f.T_map_cam[:3, :3]
            ang.append(np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1))))
        rot_res = float((w * np.array(ang)).sum() / w.sum())
    else:
        res, rot_res = float("nan"), float("nan")
    return ChainResult(S, res, point_res, rot_res, len(shared), n_pts, inl_frac, method)


__all__ = ["ChainingError", "SharedFrame", "ChainResult", "chain_window", "fit_from_poses", "umeyama"]

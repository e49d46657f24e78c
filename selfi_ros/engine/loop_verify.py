"""Loop hypotheses and their geometric verification (the part of :mod:`selfi_ros.engine.loop_closure` that
needs no engine state): one keyframe seen in two windows (:class:`LoopObservation`), the test of a group
of them (:func:`verify_loop`, see :mod:`selfi_ros.engine.loop_closure` for the tests and the method's
source), the bounded grouping of hypotheses (:class:`LoopDetector`) and the acceptance of a single
localization (:func:`supported`, :func:`support`, :func:`localized_pose`)."""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from selfi_ros.geometry.se3 import invert_transform
from selfi_ros.geometry.sim3 import Sim3
from selfi_ros.engine.chaining import ChainingError, SharedFrame, fit_from_poses
from selfi_ros.engine.types import LocalizationResult


@dataclass
class LoopObservation:
    """One keyframe seen in two windows.

    Attributes:
        stamp_ns: the keyframe's stamp.
        T_cand_cam: (4, 4) rigid camera-to-candidate-window pose (candidate window units).
        T_cur_cam: (4, 4) rigid camera pose on the current side: in the map frame of the current window's
            segment (map units), so that keyframes of successive windows form one group.
        inliers: correspondences behind ``T_cand_cam``.
        window_id: the old window ``T_cand_cam`` refers to when it differs from the group's reference window
            (-1: the reference window itself); moved into the reference frame before verification.
    """

    stamp_ns: int
    T_cand_cam: np.ndarray
    T_cur_cam: np.ndarray
    inliers: int = 0
    window_id: int = -1


@dataclass
class LoopCheck:
    """Outcome of :func:`verify_loop`.

    Attributes:
        accepted: the loop passed every test.
        T_cand_cur: the fitted Sim(3) current window -> candidate window (None when no fit).
        reason: why it was rejected ("" when accepted).
        residual_ratio: RMS centre residual / the reference length (scene depth or keyframe spread).
        rotation_deg: mean rotation residual (deg).
        correction_ratio: mean centre correction / path length (NaN without a prediction).
        correction_deg: rotation of the correction (deg, NaN without a prediction).
        sigmas: (rotation rad, translation, log scale) standard deviations of the fit, from its residuals
            (for the loop edge's weight in the pose graph).
        wait: not rejected, not accepted: the keyframes are too close together for a well-conditioned
            Sim(3) (spread below ``min_spread`` x the reference length); more keyframes are needed.
    """

    accepted: bool
    T_cand_cur: Optional[Sim3]
    reason: str = ""
    residual_ratio: float = float("nan")
    rotation_deg: float = float("nan")
    correction_ratio: float = float("nan")
    correction_deg: float = float("nan")
    sigmas: Optional[tuple] = None
    wait: bool = False


def _angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def verify_loop(observations: Sequence[LoopObservation], min_keyframes: int = 3, max_residual: float = 0.05,
                max_rotation_deg: float = 2.0, predicted: Optional[Sim3] = None, path_length: float = 0.0,
                max_correction: float = 0.3, max_correction_deg: float = 30.0, scale_ref: float = 0.0,
                min_spread: float = 0.0) -> LoopCheck:
    """Geometric verification of a loop hypothesis (module docstring, tests 1 and 2).

    Args:
        observations: keyframes of one (current, candidate) window pair; one per stamp is used (the last).
        min_keyframes: distinct keyframes needed (>= 2).
        max_residual, max_rotation_deg: agreement bounds (ratio to the centres' spread; deg).
        predicted: the current estimate of ``T_cand_cur`` (None: windows of different segments).
        path_length: path length between the two windows in candidate-window units.
        max_correction, max_correction_deg: plausibility bounds of the correction.
        scale_ref: reference length of the residual test (candidate-window units, e.g. the scene depth);
            the keyframes' spread when larger.
        min_spread: RMS spread of the keyframe centres needed, as a fraction of ``scale_ref`` (below it the
            Sim(3)'s scale is ill-conditioned: ``wait``).
    """
    by_stamp = {int(o.stamp_ns): o for o in observations}
    obs = list(by_stamp.values())
    if len(obs) < max(2, int(min_keyframes)):
        return LoopCheck(False, None, f"{len(obs)} keyframes, need {max(2, int(min_keyframes))}")
    cc = np.array([o.T_cand_cam[:3, 3] for o in obs], np.float64)
    spread = float(np.sqrt(((cc - cc.mean(0)) ** 2).sum(1).mean()))
    if spread < float(min_spread) * float(scale_ref):  # before the fit: its scale is noise (even negative)
        return LoopCheck(False, None, f"keyframe spread {spread:.3g} below {min_spread} x {scale_ref:.3g}", wait=True)
    shared = [SharedFrame(np.asarray(o.T_cand_cam, np.float64), np.asarray(o.T_cur_cam, np.float64), 1.0) for o in obs]
    try:
        M = fit_from_poses(shared)
    except ChainingError as e:
        return LoopCheck(False, None, f"no Sim(3) fit: {e}")
    cw = M.apply(np.array([o.T_cur_cam[:3, 3] for o in obs], np.float64))
    res = float(np.sqrt(((cw - cc) ** 2).sum(1).mean()))
    ratio = res / max(spread, float(scale_ref), 1e-12)
    rot = float(np.mean([_angle_deg((M.R @ o.T_cur_cam[:3, :3]).T @ o.T_cand_cam[:3, :3]) for o in obs]))
    chk = LoopCheck(False, M, "", ratio, rot)
    if not (ratio <= max_residual and rot <= max_rotation_deg):
        chk.reason = (f"keyframes disagree: centre residual {ratio:.3g} x depth (max {max_residual}), rotation "
                      f"{rot:.3g} deg (max {max_rotation_deg})")
        return chk
    if predicted is not None:
        cp = predicted.apply(np.array([o.T_cur_cam[:3, 3] for o in obs], np.float64))
        corr = float(np.linalg.norm(cw - cp, axis=1).mean())
        E = M @ predicted.inverse()
        chk.correction_ratio = corr / max(path_length, spread, 1e-12)
        chk.correction_deg = _angle_deg(E.R)
        ds = abs(float(np.log(E.s)))
        if not (chk.correction_ratio <= max_correction and chk.correction_deg <= max_correction_deg
                and ds <= np.log1p(max_correction)):
            chk.reason = (f"implausible correction: centres move {chk.correction_ratio:.3g} x path length (max "
                          f"{max_correction}), rotation {chk.correction_deg:.3g} deg (max {max_correction_deg}), "
                          f"scale x{E.s:.3g}")
            return chk
    # standard deviations of the fit from its residuals, conservatively: a residual of few keyframes
    # underestimates the noise (7 parameters fitted), and the scale of a centre fit is only as good as
    # the centres' noise over their spread
    inflate = 3.0 * np.sqrt(3.0 * len(obs) / max(1.0, 3.0 * len(obs) - 7.0))
    chk.sigmas = (inflate * np.radians(rot), inflate * res, inflate * res / max(spread, 1e-12))
    chk.accepted = True
    return chk


class LoopDetector:
    """Loop hypotheses grouped by (current map segment, candidate window), bounded: at most ``4 * min_keyframes``
    per pair (newest kept) and pairs not extended during the last ``max_age`` keyframes are dropped."""

    def __init__(self, min_keyframes: int = 3, max_age: int = 10) -> None:
        self.min_keyframes = max(2, int(min_keyframes))
        self.max_age = int(max_age)
        self.clear()

    def clear(self) -> None:
        self._groups: dict[tuple[int, int], collections.deque] = {}
        self._last: dict[tuple[int, int], int] = {}
        self._tick = 0

    def tick(self) -> None:
        """One keyframe passed: drop stale pairs."""
        self._tick += 1
        for k in [k for k, t in self._last.items() if self._tick - t > self.max_age]:
            self._groups.pop(k, None)
            self._last.pop(k, None)

    def add(self, cur: int, cand: int, obs: LoopObservation) -> list[LoopObservation]:
        """Add a hypothesis; returns the pair's group (one per stamp: the one with most inliers, time order)."""
        key = (int(cur), int(cand))
        g = self._groups.setdefault(key, collections.deque(maxlen=4 * self.min_keyframes))
        g.append(obs)
        self._last[key] = self._tick
        best: dict[int, LoopObservation] = {}
        for o in g:
            if o.stamp_ns not in best or o.inliers >= best[o.stamp_ns].inliers:
                best[o.stamp_ns] = o
        return sorted(best.values(), key=lambda o: o.stamp_ns)

    def reference(self, cur: int, near: set) -> Optional[int]:
        """The candidate (reference) window of an existing group of segment ``cur`` among ``near`` (most
        recently extended first), or None."""
        keys = [k for k in self._groups if k[0] == int(cur) and k[1] in near]
        return max(keys, key=lambda k: self._last[k])[1] if keys else None

    def discard(self, cur: int, cand: int) -> None:
        self._groups.pop((int(cur), int(cand)), None)
        self._last.pop((int(cur), int(cand)), None)


def supported(r: LocalizationResult, min_inliers: int, min_confidence: float) -> bool:
    """Whether a successful localization is trusted for a loop, a revisit or a relocalization: at least
    ``min_inliers`` correspondences; a backend without correspondences (``inliers`` 0, see
    :class:`~selfi_ros.engine.types.LocalizationResult`) by its confidence (>= ``min_confidence``) instead."""
    if int(r.inliers) > 0:
        return int(r.inliers) >= int(min_inliers)
    return bool(r.confidence >= min_confidence)


def support(r: LocalizationResult) -> tuple:
    """Sort key of competing localizations: more correspondences, then more confidence."""
    return (int(r.inliers), float(r.confidence))


def localized_pose(r: LocalizationResult) -> Optional[np.ndarray]:
    """(4, 4) camera-to-window pose of a successful localization, None for a failed or non-finite one."""
    if not isinstance(r, LocalizationResult) or r.extrinsics is None:
        return None
    E = np.asarray(r.extrinsics, np.float64)
    if not np.all(np.isfinite(E)):
        return None
    return invert_transform(E)

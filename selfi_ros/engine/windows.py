"""Window policy: when to start a new window of anchors, and which keyframes become its anchors.

SAIL-Recon (Deng et al., 2025) reconstructs a scene from a set of anchor images and localizes every
other image against them; over a stream we keep a *sequence* of windows, each sharing ``overlap``
anchors with the previous one (for Sim(3) chaining, as in VGGT-SLAM's overlapping submaps).

Anchor choice: the shared (overlap) anchors are the *most recent* previous anchors: they were reconstructed
last, so they are the ones most likely to see what the new keyframes see (after a gap in the stream -
dropped frames, a fast turn - the oldest anchors share nothing with the new keyframes and a backend such
as COLMAP cannot register them). The new anchors are chosen among the keyframes localized since the last
window by farthest-point sampling on camera centre + viewing direction (coverage), always keeping the
most recent keyframe; keyframes without a pose fall back to uniform-in-time choice.

When a window fails, the engine (:class:`selfi_ros.engine.recovery.WindowRecovery`) does not retry the
same anchor set: it falls back to other overlap frames (recently localized keyframes with good
confidence, :meth:`WindowPolicy.select_with_other_overlap`), then to a fresh window of the newest
keyframes (:meth:`WindowPolicy.select_fresh`) chained through their localized poses, or a new map
segment (a discontinuity).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from selfi_ros.geometry.camera import project
from selfi_ros.engine.config import EngineConfig
from selfi_ros.engine.keyframes import Keyframe


@dataclass
class WindowTrigger:
    """Why a new window is (or is not) needed.

    Attributes:
        new_window: start one now.
        reason: "max_keyframes", "low_confidence", "low_overlap", or "" when not needed.
    """

    new_window: bool
    reason: str = ""


class WindowPolicy:
    """Window size / overlap parameters and the new-window rule.

    Every argument left at None takes the value of the matching :class:`~selfi_ros.engine.config.EngineConfig`
    field (the one source of defaults); :meth:`from_config` takes them all from a config.

    Args:
        window_size: anchors per window (>= 2); ``EngineConfig.window_size``.
        overlap: anchors shared with the previous window (0 <= overlap < window_size); ``window_overlap``.
        max_keyframes: after this many keyframes localized against one window, start a new one;
            ``window_max_keyframes``.
        min_confidence: a keyframe localized with lower confidence triggers a new window;
            ``min_localization_confidence``.
        min_overlap: a keyframe whose image is covered by the anchors' points on less than this fraction
            of an 8x8 grid triggers a new window (0 disables); ``window_min_anchor_coverage``.
        min_new_keyframes: a confidence/overlap trigger waits until this many new keyframes exist
            (0: half the new anchors of a window, at least 1).

    Raises:
        ValueError: window_size < 2 or overlap outside [0, window_size).
    """

    def __init__(self, window_size: Optional[int] = None, overlap: Optional[int] = None,
                 max_keyframes: Optional[int] = None, min_confidence: Optional[float] = None,
                 min_overlap: Optional[float] = None, min_new_keyframes: int = 0):
        d = EngineConfig()
        window_size = d.window_size if window_size is None else window_size
        overlap = d.window_overlap if overlap is None else overlap
        max_keyframes = d.window_max_keyframes if max_keyframes is None else max_keyframes
        min_confidence = d.min_localization_confidence if min_confidence is None else min_confidence
        min_overlap = d.window_min_anchor_coverage if min_overlap is None else min_overlap
        if window_size < 2:
            raise ValueError(f"window_size must be >= 2, got {window_size}")
        if not 0 <= overlap < window_size:
            raise ValueError(f"window_overlap must be in [0, window_size), got {overlap}")
        self.window_size = int(window_size)
        self.overlap = int(overlap)
        self.max_keyframes = max(1, int(max_keyframes))
        self.min_confidence = float(min_confidence)
        self.min_overlap = float(min_overlap)
        self.min_new_keyframes = int(min_new_keyframes) if min_new_keyframes > 0 else max(
            1, (self.window_size - self.overlap + 1) // 2)

    @classmethod
    def from_config(cls, config: EngineConfig) -> "WindowPolicy":
        """The policy of an engine configuration (window_size, window_overlap, window_max_keyframes,
        min_localization_confidence, window_min_anchor_coverage)."""
        return cls(config.window_size, config.window_overlap, config.window_max_keyframes,
                   config.min_localization_confidence, config.window_min_anchor_coverage)

    def may_trigger(self, new_keyframes: int) -> bool:
        """False when :meth:`trigger` is False whatever the last localization: fewer than both
        ``min_new_keyframes`` and ``max_keyframes`` keyframes localized against the current window."""
        return new_keyframes >= min(self.min_new_keyframes, self.max_keyframes)

    def trigger(self, new_keyframes: int, last_confidence: float, last_overlap: float) -> WindowTrigger:
        """Rule for a new window after a keyframe was localized.

        Args:
            new_keyframes: keyframes localized against the current window (including the last one).
            last_confidence: confidence of the last keyframe's localization (NaN if failed).
            last_overlap: anchor coverage of the last keyframe in [0, 1] (NaN if unknown).
        """
        if new_keyframes >= self.max_keyframes:
            return WindowTrigger(True, "max_keyframes")
        if not self.may_trigger(new_keyframes):
            return WindowTrigger(False)
        if not (last_confidence >= self.min_confidence):  # also NaN
            return WindowTrigger(True, "low_confidence")
        if self.min_overlap > 0 and np.isfinite(last_overlap) and last_overlap < self.min_overlap:
            return WindowTrigger(True, "low_overlap")
        return WindowTrigger(False)

    def select_anchors(self, previous: Sequence[Keyframe], candidates: Sequence[Keyframe]) -> list[Keyframe]:
        """Anchors for the next window: ``overlap`` from ``previous`` + the rest from ``candidates``.

        Args:
            previous: the current window's anchors (with map poses), time order.
            candidates: keyframes since that window (time order; poses when localized).

        Returns:
            Up to ``window_size`` keyframes in time order: the most recent ``overlap`` previous anchors and
            up to ``window_size - overlap`` new ones chosen for coverage. With fewer candidates the window
            is smaller: it is not filled with older previous anchors, which would stretch it back in time
            (less shared content, and a backend like COLMAP then fails to register the oldest).
        """
        candidates = list(candidates)
        n_new = min(len(candidates), self.window_size - min(self.overlap, len(previous)))
        new = select_for_coverage(candidates, n_new, keep_last=True)
        old = select_recent(list(previous), min(len(previous), self.overlap))
        return _time_order(old + new)

    def select_with_other_overlap(self, previous: Sequence[Keyframe], candidates: Sequence[Keyframe],
                                  exclude_stamps: Sequence[int] = (), min_confidence: Optional[float] = None
                                  ) -> list[Keyframe]:
        """Anchors for a retry after a failed window, with *other* overlap frames.

        The new anchors are chosen as in :meth:`select_anchors`; the ``overlap`` shared frames are the most
        recent candidates not among them and not in ``exclude_stamps`` that were localized with confidence
        >= ``min_confidence`` (default: the policy's ``min_confidence``). Such frames are known in the map,
        so the window can be chained through them; older previous anchors are not used (they see even
        less of the new keyframes than the ones that failed). Returns [] when no such frame exists.
        """
        mc = self.min_confidence if min_confidence is None else float(min_confidence)
        candidates = list(candidates)
        excl = set(int(s) for s in exclude_stamps)
        n_new = min(len(candidates), self.window_size - self.overlap)
        new = select_for_coverage(candidates, n_new, keep_last=True)
        chosen = {id(k) for k in new}
        pool = [k for k in candidates
                if id(k) not in chosen and k.stamp_ns not in excl and k.T_map_cam is not None and k.confidence >= mc]
        if not pool:
            return []
        old = select_recent(_time_order(pool), min(len(pool), self.window_size - len(new)))
        return _time_order(old + new)

    def select_fresh(self, candidates: Sequence[Keyframe]) -> list[Keyframe]:
        """The most recent ``window_size`` keyframes (time order): a window without previous anchors,
        for a fresh start after failures (contiguous recent keyframes share the most content)."""
        return list(candidates)[-self.window_size:]


def _time_order(kfs: Sequence[Keyframe]) -> list[Keyframe]:
    out = {id(k): k for k in kfs}
    return sorted(out.values(), key=lambda k: k.stamp_ns)


def select_recent(kfs: Sequence[Keyframe], n: int) -> list[Keyframe]:
    """The ``n`` most recent of ``kfs`` (time order in, time order out)."""
    kfs = list(kfs)
    return kfs[len(kfs) - n:] if n > 0 else []


def _pose_features(kfs: Sequence[Keyframe]) -> Optional[np.ndarray]:
    if not kfs or any(k.T_map_cam is None for k in kfs):
        return None
    C = np.array([k.T_map_cam[:3, 3] for k in kfs])
    D = np.array([k.T_map_cam[:3, 2] for k in kfs])  # optical axis in map
    scale = np.sqrt(((C - C.mean(0)) ** 2).sum(1).mean()) + 1e-9
    return np.hstack([C / scale, 0.5 * D])


def select_for_coverage(kfs: Sequence[Keyframe], n: int, keep_last: bool = True) -> list[Keyframe]:
    """Pick ``n`` keyframes spreading camera centres and viewing directions (farthest-point sampling).

    Starts from the most recent keyframe (``keep_last``); falls back to uniform-in-time when some
    keyframe has no pose. Returns them in time order.
    """
    kfs = list(kfs)
    if n <= 0:
        return []
    if n >= len(kfs):
        return kfs
    F = _pose_features(kfs)
    if F is None:
        idx = np.unique(np.round(np.linspace(len(kfs) - 1, 0, n)).astype(int))
        return [kfs[i] for i in sorted(idx)]
    chosen = [len(kfs) - 1 if keep_last else 0]
    d = np.linalg.norm(F - F[chosen[0]], axis=1)
    while len(chosen) < n:
        i = int(np.argmax(d))
        chosen.append(i)
        d = np.minimum(d, np.linalg.norm(F - F[i], axis=1))
    return [kfs[i] for i in sorted(chosen)]


def anchor_coverage(points_map: np.ndarray, T_map_cam: np.ndarray, K: np.ndarray, height: int, width: int,
                    grid: int = 8) -> float:
    """Fraction of an ``grid x grid`` partition of the image that anchor points project into.

    Args:
        points_map: (N, 3) anchor points in the map frame (map units).
        T_map_cam: (4, 4) rigid pose of the query camera (map units).
        K: (3, 3) intrinsics in pixels of an image of size (height, width).
    Returns:
        Coverage in [0, 1] (0 when no point is in front of the camera).
    """
    if points_map is None or len(points_map) == 0:
        return 0.0
    R = T_map_cam[:3, :3]
    c = T_map_cam[:3, 3]
    Pc = (np.asarray(points_map, dtype=np.float64) - c) @ R
    uv, z = project(Pc, K)
    ok = (z > 0) & np.isfinite(uv).all(1) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (
        uv[:, 1] < height)
    if not ok.any():
        return 0.0
    gx = np.clip((uv[ok, 0] * grid / width).astype(int), 0, grid - 1)
    gy = np.clip((uv[ok, 1] * grid / height).astype(int), 0, grid - 1)
    return float(len(np.unique(gy * grid + gx))) / (grid * grid)

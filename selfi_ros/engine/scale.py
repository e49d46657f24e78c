"""Metric scale (metres per map unit) from odometry.

Learned multi-view models (VGGT, SAIL-Recon) and monocular SfM give geometry up to an unknown scale.
With an odometry source (wheel / visual-inertial, metres), the scale is the ratio of distances
travelled: for pairs of keyframes (i, j) far enough apart in odometry, ``r_ij = |p_j - p_i|_odom /
|c_j - c_i|_map``; the estimate is the median of the ratios (robust to outliers and to the unknown
rotation between odometry and map), its uncertainty the bootstrap standard deviation of that median
(resampling the pairs). Assumption: the camera-to-base lever arm is small against the baselines used
(the camera centre moves like the base); otherwise rotation-only motion biases the ratio.

Until ``min_pairs`` pairs exist and the relative uncertainty is below ``max_rel_std``, the engine's
outputs are **up to scale** (``metric=False``) and say so.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Optional

import numpy as np


class OdometryBuffer:
    """Bounded, time-ordered odometry positions; linear interpolation at query stamps.

    Args:
        capacity: maximum samples kept (oldest dropped).
        max_gap_s: no interpolation across gaps longer than this (s); no extrapolation at all.
    """

    def __init__(self, capacity: int = 10000, max_gap_s: float = 0.5):
        self.capacity = int(capacity)
        self.max_gap_ns = int(max_gap_s * 1e9)
        self._stamps: collections.deque = collections.deque(maxlen=self.capacity)
        self._xyz: collections.deque = collections.deque(maxlen=self.capacity)
        self.rejected = 0

    def add(self, stamp_ns: int, T_odom_base: np.ndarray) -> bool:
        """Add one sample (4x4 base-to-odom, metres). Out-of-order or non-finite samples are rejected
        (counted) and False is returned."""
        T = np.asarray(T_odom_base, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            self.rejected += 1
            return False
        if self._stamps and stamp_ns <= self._stamps[-1]:
            self.rejected += 1
            return False
        self._stamps.append(int(stamp_ns))
        self._xyz.append(T[:3, 3].copy())
        return True

    def __len__(self) -> int:
        return len(self._stamps)

    def clear(self) -> None:
        self._stamps.clear()
        self._xyz.clear()

    def position_at(self, stamp_ns: int) -> Optional[np.ndarray]:
        """(3,) odometry position (m) at ``stamp_ns`` by linear interpolation, or None if not covered."""
        if not self._stamps:
            return None
        st = np.fromiter(self._stamps, dtype=np.int64, count=len(self._stamps))
        i = int(np.searchsorted(st, stamp_ns))
        if i < len(st) and st[i] == stamp_ns:
            return np.array(self._xyz[i])
        if i == 0 or i == len(st):
            return None
        t0, t1 = st[i - 1], st[i]
        if t1 - t0 > self.max_gap_ns:
            return None
        a = (stamp_ns - t0) / float(t1 - t0)
        return (1 - a) * self._xyz[i - 1] + a * self._xyz[i]


@dataclass
class ScaleEstimate:
    """Metric scale estimate.

    Attributes:
        scale: metres per map unit (1.0 when unknown).
        std: bootstrap standard deviation of ``scale`` (NaN when unknown).
        num_pairs: keyframe pairs used.
        valid: enough support (``num_pairs >= min_pairs`` and ``std / scale <= max_rel_std``).
    """

    scale: float = 1.0
    std: float = float("nan")
    num_pairs: int = 0
    valid: bool = False


class ScaleEstimator:
    """Median of odometry/map distance ratios over keyframe pairs, with a bootstrap uncertainty.

    Args:
        min_baseline_m: a pair is used when the odometry moved at least this much between them (m).
        min_pairs: pairs needed before the estimate is valid.
        max_rel_std: relative std (std/scale) needed before the estimate is valid.
        max_samples: most recent keyframe samples kept (bounds memory and cost).
        bootstrap: bootstrap resamples for the uncertainty.
    """

    def __init__(self, min_baseline_m: float = 0.2, min_pairs: int = 5, max_rel_std: float = 0.05,
                 max_samples: int = 300, bootstrap: int = 200, seed: int = 0):
        self.min_baseline_m = float(min_baseline_m)
        self.min_pairs = int(min_pairs)
        self.max_rel_std = float(max_rel_std)
        self.bootstrap = int(bootstrap)
        self._samples: "collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]]" = collections.OrderedDict()
        self.max_samples = int(max_samples)
        self._rng = np.random.default_rng(seed)
        self.estimate = ScaleEstimate()

    def reset(self) -> None:
        self._samples.clear()
        self.estimate = ScaleEstimate()

    def add(self, stamp_ns: int, centre_map: np.ndarray, odom_xyz: np.ndarray) -> None:
        """Record a keyframe's camera centre (map units) and odometry position (m) at the same stamp.
        A sample with the same stamp replaces the earlier one (refined pose)."""
        self._samples[int(stamp_ns)] = (np.asarray(centre_map, float).copy(), np.asarray(odom_xyz, float).copy())
        self._samples.move_to_end(int(stamp_ns))
        while len(self._samples) > self.max_samples:
            self._samples.popitem(last=False)

    def ratios(self) -> np.ndarray:
        """Distance ratios odometry/map over pairs (i, j): j the first later sample >= min_baseline away."""
        items = sorted(self._samples.items())
        if len(items) < 2:
            return np.zeros(0)
        C = np.array([v[0] for _, v in items])
        P = np.array([v[1] for _, v in items])
        out = []
        for i in range(len(items) - 1):
            d_odom = np.linalg.norm(P[i + 1:] - P[i], axis=1)
            far = np.nonzero(d_odom >= self.min_baseline_m)[0]
            if len(far) == 0:
                continue
            j = i + 1 + int(far[0])
            d_map = np.linalg.norm(C[j] - C[i])
            if d_map > 1e-12:
                out.append(d_odom[far[0]] / d_map)
        return np.asarray(out)

    def update(self) -> ScaleEstimate:
        """Recompute the estimate from the stored samples and return it."""
        r = self.ratios()
        if len(r) == 0:
            self.estimate = ScaleEstimate()
            return self.estimate
        s = float(np.median(r))
        if len(r) >= 2 and self.bootstrap > 0:
            idx = self._rng.integers(0, len(r), size=(self.bootstrap, len(r)))
            std = float(np.std(np.median(r[idx], axis=1)))
            # a floor from the spread of the ratios (bootstrap of a median is coarse for small n)
            mad = 1.4826 * float(np.median(np.abs(r - s)))
            std = max(std, 1.2533 * mad / np.sqrt(len(r)))
        else:
            std = float("nan")
        valid = len(r) >= self.min_pairs and np.isfinite(std) and std <= self.max_rel_std * s
        self.estimate = ScaleEstimate(s, std, len(r), bool(valid))
        return self.estimate

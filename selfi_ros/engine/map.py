"""Accumulated voxelised point map and a bounded trajectory store.

Voxel grid: fixed origin at the map origin, edge ``voxel_size`` (map units); each occupied voxel holds
one point (the running mean of the samples that fell in it, colour likewise), so the map never holds two
points in one voxel. (open3d's ``voxel_down_sample`` puts the grid origin at the cloud's minimum bound,
which moves as the map grows, so merging clouds incrementally with it would not keep one point per voxel
of a fixed grid; the same averaging is done here in numpy.) When the map exceeds ``max_points``, the
voxel edge is enlarged by 1.25x and the map re-voxelised until it fits (coverage kept, detail lost); the
effective edge is reported.
"""
from __future__ import annotations

import collections
from typing import Optional

import numpy as np

from .types import PoseEstimate


def voxel_keys(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N, 3) points -> (N, 3) int64 voxel indices ``floor(p / voxel_size)``."""
    return np.floor(np.asarray(points, dtype=np.float64) / voxel_size).astype(np.int64)


def voxel_downsample(points: np.ndarray, colors: np.ndarray, voxel_size: float,
                     counts: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average points/colours per voxel of a fixed grid (origin 0).

    Args:
        points: (N, 3) float; colors: (N, 3) uint8; counts: (N,) sample counts each point stands for
            (weights of the average), default 1.
    Returns:
        (M, 3) float64 points, (M, 3) uint8 colours, (M,) int64 counts, M <= N, one per occupied voxel.
    """
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    C = np.asarray(colors).reshape(-1, 3)
    if len(P) == 0:
        return np.zeros((0, 3), np.float64), np.zeros((0, 3), np.uint8), np.zeros(0, np.int64)
    n = np.ones(len(P), np.int64) if counts is None else np.asarray(counts, np.int64)
    keys = voxel_keys(P, voxel_size)
    _, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    m = int(inv.max()) + 1
    cnt = np.bincount(inv, weights=n, minlength=m)
    out_p = np.stack([np.bincount(inv, weights=P[:, k] * n, minlength=m) for k in range(3)], 1) / cnt[:, None]
    out_c = np.stack([np.bincount(inv, weights=C[:, k].astype(np.float64) * n, minlength=m) for k in range(3)],
                     1) / cnt[:, None]
    # the mean of points in a voxel lies in it; guard float rounding at the faces
    lo = voxel_keys(out_p, voxel_size)
    kv = np.zeros((m, 3), np.int64)
    kv[inv] = keys
    bad = np.any(lo != kv, axis=1)
    if bad.any():
        out_p[bad] = np.clip(out_p[bad], kv[bad] * voxel_size, np.nextafter((kv[bad] + 1) * voxel_size, -np.inf))
    return out_p, np.clip(np.round(out_c), 0, 255).astype(np.uint8), cnt.astype(np.int64)


class PointMap:
    """Voxelised, capped map in map units (see module docstring).

    Args:
        voxel_size: voxel edge (map units, > 0).
        max_points: hard cap on stored points (>= 1).
    """

    def __init__(self, voxel_size: float = 0.02, max_points: int = 2_000_000):
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.base_voxel_size = float(voxel_size)
        self.voxel_size = float(voxel_size)
        self.max_points = int(max_points)
        self.coarsenings = 0
        self.clear()

    def clear(self) -> None:
        self.points = np.zeros((0, 3), np.float64)  # float64: float32 rounding could cross voxel faces
        self.colors = np.zeros((0, 3), np.uint8)
        self.counts = np.zeros(0, np.int64)
        self.voxel_size = self.base_voxel_size

    def __len__(self) -> int:
        return len(self.points)

    @property
    def nbytes(self) -> int:
        return int(self.points.nbytes + self.colors.nbytes + self.counts.nbytes)

    def add(self, points: np.ndarray, colors: Optional[np.ndarray] = None) -> int:
        """Merge (N, 3) map-frame points (+ (N, 3) uint8 colours; grey when None). Non-finite points are
        dropped. Returns the map size after the merge."""
        P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        C = np.full((len(P), 3), 128, np.uint8) if colors is None else np.asarray(colors, np.uint8).reshape(-1, 3)
        if len(C) != len(P):
            raise ValueError(f"colors must be (N, 3) with N = {len(P)}, got {C.shape}")
        ok = np.isfinite(P).all(1)
        P, C = P[ok], C[ok]
        if len(P) == 0:
            return len(self)
        allp = np.vstack([self.points, P])
        allc = np.vstack([self.colors, C])
        alln = np.concatenate([self.counts, np.ones(len(P), np.int64)])
        self.points, self.colors, self.counts = voxel_downsample(allp, allc, self.voxel_size, alln)
        while len(self.points) > self.max_points:
            self.voxel_size *= 1.25
            self.coarsenings += 1
            self.points, self.colors, self.counts = voxel_downsample(
                self.points, self.colors, self.voxel_size, self.counts)
        return len(self)

    def scaled(self, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) float32 points multiplied by ``scale`` (e.g. metres per map unit), (N, 3) uint8 colours."""
        return (self.points * float(scale)).astype(np.float32), self.colors.copy()


class TrajectoryStore:
    """Bounded store of poses keyed by stamp (a later pose for the same stamp replaces the earlier one,
    e.g. a refined anchor pose); oldest stamps dropped beyond ``capacity``."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = max(1, int(capacity))
        self._poses: "collections.OrderedDict[int, PoseEstimate]" = collections.OrderedDict()
        self.dropped = 0

    def add(self, pose: PoseEstimate) -> None:
        self._poses[int(pose.stamp_ns)] = pose
        while len(self._poses) > self.capacity:
            self._poses.popitem(last=False)  # frames arrive in time order: first inserted = oldest
            self.dropped += 1

    def get(self, stamp_ns: int) -> Optional[PoseEstimate]:
        return self._poses.get(int(stamp_ns))

    def clear(self) -> None:
        self._poses.clear()

    def __len__(self) -> int:
        return len(self._poses)

    def poses(self) -> list[PoseEstimate]:
        """All stored poses in stamp order."""
        return [self._poses[k] for k in sorted(self._poses)]

    @property
    def nbytes(self) -> int:
        return len(self._poses) * (16 * 8 + 9 * 8 + 120)

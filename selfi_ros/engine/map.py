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

from selfi_ros.engine.types import PoseEstimate


_BITS = 21
_OFF = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


def voxel_keys(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N, 3) points -> (N, 3) int64 voxel indices ``floor(p / voxel_size)``."""
    return np.floor(np.asarray(points, dtype=np.float64) / voxel_size).astype(np.int64)


def pack_keys(ijk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) int64 voxel indices -> (N,) int64 packed keys (21 bits per axis) and an (N,) bool mask of
    indices inside the packable range ``[-2^20, 2^20)`` (others must be dropped by the caller)."""
    ok = np.all((ijk >= -_OFF) & (ijk < _OFF), axis=1)
    u = (ijk + _OFF) & _MASK
    return (u[:, 0] << (2 * _BITS)) | (u[:, 1] << _BITS) | u[:, 2], ok


def voxel_downsample(points: np.ndarray, colors: np.ndarray, voxel_size: float,
                     counts: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average points/colours per voxel of a fixed grid (origin 0), weighted by ``counts``.

    Args:
        points: (N, 3) float; colors: (N, 3) uint8; counts: (N,) sample counts each point stands for
            (weights of the average), default 1.
    Returns:
        (M, 3) float64 points, (M, 3) uint8 colours, (M,) int64 counts, M <= N, one per occupied voxel,
        sorted by packed voxel key. Points outside the packable range (about 10^6 voxels from the
        origin along an axis) are dropped.
    """
    P, C, n, _ = _downsample(points, colors, voxel_size, counts)
    return P, np.clip(np.round(C), 0, 255).astype(np.uint8), n


def _downsample(points, colors, voxel_size, counts):
    """As voxel_downsample but colours as float64 and also returns the sorted packed keys."""
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    C = np.asarray(colors).reshape(-1, 3).astype(np.float64)
    n = np.ones(len(P), np.int64) if counts is None else np.asarray(counts, np.int64).reshape(-1)
    ijk = voxel_keys(P, voxel_size)
    keys, ok = pack_keys(ijk)
    if not ok.all():
        P, C, n, keys, ijk = P[ok], C[ok], n[ok], keys[ok], ijk[ok]
    if len(P) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    uk, inv = np.unique(keys, return_inverse=True)
    inv = inv.reshape(-1)
    m = len(uk)
    w = n.astype(np.float64)
    cnt = np.bincount(inv, weights=w, minlength=m)
    out_p = np.stack([np.bincount(inv, weights=P[:, k] * w, minlength=m) for k in range(3)], 1) / cnt[:, None]
    out_c = np.stack([np.bincount(inv, weights=C[:, k] * w, minlength=m) for k in range(3)], 1) / cnt[:, None]
    kv = np.zeros((m, 3), np.int64)
    kv[inv] = ijk
    out_p = _clamp_into(out_p, kv, voxel_size)
    return out_p, out_c, cnt.astype(np.int64), uk


def _clamp_into(p: np.ndarray, kv: np.ndarray, v: float) -> np.ndarray:
    """The mean of points in a voxel lies in it; guard float rounding at the faces."""
    bad = np.any(voxel_keys(p, v) != kv, axis=1)
    if bad.any():
        p[bad] = np.clip(p[bad], kv[bad] * v, np.nextafter((kv[bad] + 1) * v, -np.inf))
    return p


class PointMap:
    """Voxelised, capped map in map units (see module docstring).

    Stored sorted by packed voxel key, so merging N new points costs O(N log M) (binary search) plus one
    re-sort, instead of re-voxelising the whole map.

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
        self._colors = np.zeros((0, 3), np.float64)
        self.counts = np.zeros(0, np.int64)
        self._keys = np.zeros(0, np.int64)
        self.voxel_size = self.base_voxel_size

    @property
    def colors(self) -> np.ndarray:
        """(N, 3) uint8 RGB (mean colour of each voxel)."""
        return np.clip(np.round(self._colors), 0, 255).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.points)

    @property
    def nbytes(self) -> int:
        return int(self.points.nbytes + self._colors.nbytes + self.counts.nbytes + self._keys.nbytes)

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
        v = self.voxel_size
        nP, nC, nn, nk = _downsample(P, C, v, None)
        pos = np.searchsorted(self._keys, nk)
        hit = np.zeros(len(nk), bool)
        inside = pos < len(self._keys)
        hit[inside] = self._keys[pos[inside]] == nk[inside]
        if hit.any():  # running weighted mean in voxels already in the map
            j = pos[hit]
            a = self.counts[j].astype(np.float64)[:, None]
            b = nn[hit].astype(np.float64)[:, None]
            self.points[j] = _clamp_into((self.points[j] * a + nP[hit] * b) / (a + b), voxel_keys(self.points[j], v), v)
            self._colors[j] = (self._colors[j] * a + nC[hit] * b) / (a + b)
            self.counts[j] += nn[hit]
        new = ~hit
        if new.any():
            keys = np.concatenate([self._keys, nk[new]])
            order = np.argsort(keys, kind="stable")
            self._keys = keys[order]
            self.points = np.vstack([self.points, nP[new]])[order]
            self._colors = np.vstack([self._colors, nC[new]])[order]
            self.counts = np.concatenate([self.counts, nn[new]])[order]
        while len(self.points) > self.max_points:
            self.voxel_size *= 1.25
            self.coarsenings += 1
            self.points, self._colors, self.counts, self._keys = _downsample(
                self.points, self._colors, self.voxel_size, self.counts)
        return len(self)

    def scaled(self, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) float32 points multiplied by ``scale`` (e.g. metres per map unit), (N, 3) uint8 colours."""
        return (self.points * float(scale)).astype(np.float32), self.colors


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

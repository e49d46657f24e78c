"""Window memories of the colmap backend and place recognition over its cached SIFT.

* :class:`ColmapWindowMemory`: one window's sparse 3D points (window frame, window units) with the SIFT
  descriptor of every observation of each point and the anchors' keypoints of those observations; what
  frames are localized against (:func:`localize_features`), exported / saved / loaded as one ``.npz``
  (the :class:`selfi_ros.engine.backend.WindowMemory` payload of the colmap backend).
* :func:`localize_features`: 2D-3D matching of a frame's SIFT against a memory (nearest neighbour with
  Lowe's ratio test against the best match of a *different* 3D point, one correspondence per 3D point),
  then PnP RANSAC (:func:`selfi_ros.backends.colmap_tracking.absolute_pose`).
* :class:`Vlad`: VLAD global descriptors (Jegou et al., "Aggregating local descriptors into a compact image
  representation", CVPR 2010; with the intra-normalisation of Arandjelovic & Zisserman, "All about VLAD",
  CVPR 2013) over RootSIFT (Arandjelovic & Zisserman, CVPR 2012). The vocabulary is ``cv2.kmeans``
  (k-means++ seeding, fixed RNG seed) of the descriptors of the first window the backend reconstructs (or
  adopted from the first loaded memory, which stores it), then frozen for the backend's life.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from selfi_ros.backends.colmap_tracking import PoseFit, absolute_pose
from selfi_ros.engine.backend import BackendError

MEMORY_FILE = "colmap_window.npz"
MEMORY_FORMAT = 1


@dataclass
class ColmapWindowMemory:
    """What frames are localized against, for one window (see module docstring).

    Attributes:
        window_id: the window; backend: "colmap".
        points: (N, 3) float64 window-frame points (window units: median depth in the first anchor is 1).
        colors: (N, 3) uint8 RGB.
        descriptors: (M, 128) uint8 SIFT descriptors, one per observation of a point.
        point_index: (M,) int64 row of ``points`` each descriptor observes.
        K: (3, 3) float64 OpenCV intrinsics of the window's camera; image_size_hw: (H, W) they refer to.
        anchor_stamps_ns: (S,) int64 anchors (registered by COLMAP) the observations come from.
        obs_anchor: (M,) int64 row of ``anchor_stamps_ns`` of each observation.
        obs_xy: (M, 2) float32 keypoint of each observation (OpenCV pixels of that anchor).
        vocabulary: (k, 128) float32 VLAD centres the backend used (saved so a loaded map keeps them), or None.
    """

    window_id: int
    points: np.ndarray
    colors: np.ndarray
    descriptors: np.ndarray
    point_index: np.ndarray
    K: np.ndarray
    image_size_hw: tuple
    anchor_stamps_ns: np.ndarray
    obs_anchor: np.ndarray
    obs_xy: np.ndarray
    vocabulary: Optional[np.ndarray] = None
    backend: str = "colmap"
    _desc_f32: Optional[np.ndarray] = field(default=None, repr=False)

    def descriptors_f32(self) -> np.ndarray:
        """(M, 128) float32 copy of ``descriptors`` for OpenCV matching (made once)."""
        if self._desc_f32 is None:
            self._desc_f32 = np.ascontiguousarray(self.descriptors, dtype=np.float32)
        return self._desc_f32

    def nbytes(self) -> int:
        """Bytes in RAM (arrays, including the float32 matching copy once made)."""
        arrs = [self.points, self.colors, self.descriptors, self.point_index, self.K, self.anchor_stamps_ns,
                self.obs_anchor, self.obs_xy, self.vocabulary, self._desc_f32]
        return int(sum(a.nbytes for a in arrs if a is not None))

    def save(self, directory: str) -> None:
        """Write ``colmap_window.npz`` into ``directory`` (exists; the caller makes the folder atomic).
        Raises OSError."""
        arrays = dict(format=np.int64(MEMORY_FORMAT), window_id=np.int64(self.window_id), points=self.points,
                      colors=self.colors, descriptors=self.descriptors, point_index=self.point_index, K=self.K,
                      image_size_hw=np.asarray(self.image_size_hw, np.int64),
                      anchor_stamps_ns=self.anchor_stamps_ns, obs_anchor=self.obs_anchor, obs_xy=self.obs_xy)
        if self.vocabulary is not None:
            arrays["vocabulary"] = self.vocabulary
        with open(os.path.join(directory, MEMORY_FILE), "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, directory: str) -> "ColmapWindowMemory":
        """Read what :meth:`save` wrote. Raises :class:`BackendError` naming the folder and the problem."""
        path = os.path.join(directory, MEMORY_FILE)
        if not os.path.isfile(path):
            raise BackendError(f"colmap: no {MEMORY_FILE} in {directory}")
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["format"]) != MEMORY_FORMAT:
                    raise BackendError(f"colmap: {path}: format {int(z['format'])}, expected {MEMORY_FORMAT}")
                mem = cls(window_id=int(z["window_id"]), points=z["points"].astype(np.float64),
                          colors=z["colors"].astype(np.uint8), descriptors=z["descriptors"].astype(np.uint8),
                          point_index=z["point_index"].astype(np.int64), K=z["K"].astype(np.float64),
                          image_size_hw=tuple(int(v) for v in z["image_size_hw"]),
                          anchor_stamps_ns=z["anchor_stamps_ns"].astype(np.int64),
                          obs_anchor=z["obs_anchor"].astype(np.int64), obs_xy=z["obs_xy"].astype(np.float32),
                          vocabulary=z["vocabulary"].astype(np.float32) if "vocabulary" in z else None)
        except BackendError:
            raise
        except Exception as exc:  # zip / key / value errors of a corrupt file
            raise BackendError(f"colmap: {path} is unreadable: {type(exc).__name__}: {exc}") from exc
        m = len(mem.descriptors)
        if (mem.points.ndim != 2 or mem.points.shape[1] != 3 or mem.descriptors.shape != (m, 128)
                or mem.point_index.shape != (m,) or mem.obs_xy.shape != (m, 2) or mem.K.shape != (3, 3)
                or (m and (mem.point_index.min() < 0 or mem.point_index.max() >= len(mem.points)))):
            raise BackendError(f"colmap: {path}: inconsistent array shapes")
        return mem


def localize_features(mem: ColmapWindowMemory, xy_colmap: np.ndarray, desc: np.ndarray, K: np.ndarray,
                      width: int, height: int, ratio: float, min_inliers: int, max_error_px: float,
                      seed: int) -> tuple[Optional[PoseFit], np.ndarray, str]:
    """Pose of a frame from its SIFT against ``mem`` (see module docstring).

    Args:
        xy_colmap: (m, 2) float64 keypoints (COLMAP pixels); desc: (m, 128) descriptors.
        K, width, height: the frame's intrinsics (OpenCV) and size.
        ratio, min_inliers, max_error_px, seed: matching ratio, inlier minimum, RANSAC threshold and seed.
    Returns:
        ``(fit, rows, reason)``: the fit (None on failure, with ``reason``) and (n,) int64 memory point rows
        of the correspondences; ``fit.inlier_mask`` and ``fit.query_index`` (the query keypoint of each)
        are in the same order.
    """
    import cv2

    if len(xy_colmap) < min_inliers or len(mem.descriptors) < 2:
        return None, np.zeros(0, np.int64), f"too few features ({len(xy_colmap)} query, {len(mem.descriptors)} memory)"
    kk = min(4, len(mem.descriptors))
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(np.ascontiguousarray(desc, dtype=np.float32),
                                               mem.descriptors_f32(), k=kk)
    best: dict[int, tuple[float, int]] = {}  # 3D point row -> (distance, query keypoint)
    pidx = mem.point_index
    for q, ms in enumerate(knn):
        if not ms:
            continue
        m0 = ms[0]
        p0 = int(pidx[m0.trainIdx])
        second = next((m for m in ms[1:] if int(pidx[m.trainIdx]) != p0), None)
        if second is not None and m0.distance > ratio * second.distance:
            continue
        if p0 not in best or m0.distance < best[p0][0]:
            best[p0] = (m0.distance, q)
    if len(best) < min_inliers:
        return None, np.zeros(0, np.int64), f"too few 2D-3D matches ({len(best)} < {min_inliers})"
    rows = np.fromiter(best.keys(), dtype=np.int64, count=len(best))
    qidx = np.array([best[r][1] for r in rows], dtype=np.int64)
    fit, reason = absolute_pose(xy_colmap[qidx], mem.points[rows], K, width, height, max_error_px, seed)
    if fit is None:
        return None, rows, reason
    fit.query_index = qidx
    if fit.num_inliers < min_inliers:
        return None, rows, f"too few inliers ({fit.num_inliers} < {min_inliers})"
    return fit, rows, ""


def root_sift(desc: np.ndarray) -> np.ndarray:
    """(m, 128) SIFT -> RootSIFT float32 (L1-normalise, square root: Arandjelovic & Zisserman, CVPR 2012)."""
    d = np.asarray(desc, dtype=np.float32)
    d = d / np.maximum(d.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(d)


class Vlad:
    """VLAD over RootSIFT with a frozen k-means vocabulary (see module docstring).

    Args:
        clusters: vocabulary size k (descriptor dimension 128 k).
        seed: RNG seed of ``cv2.kmeans``.
    """

    def __init__(self, clusters: int = 16, seed: int = 0) -> None:
        self.clusters = int(clusters)
        self.seed = int(seed)
        self.centres: Optional[np.ndarray] = None

    @property
    def dim(self) -> int:
        return 128 * self.clusters

    def fit(self, desc: np.ndarray) -> None:
        """Build the vocabulary from (m, 128) SIFT descriptors (no-op once built). Raises BackendError when
        ``m`` < ``clusters``."""
        import cv2

        if self.centres is not None:
            return
        x = root_sift(desc)
        if len(x) < self.clusters:
            raise BackendError(f"colmap: {len(x)} descriptors cannot build a {self.clusters}-word VLAD vocabulary")
        cv2.setRNGSeed(self.seed)
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-4)
        _, _, centres = cv2.kmeans(np.ascontiguousarray(x), self.clusters, None, crit, 2, cv2.KMEANS_PP_CENTERS)
        self.centres = centres.astype(np.float32)

    def adopt(self, centres: Optional[np.ndarray]) -> None:
        """Use ``centres`` (k, 128) as the vocabulary if none is built yet and the size matches."""
        if self.centres is None and centres is not None and centres.shape == (self.clusters, 128):
            self.centres = np.asarray(centres, dtype=np.float32)

    def describe(self, desc: np.ndarray) -> np.ndarray:
        """(D,) float32 L2-normalised VLAD of one image's (m, 128) SIFT descriptors (zeros for m = 0).
        Residuals summed per nearest centre, each block L2-normalised (intra-normalisation), then the whole
        vector; requires a vocabulary."""
        assert self.centres is not None
        v = np.zeros((self.clusters, 128), np.float32)
        if len(desc):
            x = root_sift(desc)
            d2 = (x * x).sum(1)[:, None] - 2.0 * x @ self.centres.T + (self.centres ** 2).sum(1)[None, :]
            a = np.argmin(d2, axis=1)
            np.add.at(v, a, x - self.centres[a])
            n = np.linalg.norm(v, axis=1, keepdims=True)
            v = np.where(n > 0, v / np.maximum(n, 1e-12), 0.0)
        out = v.reshape(-1)
        n = float(np.linalg.norm(out))
        return (out / n if n > 0 else out).astype(np.float32)

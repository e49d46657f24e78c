"""SIFT features of the colmap backend, extracted once per frame and cached, and pairwise matching.

* :class:`FeatureCache`: COLMAP's SIFT (``pycolmap.FeatureExtractor.extract_from_uint8_array``, CPU; Lowe,
  "Distinctive Image Features from Scale-Invariant Keypoints", IJCV 2004, as implemented in COLMAP's
  ``src/colmap/feature/sift.cc``) of a frame's grey image, straight from memory (no image file), kept in a
  bounded LRU keyed by ``(Frame.stamp_ns, Frame.index, first_octave)``. Every window that contains a
  keyframe and every localization of that frame reuse the one extraction.
* :func:`match_features`: mutual nearest neighbours with Lowe's ratio test (OpenCV ``BFMatcher``, L2 on
  COLMAP's uint8 RootSIFT-style descriptors), the same criterion as COLMAP's CPU matcher
  (``max_ratio`` + ``cross_check``) at about a third of its time on this machine.
* :class:`PairCache`: verified two-view matches (``pycolmap.estimate_two_view_geometry``) of frame pairs,
  so the pair two overlapping windows share is matched once.

Coordinates: keypoints are in COLMAP's convention (pixel corners at integers: the centre of the top-left
pixel is (0.5, 0.5)) and in pixels of the frame's *input* image, also when SIFT ran on a downscaled copy.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np

from selfi_ros.engine.types import Frame


def frame_key(frame: Frame) -> tuple:
    """Cache key of a frame: ``(stamp_ns, index)`` (a producer's frame identity)."""
    return (int(frame.stamp_ns), int(frame.index))


_LUMA_709 = np.array([[0.2126, 0.7152, 0.0722]], np.float32)


def grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 grey with ITU-R BT.709 luma weights, those of COLMAP's own image
    reader: on the bundled sample its features then give the accuracy of COLMAP's file-based extraction
    (OpenCV's BT.601 ``COLOR_RGB2GRAY`` cost about 0.2 deg of anchor rotation)."""
    import cv2

    if image.ndim == 2:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(cv2.transform(image, _LUMA_709).reshape(image.shape[:2]))


@dataclass
class Features:
    """SIFT of one frame.

    Attributes:
        keypoints: (m, 4) float32 ``x, y, scale, orientation`` (COLMAP coordinates, input-image pixels).
        descriptors: (m, 128) uint8 (COLMAP's normalisation).
        image_size_hw: (H, W) of the input image.
        first_octave: the SIFT first octave used (-1: 2x upsampled).
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    image_size_hw: tuple
    first_octave: int

    @property
    def xy(self) -> np.ndarray:
        """(m, 2) float64 keypoint positions (COLMAP coordinates)."""
        return self.keypoints[:, :2].astype(np.float64)

    def __len__(self) -> int:
        return int(len(self.keypoints))

    def nbytes(self) -> int:
        return int(self.keypoints.nbytes + self.descriptors.nbytes)


class FeatureCache:
    """Extract-once SIFT with a bounded LRU (see module docstring).

    Args:
        max_num_features: SIFT features per image (COLMAP ``max_num_features``).
        max_image_size: longer side (px) SIFT runs at; larger images are downscaled (INTER_AREA) first.
        peak_threshold: SIFT contrast threshold.
        num_threads: frames extracted in parallel by :meth:`get_many` (-1: all cores); pycolmap's extractor
            releases the GIL, so 2 threads halve a window's extraction time on 2 free cores.
        capacity: keyframes kept (least recently used evicted).
        transient_capacity: frames kept in a second, small LRU for features asked with ``keep=False``
            (SIFT-localized non-keyframes), so they never evict keyframes.

    Attributes:
        extractions: SIFT runs so far; ``hits``: requests served from the cache.
    """

    def __init__(self, max_num_features: int, max_image_size: int, peak_threshold: float, num_threads: int,
                 capacity: int, transient_capacity: int = 8) -> None:
        self.max_num_features = int(max_num_features)
        self.max_image_size = int(max_image_size)
        self.peak_threshold = float(peak_threshold)
        self.num_threads = int(num_threads)
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict = OrderedDict()
        self._transient: OrderedDict = OrderedDict()
        self.transient_capacity = max(1, int(transient_capacity))
        self._extractors: dict = {}  # (first_octave, thread id) -> extractor: one per thread
        self.workers = (os.cpu_count() or 1) if self.num_threads < 1 else self.num_threads
        self._pool: ThreadPoolExecutor | None = None
        self.extractions = 0
        self.hits = 0

    def _extractor(self, first_octave: int):
        import pycolmap as pc

        key = (first_octave, threading.get_ident())
        if key not in self._extractors:
            opts = pc.FeatureExtractionOptions()
            opts.max_image_size = self.max_image_size
            opts.num_threads = 1
            opts.use_gpu = False
            opts.sift.max_num_features = self.max_num_features
            opts.sift.peak_threshold = self.peak_threshold
            opts.sift.first_octave = int(first_octave)
            self._extractors[key] = pc.FeatureExtractor.create(opts, pc.Device.cpu)
        return self._extractors[key]

    def peek(self, frame: Frame, first_octave: Optional[int] = None) -> Optional[Features]:
        """The cached features of ``frame`` (with that ``first_octave``, or any when None), or None."""
        key = frame_key(frame)
        for store in (self._items, self._transient):
            octaves = [first_octave] if first_octave is not None else sorted(o for (k, o) in store if k == key)
            for o in octaves:
                f = store.get((key, o))
                if f is not None and f.image_size_hw == (frame.height, frame.width):
                    store.move_to_end((key, o))
                    return f
        return None

    def get(self, frame: Frame, first_octave: int, accept: tuple = (), keep: bool = True) -> Features:
        """Features of ``frame`` at ``first_octave`` (extracted at most once while cached). A cached entry at
        one of the octaves in ``accept`` (e.g. the anchors' finer octave for a query) is used instead. A new
        extraction goes to the keyframe LRU when ``keep``, else to the small transient one."""
        for o in (first_octave, *accept):
            f = self.peek(frame, o)
            if f is not None:
                self.hits += 1
                return f
        f = self._extract(frame.image, first_octave)
        self._store(frame, first_octave, f, keep)
        return f

    def get_many(self, frames, first_octaves) -> list[Features]:
        """:meth:`get` (``keep=True``) for several frames, ``first_octaves[k]`` for frame k; the missing ones
        are extracted in parallel (``num_threads`` workers, one extractor each)."""
        out = [self.peek(f, o) for f, o in zip(frames, first_octaves)]
        self.hits += sum(f is not None for f in out)
        todo = [k for k, f in enumerate(out) if f is None]
        if len(todo) > 1 and self.workers > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sift")
            done = list(self._pool.map(lambda k: self._extract(frames[k].image, first_octaves[k]), todo))
        else:
            done = [self._extract(frames[k].image, first_octaves[k]) for k in todo]
        for k, f in zip(todo, done):
            self._store(frames[k], first_octaves[k], f, True)
            out[k] = f
        return out

    def _store(self, frame: Frame, first_octave: int, f: Features, keep: bool) -> None:
        self.extractions += 1
        key = (frame_key(frame), first_octave)
        store, cap = (self._items, self.capacity) if keep else (self._transient, self.transient_capacity)
        self._transient.pop(key, None)
        store[key] = f
        while len(store) > cap:
            store.popitem(last=False)

    def close(self) -> None:
        """Stop the extraction threads (the cache stays usable: they restart on demand)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _extract(self, image: np.ndarray, first_octave: int) -> Features:
        import cv2
        import pycolmap as pc

        g = grey(image)
        h, w = g.shape
        s = min(1.0, self.max_image_size / max(h, w))
        if s < 1.0:
            g = cv2.resize(g, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
        kps, desc = self._extractor(first_octave).extract_from_uint8_array(g)
        kp = np.asarray(pc.keypoints_to_matrix(kps), dtype=np.float32).reshape(-1, 4).copy()
        if s < 1.0:  # COLMAP coordinates: pixel corners at integers, so scaling is exact
            kp[:, :2] /= s
            kp[:, 2] /= s
        d = np.ascontiguousarray(np.asarray(desc.data, dtype=np.uint8).reshape(-1, 128))
        return Features(kp, d, (h, w), int(first_octave))

    def clear(self) -> None:
        """Drop every cached frame (counters kept)."""
        self._items.clear()
        self._transient.clear()

    def __len__(self) -> int:
        """Keyframes cached (the transient LRU not counted)."""
        return len(self._items)

    def nbytes(self) -> int:
        """Bytes held by the cached features (both LRUs)."""
        return int(sum(f.nbytes() for f in [*self._items.values(), *self._transient.values()]))


def match_features(d1: np.ndarray, d2: np.ndarray, ratio: float) -> np.ndarray:
    """Mutual nearest-neighbour matches passing Lowe's ratio test in both directions.

    Args:
        d1, d2: (m1, 128) / (m2, 128) descriptors (uint8 or float32).
        ratio: Lowe ratio (best distance < ratio x second best).
    Returns:
        (k, 2) uint32 indices ``(i1, i2)``; empty when either side has < 2 descriptors.
    """
    import cv2

    if len(d1) < 2 or len(d2) < 2:
        return np.zeros((0, 2), np.uint32)
    a = np.ascontiguousarray(d1, dtype=np.float32)
    b = np.ascontiguousarray(d2, dtype=np.float32)
    bf = cv2.BFMatcher(cv2.NORM_L2)

    def one_way(x, y):
        best = np.full(len(x), -1, np.int64)
        for ms in bf.knnMatch(x, y, k=2):
            if len(ms) == 2 and ms[0].distance < ratio * ms[1].distance:
                best[ms[0].queryIdx] = ms[0].trainIdx
        return best

    f = one_way(a, b)
    r = one_way(b, a)
    i1 = np.nonzero(f >= 0)[0]
    keep = r[f[i1]] == i1
    return np.stack([i1[keep], f[i1[keep]]], axis=1).astype(np.uint32)


class PairCache:
    """Verified matches of frame pairs: ``(key_a, key_b) -> TwoViewGeometry`` (bounded LRU)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict = OrderedDict()
        self.computed = 0
        self.hits = 0

    def get(self, key_a, key_b, fa: Features, fb: Features, camera, ratio: float, options):
        """``pycolmap.TwoViewGeometry`` of frames a, b (features ``fa``, ``fb``, one shared ``camera``):
        :func:`match_features` then ``pycolmap.estimate_two_view_geometry`` (RANSAC on E / F / H; its
        ``inlier_matches`` index ``fa`` / ``fb``). Computed once per pair while cached."""
        import pycolmap as pc

        k = (key_a, key_b)
        if k in self._items:
            self._items.move_to_end(k)
            self.hits += 1
            return self._items[k]
        m = match_features(fa.descriptors, fb.descriptors, ratio)
        if len(m) >= 8:
            tvg = pc.estimate_two_view_geometry(camera, fa.xy, camera, fb.xy, m, options)
        else:
            tvg = pc.TwoViewGeometry()
        self.computed += 1
        self._items[k] = tvg
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return tvg

    def clear(self) -> None:
        self._items.clear()

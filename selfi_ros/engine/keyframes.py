"""Keyframe selection (time, image motion, odometry distance) and a bounded keyframe buffer.

Image motion is the median displacement of sparse features tracked by pyramidal Lucas-Kanade optical
flow (OpenCV ``calcOpticalFlowPyrLK``) from the last keyframe to the current frame, measured on a grey
image downscaled to ``FLOW_WIDTH`` pixels wide (so thresholds do not depend on the camera resolution).
The same criterion family is used by VGGT-SLAM (flow disparity between keyframes) and MASt3R-SLAM
(matched fraction): here a keyframe is also made when too few features survive tracking.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from selfi_ros.engine.types import Frame

#: width (px) of the grey image used for optical flow; flow thresholds are in these pixels.
FLOW_WIDTH = 256


def flow_image(image_rgb: np.ndarray, width: int = FLOW_WIDTH) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (h, width) uint8 grey, area-downscaled (upscaled if smaller)."""
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    h = max(8, int(round(grey.shape[0] * width / grey.shape[1])))
    interp = cv2.INTER_AREA if grey.shape[1] > width else cv2.INTER_LINEAR
    return cv2.resize(grey, (width, h), interpolation=interp)


def median_flow(prev_grey: np.ndarray, prev_pts: np.ndarray, grey: np.ndarray,
                fb_max_px: float = 1.0) -> tuple[float, float]:
    """Median LK displacement (px) of ``prev_pts`` (N, 1, 2) float32 and the fraction tracked.

    A point counts as tracked when LK finds it forwards and the backward track returns within
    ``fb_max_px`` of its start (forward-backward check, Kalal et al. 2010). Returns (nan, 0.0) when
    there are no points or none is tracked.
    """
    if prev_pts is None or len(prev_pts) == 0:
        return float("nan"), 0.0
    lk = dict(winSize=(21, 21), maxLevel=3)
    nxt, st, _err = cv2.calcOpticalFlowPyrLK(prev_grey, grey, prev_pts, None, **lk)
    back, st2, _err2 = cv2.calcOpticalFlowPyrLK(grey, prev_grey, nxt, None, **lk)
    fb = np.linalg.norm((back - prev_pts).reshape(-1, 2), axis=1)
    ok = st.reshape(-1).astype(bool) & st2.reshape(-1).astype(bool) & (fb < fb_max_px)
    if not ok.any():
        return float("nan"), 0.0
    d = np.linalg.norm((nxt - prev_pts).reshape(-1, 2)[ok], axis=1)
    return float(np.median(d)), float(ok.mean())


@dataclass
class KeyframeDecision:
    """Outcome of :meth:`KeyframeSelector.check`.

    Attributes:
        is_keyframe: the frame becomes a keyframe.
        reason: "first", "time", "flow", "tracking", "odometry", or why not ("too_soon", "static").
        flow_px: median flow at FLOW_WIDTH px (NaN if not measured).
        odom_dist_m: odometry distance since the last keyframe (NaN without odometry).
    """

    is_keyframe: bool
    reason: str
    flow_px: float = float("nan")
    odom_dist_m: float = float("nan")


class KeyframeSelector:
    """Decides which frames become keyframes.

    A frame is a keyframe when it is the first one, or (never closer than ``min_interval_s`` to the last
    keyframe) when ``max_interval_s`` passed, or the odometry moved ``min_odom_dist_m``, or the median
    optical flow reached ``min_flow_px`` (at FLOW_WIDTH px), or fewer than ``min_tracked_fraction`` of
    the last keyframe's features could be tracked. ``min_flow_px <= 0`` disables the flow test.
    """

    def __init__(self, min_interval_s: float = 0.0, max_interval_s: float = 1.0, min_flow_px: float = 5.0,
                 min_odom_dist_m: float = 0.10, min_tracked_fraction: float = 0.3, max_features: int = 200):
        self.min_interval_ns = int(min_interval_s * 1e9)
        self.max_interval_ns = int(max_interval_s * 1e9) if max_interval_s > 0 else None
        self.min_flow_px = float(min_flow_px)
        self.min_odom_dist_m = float(min_odom_dist_m)
        self.min_tracked_fraction = float(min_tracked_fraction)
        self.max_features = int(max_features)
        self.reset()

    def set_thresholds(self, min_interval_s: float, max_interval_s: float, min_flow_px: float,
                       min_odom_dist_m: float) -> None:
        """Change the four thresholds (same meaning and units as the constructor's: s, s, px at FLOW_WIDTH,
        m) while keeping the last keyframe (its stamp, features and odometry): the next :meth:`check`
        compares against it with the new thresholds."""
        self.min_interval_ns = int(min_interval_s * 1e9)
        self.max_interval_ns = int(max_interval_s * 1e9) if max_interval_s > 0 else None
        self.min_flow_px = float(min_flow_px)
        self.min_odom_dist_m = float(min_odom_dist_m)

    def reset(self) -> None:
        self._last_stamp: Optional[int] = None
        self._last_grey: Optional[np.ndarray] = None
        self._last_pts: Optional[np.ndarray] = None
        self._last_odom: Optional[np.ndarray] = None

    def _set_keyframe(self, frame: Frame, grey: Optional[np.ndarray], odom_xyz: Optional[np.ndarray]) -> None:
        self._last_stamp = frame.stamp_ns
        if self.min_flow_px > 0:
            grey = flow_image(frame.image) if grey is None else grey
            self._last_grey = grey
            self._last_pts = cv2.goodFeaturesToTrack(grey, self.max_features, 0.01, 5)
        self._last_odom = None if odom_xyz is None else np.asarray(odom_xyz, dtype=np.float64)

    def check(self, frame: Frame, odom_xyz: Optional[np.ndarray] = None) -> KeyframeDecision:
        """Decide for ``frame`` (time order); when it is a keyframe, it becomes the reference.

        Args:
            frame: the frame.
            odom_xyz: (3,) odometry position (m) of the robot at the frame stamp, or None.
        """
        if self._last_stamp is None:
            self._set_keyframe(frame, None, odom_xyz)
            return KeyframeDecision(True, "first")
        dt = frame.stamp_ns - self._last_stamp
        if dt < self.min_interval_ns:
            return KeyframeDecision(False, "too_soon")
        odom_d = float("nan")
        if odom_xyz is not None and self._last_odom is not None:
            odom_d = float(np.linalg.norm(np.asarray(odom_xyz) - self._last_odom))
        if self.max_interval_ns is not None and dt >= self.max_interval_ns:
            self._set_keyframe(frame, None, odom_xyz)
            return KeyframeDecision(True, "time", odom_dist_m=odom_d)
        if np.isfinite(odom_d) and self.min_odom_dist_m > 0 and odom_d >= self.min_odom_dist_m:
            self._set_keyframe(frame, None, odom_xyz)
            return KeyframeDecision(True, "odometry", odom_dist_m=odom_d)
        flow = float("nan")
        if self.min_flow_px > 0 and self._last_grey is not None:
            grey = flow_image(frame.image)
            if grey.shape != self._last_grey.shape:
                self._set_keyframe(frame, grey, odom_xyz)
                return KeyframeDecision(True, "resolution", odom_dist_m=odom_d)
            flow, frac = median_flow(self._last_grey, self._last_pts, grey)
            if frac < self.min_tracked_fraction and self._last_pts is not None and len(self._last_pts) > 0:
                self._set_keyframe(frame, grey, odom_xyz)
                return KeyframeDecision(True, "tracking", flow, odom_d)
            if np.isfinite(flow) and flow >= self.min_flow_px:
                self._set_keyframe(frame, grey, odom_xyz)
                return KeyframeDecision(True, "flow", flow, odom_d)
        return KeyframeDecision(False, "static", flow, odom_d)


@dataclass
class Keyframe:
    """A keyframe with what the engine knows about it.

    Attributes:
        frame: the frame (image kept: a later window may use it as an anchor).
        T_map_cam: (4, 4) rigid camera-to-map pose in map units once localized, else None.
        confidence: localization confidence in [0, 1] (0 when not localized).
        window_id: window it was localized against (-1 if none).
    """

    frame: Frame
    T_map_cam: Optional[np.ndarray] = None
    confidence: float = 0.0
    window_id: int = -1

    @property
    def stamp_ns(self) -> int:
        return self.frame.stamp_ns

    @property
    def nbytes(self) -> int:
        return int(self.frame.image.nbytes)


class KeyframeBuffer:
    """Bounded FIFO of :class:`Keyframe` (oldest dropped first; drops are counted)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"keyframe buffer capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._items: collections.deque = collections.deque()
        self.dropped = 0

    def append(self, kf: Keyframe) -> None:
        self._items.append(kf)
        while len(self._items) > self.capacity:
            self._items.popleft()
            self.dropped += 1

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(list(self._items))

    def __getitem__(self, i):
        return list(self._items)[i]

    def since(self, stamp_ns: int) -> list[Keyframe]:
        """Keyframes with stamp strictly after ``stamp_ns`` (time order)."""
        return [k for k in self._items if k.stamp_ns > stamp_ns]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes for k in self._items)

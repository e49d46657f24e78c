"""Plain data types that flow through the engine (no ROS, no torch).

Frames and units: see :mod:`selfi_ros.geometry`. Stamps are integer nanoseconds (ROS time).
Poses of cameras are ``T_map_cam`` (camera-to-map, OpenCV optical axes) unless the name says otherwise.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Frame:
    """One camera image as the engine sees it.

    Attributes:
        stamp_ns: acquisition time in integer nanoseconds (the image header stamp).
        image: (H, W, 3) uint8 RGB.
        K: (3, 3) float64 intrinsics in pixels of ``image``, or None if unknown.
        frame_id: the camera optical frame (REP-103), e.g. ``camera_color_optical_frame``.
        index: running index assigned by the producer (for folders: sorted file order).
        source: optional origin, e.g. an image file name, kept for outputs like cameras.json.
    """

    stamp_ns: int
    image: np.ndarray
    K: Optional[np.ndarray] = None
    frame_id: str = "camera"
    index: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(
                f"Frame.image must be (H, W, 3) uint8 RGB, got {getattr(img, 'shape', None)} "
                f"{getattr(img, 'dtype', type(img))}"
            )
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise ValueError(f"Frame.image is empty: shape {img.shape}")
        if self.K is not None:
            K = np.asarray(self.K, dtype=np.float64)
            if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise ValueError(f"Frame.K must be a finite 3x3 with fx, fy > 0, got {self.K!r}")
            self.K = K

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


class PoseKind(str, enum.Enum):
    """How a pose was obtained."""

    ANCHOR = "anchor"  # reconstructed jointly with its window
    QUERY = "query"  # localized against a window's anchors / scene memory


@dataclass
class PoseEstimate:
    """A camera pose in the map frame.

    Attributes:
        stamp_ns: the stamp of the image this pose belongs to.
        T_map_cam: (4, 4) float64 camera-to-map transform (OpenCV optical axes); translation in map
            units (metres when ``metric`` is True, else the engine's up-to-scale units).
        K: (3, 3) float64 intrinsics estimated or used for this frame (pixels of the input image), or None.
        confidence: in [0, 1], backend-specific (e.g. inlier ratio, mean camera confidence).
        window_id: the window whose anchors produced the pose.
        kind: anchor or query.
        backend: name of the backend that produced it.
        metric: True when scale was fixed from odometry.
        frame_index: the Frame.index it belongs to.
        width, height: size (px) of the input image the pose and K refer to (0 when unknown).
        source: Frame.source of that image (e.g. file name), for cameras.json.
    """

    stamp_ns: int
    T_map_cam: np.ndarray
    K: Optional[np.ndarray] = None
    confidence: float = 1.0
    window_id: int = 0
    kind: PoseKind = PoseKind.QUERY
    backend: str = ""
    metric: bool = False
    frame_index: int = 0
    width: int = 0
    height: int = 0
    source: str = ""


@dataclass
class WindowReconstruction:
    """Result of jointly reconstructing one window of anchor keyframes, in the window's own frame.

    The window frame is the first anchor's camera frame (VGGT convention) or whatever frame the backend
    chose; ``T_map_window`` (Sim(3) as a 4x4 with scale in the rotation block: ``s R``) maps it into map.

    Attributes:
        window_id: running id.
        stamps_ns: (S,) anchor stamps.
        frame_indices: (S,) anchor Frame.index values.
        extrinsics: (S, 3, 4) float64 camera-from-window.
        intrinsics: (S, 3, 3) float64, pixels of ``depth``/``points`` resolution.
        image_size_hw: (H, W) of depth/points.
        depth: (S, H, W) float32 z-depth in each camera (window units), or None.
        depth_conf: (S, H, W) float32, or None.
        points: (S, H, W, 3) float32 point map in the window frame, or None.
        points_conf: (S, H, W) float32, or None.
        colors: (S, H, W, 3) uint8 RGB matching points, or None.
        sparse_points: (N, 3) float32 window-frame points for sparse backends (colmap), or None.
        sparse_colors: (N, 3) uint8, or None.
        T_map_window: (4, 4) float64 Sim(3) window -> map (set by chaining).
        chain_residual: RMS residual of the chaining fit (map units), NaN for the first window.
        backend: producing backend name.
        random_weights: True when produced by a randomly initialised model (plumbing only!).
        intrinsics_image: optional (S, 3, 3) intrinsics in pixels of each anchor's *input* image (for
            backends whose grid is cropped/padded, so a plain resize of ``intrinsics`` would be wrong);
            the engine falls back to rescaling ``intrinsics`` by the size ratio when None.
        descriptors: optional (S, D) float32 L2-normalised global descriptors of the anchors (what
            ``Backend.describe`` would give), when the backend gets them for free while reconstructing.
    """

    window_id: int
    stamps_ns: np.ndarray
    frame_indices: np.ndarray
    extrinsics: np.ndarray
    intrinsics: np.ndarray
    image_size_hw: tuple
    depth: Optional[np.ndarray] = None
    depth_conf: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None
    points_conf: Optional[np.ndarray] = None
    colors: Optional[np.ndarray] = None
    sparse_points: Optional[np.ndarray] = None
    sparse_colors: Optional[np.ndarray] = None
    T_map_window: np.ndarray = field(default_factory=lambda: np.eye(4))
    chain_residual: float = float("nan")
    backend: str = ""
    random_weights: bool = False
    intrinsics_image: Optional[np.ndarray] = None
    descriptors: Optional[np.ndarray] = None

    @property
    def num_frames(self) -> int:
        return int(len(self.stamps_ns))


@dataclass
class LocalizationResult:
    """What a backend returns for one query frame, in the window frame (before chaining).

    Attributes:
        stamp_ns, frame_index: identify the frame.
        extrinsics: (3, 4) float64 camera-from-window, or None when localization failed.
        K: (3, 3) intrinsics (input image pixels) or None.
        confidence: [0, 1].
        depth: optional (H, W) float32 depth of the query (window units).
        points: optional (H, W, 3) float32 window-frame point map.
        reason: failure reason when extrinsics is None (for a "flagged" pose: the disagreement).
        check: outcome of the geometric pose check (Selfi aligned-feature PnP, vggt backend): "" (not
            checked), "ok", "flagged" (disagrees, kept), "rejected" (disagrees, extrinsics None) or
            "unverified" (PnP failed).
        geometric_extrinsics: (3, 4) float64 camera-from-window PnP pose of that check, or None.
        inliers: 2D-3D correspondences supporting ``extrinsics`` (PnP RANSAC inliers; 0 where the backend has
            no such notion), for loop-closure verification.
    """

    stamp_ns: int
    frame_index: int
    extrinsics: Optional[np.ndarray]
    K: Optional[np.ndarray] = None
    confidence: float = 0.0
    depth: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None
    reason: str = ""
    check: str = ""
    geometric_extrinsics: Optional[np.ndarray] = None
    inliers: int = 0


@dataclass
class OdometrySample:
    """A pose of the robot from an odometry source (for metric scale and REP-105 ``map -> odom``).

    Attributes:
        stamp_ns: stamp.
        T_odom_base: (4, 4) float64 base-to-odom transform (metres).
    """

    stamp_ns: int
    T_odom_base: np.ndarray

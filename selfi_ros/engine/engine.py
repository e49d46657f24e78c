"""The streaming reconstruction engine: frames in, poses + map out. No ROS imports.

INTERFACE STUB written by the lead so that the node, the CLI and the engine can be built in parallel.
The engine owner fills in the implementation; the public names and signatures below are the contract
(fields may be added to the dataclasses, none removed or renamed without updating every user).

Driven the same way by the ROS node (from its worker thread), the offline CLI and the tests:

    engine = Engine(backend, EngineConfig(...))
    for frame in frames:
        out = engine.process_frame(frame)        # -> EngineOutput
        publish(out.poses, out.window)           # poses carry their own image stamps
    engine.save("out/")                          # map.ply, trajectory.tum, cameras.json, metadata.json
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .backend import Backend
from .types import Frame, OdometrySample, PoseEstimate, WindowReconstruction


@dataclass
class EngineConfig:
    """Engine parameters. The node declares one ROS parameter per field (same name), so every field
    needs a default, a simple type (bool, int, float, str) and a comment giving its unit."""

    # keyframe selection
    keyframe_min_interval_s: float = 0.0  # never two keyframes closer than this (s)
    keyframe_max_interval_s: float = 2.0  # force a keyframe after this long (s)
    keyframe_min_flow_px: float = 20.0  # median image motion (px at 256 px width) to make a keyframe
    keyframe_min_odom_dist_m: float = 0.10  # or this much odometry translation (m)
    keyframe_buffer_size: int = 64  # bounded keyframe buffer (frames)
    # windows / anchors
    window_size: int = 8  # anchors reconstructed jointly per window
    window_overlap: int = 2  # anchors shared with the previous window (for Sim(3) chaining)
    window_max_keyframes: int = 24  # keyframes localized against one window before a new one starts
    min_localization_confidence: float = 0.3  # below this a new window is triggered
    localize_non_keyframes: bool = True  # also localize frames that are not keyframes
    # map
    voxel_size: float = 0.02  # voxel edge of the accumulated map (map units)
    max_map_points: int = 2_000_000  # hard bound on accumulated map points
    min_point_confidence: float = 0.0  # drop point-map samples below this confidence
    max_points_per_window: int = 200_000  # subsample each window's cloud to this many points
    # scale
    use_odometry_scale: bool = True  # estimate metric scale from odometry when it is available


@dataclass
class EngineOutput:
    """What one call of :meth:`Engine.process_frame` produced.

    Attributes:
        poses: poses computed during this call (each stamped with its own image stamp; may include
            poses of earlier buffered frames when a window was just reconstructed).
        window: the window reconstructed (and chained into map) during this call, or None.
        window_points: (N, 3) float32 points of that window in the map frame, or None.
        window_colors: (N, 3) uint8 RGB of those points, or None.
        is_keyframe: whether the input frame became a keyframe.
        rejected: non-empty reason when the frame was not used.
    """

    poses: list[PoseEstimate] = field(default_factory=list)
    window: Optional[WindowReconstruction] = None
    window_points: Optional[np.ndarray] = None
    window_colors: Optional[np.ndarray] = None
    is_keyframe: bool = False
    rejected: str = ""


@dataclass
class EngineStatus:
    """Counters and figures for the status message and /diagnostics."""

    state: str = "initializing"  # initializing | mapping | localizing | lost
    backend: str = ""
    random_weights: bool = False
    frames_in: int = 0
    frames_rejected: int = 0
    keyframes: int = 0
    windows: int = 0
    poses: int = 0
    localization_failures: int = 0
    map_points: int = 0
    scale: float = 1.0  # metres per map unit (1.0 and metric=False without odometry)
    scale_std: float = float("nan")
    metric: bool = False
    chain_residual: float = float("nan")
    memory_bytes: int = 0
    last_window_ms: float = 0.0
    last_localize_ms: float = 0.0


class Engine:
    """Keyframes -> windows of anchors -> poses + voxelised map (see module docstring)."""

    def __init__(self, backend: Backend, config: Optional[EngineConfig] = None) -> None:
        raise NotImplementedError

    def process_frame(self, frame: Frame) -> EngineOutput:
        """Feed one frame (time order). Never raises on bad data: returns ``rejected`` instead."""
        raise NotImplementedError

    def add_odometry(self, sample: OdometrySample) -> None:
        """Add an odometry sample (buffered, bounded, interpolated at frame stamps)."""
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def status(self) -> EngineStatus:
        raise NotImplementedError

    def trajectory(self) -> list[PoseEstimate]:
        """All poses so far, in stamp order (bounded by the engine's history size)."""
        raise NotImplementedError

    def map_cloud(self) -> tuple[np.ndarray, np.ndarray]:
        """Accumulated voxelised map: (N, 3) float32 map-frame points, (N, 3) uint8 RGB."""
        raise NotImplementedError

    def save(self, out_dir: str) -> dict:
        """Write map.ply, trajectory.tum, cameras.json and metadata.json atomically; returns their paths."""
        raise NotImplementedError

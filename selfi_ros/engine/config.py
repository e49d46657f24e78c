"""Engine parameters (:class:`EngineConfig`): the one source of their defaults.

The engine, the window policy (:class:`selfi_ros.engine.windows.WindowPolicy`) and the ROS node (one
parameter per field, same name: :mod:`selfi_ros.ros.params`) all take their values from here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineConfig:
    """Engine parameters. The node declares one ROS parameter per field (same name), so every field
    needs a default, a simple type (bool, int, float, str) and a comment giving its unit."""

    # keyframe selection
    keyframe_min_interval_s: float = 0.0  # never two keyframes closer than this (s)
    keyframe_max_interval_s: float = 1.0  # force a keyframe after this long (s)
    keyframe_min_flow_px: float = 5.0  # median image motion to make a keyframe (px at 256 px width: 2% of the width)
    keyframe_min_odom_dist_m: float = 0.10  # or this much odometry translation (m)
    keyframe_buffer_size: int = 64  # bounded keyframe buffer (frames)
    # windows / anchors
    window_size: int = 6  # anchors reconstructed jointly per window
    window_overlap: int = 2  # anchors shared with the previous window (for Sim(3) chaining)
    window_max_keyframes: int = 24  # keyframes localized against one window before a new one starts
    min_localization_confidence: float = 0.3  # below this a new window is triggered
    localize_non_keyframes: bool = True  # also localize frames that are not keyframes
    skip_stale_non_keyframes: bool = True  # when newer frames wait (node queue), skip localizing non-keyframes (counted)
    # map
    voxel_size: float = 0.02  # voxel edge of the accumulated map (map units)
    max_map_points: int = 2_000_000  # hard bound on accumulated map points
    min_point_confidence: float = 0.0  # drop point-map samples below this confidence
    max_points_per_window: int = 200_000  # subsample each window's cloud to this many points
    # scale
    use_odometry_scale: bool = True  # estimate metric scale from odometry when it is available
    # windows, chaining, recovery and bounds
    window_min_anchor_coverage: float = 0.3  # new window when anchors cover less of a keyframe (fraction of 8x8 grid)
    max_held_frames: int = 64  # frames held until the first window exists (frames); older ones dropped
    max_trajectory_poses: int = 100_000  # poses kept for trajectory()/save (poses)
    chain_points_per_anchor: int = 1024  # point-map samples kept per anchor for chaining (points)
    chain_centre_weight: float = 10.0  # weight of a shared camera centre vs a point in chaining (ratio)
    localized_anchor_weight: float = 0.5  # chaining weight of a localized (not reconstructed) shared frame (ratio)
    lost_after_failures: int = 10  # consecutive localization failures before state "lost" (frames)
    scale_min_baseline_m: float = 0.2  # odometry distance between keyframes of a scale pair (m)
    scale_min_pairs: int = 5  # keyframe pairs before the scale counts as known (pairs)
    scale_max_rel_std: float = 0.05  # relative scale uncertainty needed for metric output (ratio)
    odometry_buffer_size: int = 10_000  # odometry samples kept (samples)
    odometry_max_gap_s: float = 0.5  # no odometry interpolation across longer gaps (s)
    random_seed: int = 0  # seed for subsampling and RANSAC (integer)
    localize_batch_size: int = 16  # held frames per backend.localize call after the first window (frames)

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
    # window database, place recognition, relocalization, loop closure, map reuse (backends with window memories)
    window_db_ram_mb: float = 1024.0  # RAM for window memories before the least recently used spill to disk (MB)
    window_db_max_windows: int = 2000  # windows kept in the database, in RAM or on disk (windows); oldest dropped
    window_db_disk_mb: float = 8192.0  # disk the spilled window memories may take (MB); oldest dropped beyond
    window_db_spill_dir: str = ""  # parent folder of the spill folder ("" = the system temporary folder)
    window_db_cloud_points: int = 16384  # subsampled points kept per window to rebuild the map after a correction (points)
    retrieval_top_k: int = 3  # candidate windows localized against per retrieval (windows)
    retrieval_min_similarity: float = 0.2  # least descriptor cosine similarity of a candidate window (unitless, [-1, 1])
    retrieval_exclude_recent: int = 3  # most recent windows never loop candidates (windows)
    relocalization: bool = True  # when lost, localize against retrieved windows before starting a new segment
    relocalization_min_inliers: int = 30  # correspondences needed to accept a relocalization (count)
    relocalization_interval: int = 5  # while lost, retry relocalization every this many failed frames (frames)
    revisit_windows: bool = True  # localize against a stored window that covers the view instead of making a new one
    loop_closure: bool = True  # detect, verify and close loops against old windows (pose graph)
    loop_min_inliers: int = 30  # correspondences of a keyframe against an old window to make a loop hypothesis (count)
    loop_min_keyframes: int = 3  # keyframes whose loop Sim(3)s must agree before a loop is accepted (keyframes, >= 2)
    loop_min_window_gap: int = 3  # pose-graph hops between the current and a candidate window (windows)
    loop_max_residual: float = 0.05  # RMS camera-centre residual of the loop Sim(3) fit / spread of the keyframes (ratio)
    loop_max_rotation_deg: float = 2.0  # mean rotation residual of the loop Sim(3) fit (deg)
    loop_min_spread: float = 0.1  # RMS spread of a loop's keyframes / scene depth before its Sim(3) is fitted (ratio)
    loop_max_correction: float = 0.3  # loop correction (translation) / path length between the windows (ratio)
    loop_max_correction_deg: float = 30.0  # rotation of the loop correction (deg)
    pose_graph_iterations: int = 100  # Levenberg-Marquardt iterations of a pose-graph optimisation (iterations)
    localization_only: bool = False  # localize every frame against the loaded map; no windows are added

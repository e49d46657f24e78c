"""Typed status of the engine and of its backend, read by attribute (no dicts, no ``getattr`` defaults).

:class:`EngineStatus` is what :meth:`selfi_ros.engine.engine.Engine.status` returns; :class:`BackendStatus`
is what every backend's ``status()`` returns (see :class:`selfi_ros.engine.backend.Backend`). The ROS
layer derives ``selfi_ros/SelfiStatus`` and the ``/diagnostics`` keys from these two dataclasses in one
place (:mod:`selfi_ros.ros.status`); a test fails when the message and the dataclasses drift apart.
Counters are since start or the last reset; figures are the latest values.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineStatus:
    """Counters and figures of the stream engine.

    Attributes (units in the comments): every name that also is a ``SelfiStatus`` field has the meaning
    documented in ``msg/SelfiStatus.msg``.
    """

    state: str = "initializing"  # initializing | mapping | localizing | lost (localizing: also localization-only)
    backend: str = ""  # backend name (colmap, vggt, oracle, ...)
    random_weights: bool = False  # the backend's model has random weights: outputs are meaningless
    frames_in: int = 0  # frames given to process_frames / process_frame
    frames_rejected: int = 0  # frames the engine refused (bad stamp, bad size, ...)
    frames_skipped: int = 0  # non-keyframes not localized because the caller was under load
    keyframes: int = 0  # keyframes selected
    windows: int = 0  # windows reconstructed and chained into the map
    poses: int = 0  # distinct frames posed (a re-posed anchor counts once)
    localization_failures: int = 0  # frames the backend could not localize
    window_failures: int = 0  # BackendError / chaining failures of reconstruct_window
    window_recoveries: int = 0  # windows made by a fallback plan after failed attempts (other overlap, fresh)
    map_segments: int = 0  # map segments not (yet) merged into the map: windows started unchained, pose guessed
    loop_candidates: int = 0  # keyframes localized against an old window with enough inliers (loop hypotheses)
    loop_closures: int = 0  # loops accepted after geometric verification (pose graph optimised)
    loop_rejections: int = 0  # loop hypotheses rejected by geometric verification
    relocalizations: int = 0  # lost frames relocalized against the window database (same map frame)
    relocalization_failures: int = 0  # relocalization attempts that found no window
    window_db_windows: int = 0  # windows in the window database (RAM or disk)
    window_db_spilled: int = 0  # of those, memories on disk only
    window_db_evictions: int = 0  # database evictions (spilled to disk, dropped beyond the bound, unreadable)
    window_db_loads: int = 0  # spilled memories read back from disk
    chain_failures: int = 0  # windows rejected because chaining failed
    held_dropped: int = 0  # non-keyframes dropped from the hold list before the first window
    keyframes_dropped: int = 0  # keyframes dropped from the bounded buffer
    backend_errors: int = 0  # BackendError raised by the backend (any call)
    map_points: int = 0  # points in the accumulated voxelised map
    map_voxel_size: float = float("nan")  # effective voxel edge (map units) after any coarsening
    scale: float = 1.0  # metres per map unit (1.0 and metric=False without odometry)
    scale_std: float = float("nan")  # standard deviation of scale (metres per map unit)
    scale_pairs: int = 0  # keyframe pairs behind the scale estimate
    metric: bool = False  # poses and points are in metres
    chain_residual: float = float("nan")  # RMS residual of the last window's Sim(3) chaining (map units)
    last_window_ms: float = 0.0  # wall time of the last window reconstruction (ms)
    last_localize_ms: float = 0.0  # wall time of the last localize call (ms)
    last_error: str = ""  # the last backend or chaining error, for /diagnostics


@dataclass
class BackendStatus:
    """Counters and figures a backend reports (all zero for a backend without the feature).

    The ``pose_check_*``, ``refine_*`` and ``adapter_swaps`` counters are the vggt backend's Selfi alignment
    (Selfi, arXiv 2512.08930): a learned query pose compared with a PnP pose from adapter-feature matches,
    and window bundle adjustment + depth-drift correction. The ``online_*`` figures are its online adapter
    training (only with ``online_adapter_training``).
    """

    memory_bytes: int = 0  # scene memory held by the backend (bytes)
    pose_checks: int = 0  # query poses checked against aligned-feature PnP
    pose_check_ok: int = 0  # ... that agreed
    pose_check_flagged: int = 0  # ... that disagreed and were kept, flagged
    pose_check_rejected: int = 0  # ... that disagreed and were rejected (localization failure)
    pose_check_unverified: int = 0  # ... for which PnP found no pose
    refine_applied: int = 0  # window refinements applied
    refine_rejected: int = 0  # window refinements refused (moved too much, raised the error)
    adapter_swaps: int = 0  # adapters swapped into the backend (online training)
    online_steps: int = 0  # online training steps
    online_evaluations: int = 0  # held-out evaluations of the candidate adapter
    online_rejected_candidates: int = 0  # candidates that did not beat the current adapter
    online_score: float = float("nan")  # held-out PCK@3 of the adapter in use
    online_train_clips: int = 0  # clips available for training
    online_val_clips: int = 0  # held-out clips
    online_windows_fed: int = 0  # windows turned into clips
    online_windows_skipped: int = 0  # windows not usable as clips
    online_errors: int = 0  # exceptions in the training thread (logged)

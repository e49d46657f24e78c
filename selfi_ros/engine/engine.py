"""The streaming reconstruction engine: frames in, poses + map out. No ROS imports.

Driven the same way by the ROS node (from its worker thread), the offline CLI and the tests:

    engine = Engine(backend, EngineConfig(...))
    for frame in frames:
        out = engine.process_frame(frame)        # -> EngineOutput
        publish(out.poses, out.window)           # poses carry their own image stamps
    engine.save("out/")                          # map.ply, trajectory.tum, cameras.json, metadata.json

Pipeline (SAIL-Recon-style anchors + localization over a stream, windows chained by Sim(3)):

1. Keyframe selection (time / optical flow / odometry distance) into a bounded keyframe buffer.
2. Until the first window exists, keyframes are collected (non-keyframes are held, bounded); with
   ``window_size`` keyframes the backend reconstructs window 0 (its frame becomes the map frame, up to
   scale), its points enter the voxel map, and poses are emitted for every anchor and held frame.
3. Afterwards each frame is localized against the current window (``Backend.localize``) and its pose
   ``T_map_cam = T_map_window ∘ T_window_cam`` is returned at once, stamped with its own image stamp.
4. When the window policy says so (N keyframes, low confidence, low anchor coverage), a new window is
   reconstructed from the ``window_overlap`` most recent previous anchors + new keyframes, chained into
   the map by a robust Sim(3) on the shared anchors' poses and pixel-aligned point maps, and becomes
   current. A failed window (backend error, chaining failure) leaves the current one in use, and the next
   keyframes try fallbacks, never the same anchor set twice: other shared frames (recently localized
   keyframes), a window of the newest keyframes chained through their localized poses, and last a new map
   segment placed by a constant-velocity prediction from the last poses (a discontinuity, counted in
   ``EngineStatus.map_segments``).
   With ``under_load`` (the caller has newer frames waiting), non-keyframes are not localized (counted),
   so a slow backend keeps up with the newest frames and every keyframe.
5. With odometry, the metric scale (metres per map unit) is estimated; once valid, outputs are metric
   (latched: they never fall back to map units; the latest valid estimate is used). The internal map
   stays in map units; outputs are multiplied by the scale when ``metric`` is set.

Memory is bounded: keyframes, held frames, trajectory and map have caps; of past windows only the
current window's subsampled anchor point maps (for chaining) are kept.
Thread safety: all public methods take one re-entrant lock.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import cv2
import numpy as np

from selfi_ros.geometry.camera import depth_to_points_cam, scale_intrinsics
from selfi_ros.geometry.se3 import invert_transform
from selfi_ros.geometry.sim3 import Sim3
from selfi_ros.engine import io as eio
from selfi_ros.engine.backend import Backend, BackendError
from selfi_ros.engine.chaining import ChainingError, SharedFrame, chain_window
from selfi_ros.engine.keyframes import Keyframe, KeyframeBuffer, KeyframeSelector
from selfi_ros.engine.map import PointMap, TrajectoryStore
from selfi_ros.engine.scale import OdometryBuffer, ScaleEstimator
from selfi_ros.engine.status import EngineStatus
from selfi_ros.engine.types import Frame, LocalizationResult, OdometrySample, PoseEstimate, PoseKind, WindowReconstruction
from selfi_ros.engine.windows import WindowPolicy, anchor_coverage

log = logging.getLogger("selfi_ros.engine")


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
        metric: True when poses/points are in metres (scale from odometry applied).
    """

    poses: list[PoseEstimate] = field(default_factory=list)
    window: Optional[WindowReconstruction] = None
    window_points: Optional[np.ndarray] = None
    window_colors: Optional[np.ndarray] = None
    is_keyframe: bool = False
    rejected: str = ""
    metric: bool = False


@dataclass
class _AnchorRecord:
    """A current-window anchor, kept for chaining the next window: its keyframe (map pose) and a subsample
    of its point map (normalised pixel coordinates in [0, 1), map-frame points, confidences)."""

    kf: Keyframe
    uv_norm: np.ndarray
    pts_map: np.ndarray
    conf: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.uv_norm.nbytes + self.pts_map.nbytes + self.conf.nbytes)


def window_point_maps(win: WindowReconstruction) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(S, H, W, 3) window-frame point maps and (S, H, W) confidences of a window.

    Uses ``points`` when given, else unprojects ``depth`` with the window's intrinsics/extrinsics;
    (None, None) for sparse-only backends. Confidence defaults to ones.
    """
    S = win.num_frames
    if win.points is not None:
        P = np.asarray(win.points, dtype=np.float64)
        conf = win.points_conf if win.points_conf is not None else win.depth_conf
    elif win.depth is not None:
        D = np.asarray(win.depth, dtype=np.float64)
        P = np.empty(D.shape + (3,))
        for i in range(S):
            Pc = depth_to_points_cam(D[i], win.intrinsics[i])
            E = np.asarray(win.extrinsics[i], dtype=np.float64)
            P[i] = (Pc - E[:3, 3]) @ E[:3, :3]
        conf = win.depth_conf
    else:
        return None, None
    if conf is None:
        conf = np.ones(P.shape[:-1], np.float32)
    return P, np.asarray(conf, dtype=np.float64)


class Engine:
    """Keyframes -> windows of anchors -> poses + voxelised map (see module docstring).

    Raises:
        ValueError: inconsistent configuration (e.g. keyframe buffer smaller than a window).
    """

    def __init__(self, backend: Backend, config: Optional[EngineConfig] = None) -> None:
        self.backend = backend
        self.config = config if config is not None else EngineConfig()
        c = self.config
        if c.keyframe_buffer_size < c.window_size:
            raise ValueError(f"keyframe_buffer_size ({c.keyframe_buffer_size}) must be >= window_size "
                             f"({c.window_size})")
        self.policy = WindowPolicy(c.window_size, c.window_overlap, c.window_max_keyframes,
                                   c.min_localization_confidence, c.window_min_anchor_coverage)
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(c.random_seed)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Drop all state (keyframes, windows, map, trajectory, odometry, scale) and the backend memory."""
        with self._lock:
            c = self.config
            self.selector = KeyframeSelector(c.keyframe_min_interval_s, c.keyframe_max_interval_s,
                                             c.keyframe_min_flow_px, c.keyframe_min_odom_dist_m)
            self.keyframes = KeyframeBuffer(c.keyframe_buffer_size)
            self.map = PointMap(c.voxel_size, c.max_map_points)
            self.traj = TrajectoryStore(c.max_trajectory_poses)
            self.odom = OdometryBuffer(c.odometry_buffer_size, c.odometry_max_gap_s)
            self.scale = ScaleEstimator(c.scale_min_baseline_m, c.scale_min_pairs, c.scale_max_rel_std,
                                        seed=c.random_seed)
            self._held: collections.deque = collections.deque()
            self._anchors: list[_AnchorRecord] = []
            self._T_map_window: Optional[Sim3] = None
            self._window_id = -1
            self._next_window_id = 0
            self._cutoff_ns = -(2 ** 62)  # keyframes after this stamp are window candidates
            self._last_stamp: Optional[int] = None
            self._consecutive_failures = 0
            self._recovery_stage = 0  # next fallback plan after failed windows (see _window_plan)
            self._tried_sets: set = set()  # anchor sets (stamps) that failed since the last window
            self._failed_overlap: set = set()  # previous anchors (stamps) used by failed attempts
            self._metric_scale = None  # latest valid ScaleEstimate
            self._status = EngineStatus(backend=getattr(self.backend, "name", ""),
                                        random_weights=bool(getattr(self.backend, "random_weights", False)),
                                        map_voxel_size=c.voxel_size)
            try:
                self.backend.reset()
            except Exception as e:  # noqa: BLE001 - a backend reset failure must not kill the engine
                log.warning("backend reset failed: %s", e)

    @property
    def metric(self) -> bool:
        """True once a valid scale estimate existed (latched: outputs never fall back to map units)."""
        return bool(self.config.use_odometry_scale and self._metric_scale is not None)

    @property
    def _out_scale(self) -> float:
        return self._metric_scale.scale if self.metric else 1.0

    # ------------------------------------------------------------------ inputs
    def add_odometry(self, sample: OdometrySample) -> None:
        """Add an odometry sample (buffered, bounded, interpolated at frame stamps)."""
        with self._lock:
            self.odom.add(int(sample.stamp_ns), sample.T_odom_base)

    def process_frame(self, frame: Frame, under_load: bool = False) -> EngineOutput:
        """Feed one frame (time order). Never raises on bad data: returns ``rejected`` instead.

        Args:
            frame: the frame.
            under_load: the caller has newer frames waiting (e.g. the node's queue is not empty). Keyframe
                selection still runs (cheap optical flow) and keyframes are fully processed, but a frame
                that is not a keyframe is neither localized nor held: no pose, counted in
                ``status().frames_skipped``. This keeps the newest frames and the keyframes
                flowing when the backend is slower than the camera. Ignored when the config's
                ``skip_stale_non_keyframes`` is False.
        """
        with self._lock:
            st = self._status
            st.frames_in += 1
            if not isinstance(frame, Frame):
                return self._reject(f"expected a Frame, got {type(frame).__name__}")
            if self._last_stamp is not None and frame.stamp_ns <= self._last_stamp:
                return self._reject(f"stamp {frame.stamp_ns} not after the previous frame's {self._last_stamp}")
            self._last_stamp = frame.stamp_ns
            try:
                return self._process(frame, bool(under_load))
            except (BackendError, ChainingError) as e:  # already handled inside; defensive
                return self._reject(f"{type(e).__name__}: {e}")
            except Exception as e:  # noqa: BLE001 - never crash the caller's thread on bad data
                log.exception("engine failed on frame %d", frame.index)
                return self._reject(f"internal error: {type(e).__name__}: {e}")

    def _reject(self, reason: str) -> EngineOutput:
        self._status.frames_rejected += 1
        self._status.last_error = reason
        log.warning("frame rejected: %s", reason)
        return EngineOutput(rejected=reason, metric=self.metric)

    def _process(self, frame: Frame, under_load: bool = False) -> EngineOutput:
        c = self.config
        odom_xyz = self.odom.position_at(frame.stamp_ns) if len(self.odom) else None
        decision = self.selector.check(frame, odom_xyz)
        out = EngineOutput(is_keyframe=decision.is_keyframe, metric=self.metric)
        kf = None
        if decision.is_keyframe:
            kf = Keyframe(frame)
            before = self.keyframes.dropped
            self.keyframes.append(kf)
            self._status.keyframes += 1
            self._status.keyframes_dropped += self.keyframes.dropped - before

        if kf is None and under_load and c.skip_stale_non_keyframes and (
                c.localize_non_keyframes or self._T_map_window is None):
            self._status.frames_skipped += 1
            return out
        if self._T_map_window is None:  # ---------------- building the first window
            if kf is None:
                if c.localize_non_keyframes:
                    self._held.append(frame)
                    while len(self._held) > c.max_held_frames:
                        self._held.popleft()
                        self._status.held_dropped += 1
                return out
            pending = self.keyframes.since(self._cutoff_ns)
            if len(pending) >= c.window_size:
                anchors = pending[-c.window_size:]
                if self._new_window(anchors, out, first=True):
                    held = list(self._held)
                    self._held.clear()
                    b = max(1, c.localize_batch_size)
                    for i in range(0, len(held), b):
                        out.poses.extend(self._localize(held[i:i + b]))
                else:
                    self._cutoff_ns = anchors[0].stamp_ns  # retry without the oldest keyframe
            out.poses.sort(key=lambda p: p.stamp_ns)
            out.metric = self.metric
            return out

        # ---------------------------------------------------- localizing against the current window
        if kf is None and not c.localize_non_keyframes:
            return out
        poses = self._localize([frame])
        pose = poses[0] if poses else None
        if kf is not None:
            self._status.state = "localizing" if self._consecutive_failures < c.lost_after_failures else "lost"
            conf = float("nan")
            coverage = float("nan")
            if pose is not None:
                kf.T_map_cam = self._internal_pose(pose)
                kf.confidence = pose.confidence
                kf.window_id = pose.window_id
                conf = pose.confidence
                coverage = self._coverage(kf.T_map_cam, pose.K, frame)
                self._scale_sample(kf)
            candidates = self.keyframes.since(self._cutoff_ns)
            if self._recovery_stage > 0:  # a window failed: try the next fallback at every keyframe
                want, reason = True, "recovery"
            else:
                trig = self.policy.trigger(len(candidates), conf, coverage)
                want, reason = trig.new_window, trig.reason
            if want:
                if self._attempt_window(candidates, out, reason):
                    refined = self.traj.get(frame.stamp_ns)
                    if refined is not None and refined.kind == PoseKind.ANCHOR:
                        pose = self._output_pose(refined)
        if pose is not None and all(p.stamp_ns != pose.stamp_ns for p in out.poses):
            out.poses.append(pose)
        out.poses.sort(key=lambda p: p.stamp_ns)
        out.metric = self.metric
        return out

    # ------------------------------------------------------------------ helpers
    def _internal_pose(self, pose: PoseEstimate) -> np.ndarray:
        """A pose as stored (map units), from an output pose (metres when metric)."""
        T = np.array(pose.T_map_cam, dtype=np.float64)
        if pose.metric:
            T[:3, 3] /= self._out_scale
        return T

    def _output_pose(self, p: PoseEstimate) -> PoseEstimate:
        """Copy of a stored (map-unit) pose, scaled to metres when the scale is known."""
        T = np.array(p.T_map_cam, dtype=np.float64)
        s = self._out_scale
        T[:3, 3] *= s
        return PoseEstimate(p.stamp_ns, T, None if p.K is None else p.K.copy(), p.confidence, p.window_id, p.kind,
                            p.backend, self.metric, p.frame_index, p.width, p.height, p.source)

    def _store_pose(self, frame: Frame, T_map_cam: np.ndarray, K, conf: float, kind: PoseKind) -> PoseEstimate:
        p = PoseEstimate(frame.stamp_ns, T_map_cam, None if K is None else np.asarray(K, np.float64), float(conf),
                         self._window_id, kind, getattr(self.backend, "name", ""), False, frame.index,
                         frame.width, frame.height, frame.source)
        self.traj.add(p)
        self._status.poses += 1
        return self._output_pose(p)

    def _coverage(self, T_map_cam: np.ndarray, K, frame: Frame) -> float:
        if K is None or not self._anchors:
            return float("nan")
        pts = np.concatenate([a.pts_map[:: max(1, len(a.pts_map) // 256)] for a in self._anchors])
        return anchor_coverage(pts, T_map_cam, K, frame.height, frame.width)

    def _scale_sample(self, kf: Keyframe) -> None:
        if not self.config.use_odometry_scale or kf.T_map_cam is None or not len(self.odom):
            return
        p = self.odom.position_at(kf.stamp_ns)
        if p is None:
            return
        was = self.metric
        self.scale.add(kf.stamp_ns, kf.T_map_cam[:3, 3], p)
        est = self.scale.update()
        self._status.scale_pairs = est.num_pairs
        if est.valid:  # the latest valid estimate is used; an invalid update keeps the previous one
            self._metric_scale = est
        if self.metric and not was:
            log.info("metric scale known: %.4g +- %.2g m per map unit (%d pairs); outputs are now in metres",
                     est.scale, est.std, est.num_pairs)

    def _localize(self, frames: list[Frame]) -> list[PoseEstimate]:
        """Localize frames against the current window; failures are counted. Returns poses (output units)."""
        t0 = time.perf_counter()
        try:
            results = self.backend.localize(frames)
        except Exception as e:  # noqa: BLE001 - BackendError or an unexpected backend crash (e.g. OOM)
            if not isinstance(e, BackendError):
                log.exception("backend.localize raised %s", type(e).__name__)
            self._status.backend_errors += 1
            self._status.localization_failures += len(frames)
            self._consecutive_failures += len(frames)
            self._status.last_error = f"localize: {e}"
            log.warning("localization failed: %s", e)
            return []
        finally:
            self._status.last_localize_ms = 1e3 * (time.perf_counter() - t0)
        if len(results) != len(frames):
            self._status.localization_failures += len(frames)
            self._status.last_error = f"backend returned {len(results)} localizations for {len(frames)} frames"
            return []
        poses = []
        for fr, r in zip(frames, results):
            if not isinstance(r, LocalizationResult) or r.extrinsics is None or not np.all(
                    np.isfinite(np.asarray(r.extrinsics, dtype=np.float64))):
                self._status.localization_failures += 1
                self._consecutive_failures += 1
                self._status.last_error = f"localize frame {fr.index}: {getattr(r, 'reason', '')}"
                continue
            self._consecutive_failures = 0
            T_win_cam = invert_transform(np.asarray(r.extrinsics, dtype=np.float64))
            T = self._T_map_window.transform_pose(T_win_cam)
            K = r.K if r.K is not None else fr.K
            poses.append(self._store_pose(fr, T, K, r.confidence, PoseKind.QUERY))
        return poses

    def _window_plan(self, candidates: list[Keyframe]) -> tuple[str, list[Keyframe]]:
        """The next window attempt: (mode, anchors), or ("", []) when none is possible yet.

        Stages, one attempt per keyframe, never an anchor set that already failed since the last window:
        0 ``overlap``: the most recent previous anchors + new keyframes (:meth:`WindowPolicy.select_anchors`);
        1 ``other_overlap``: shared frames other than the previous anchors of failed attempts (recently
        localized keyframes with good confidence); 2 ``fresh``: the newest keyframes only, chained through
        their localized poses (needs >= 2 localized with good confidence); 3 ``segment``: the newest
        keyframes as a new map segment (not chained: a discontinuity). After stage 1, failed attempts
        alternate between 2 and 3 (a fresh window stays preferable to a discontinuity when new keyframes
        make it possible again). Stages 2-3 need at least ``window_size - window_overlap`` (>= 2)
        keyframes since the last window, else the engine waits.
        """
        p = self.policy
        prev = [a.kf for a in self._anchors]
        min_fresh = max(2, p.window_size - p.overlap)
        stage = self._recovery_stage
        while stage <= 3:
            if stage == 0:
                mode, a = "overlap", p.select_anchors(prev, candidates)
            elif stage == 1:
                mode, a = "other_overlap", p.select_with_other_overlap(prev, candidates, self._failed_overlap)
            else:
                mode, a = ("fresh", "segment")[stage - 2], p.select_fresh(candidates)
                if len(a) < min_fresh:
                    return "", []  # wait for more keyframes
                if mode == "fresh" and sum(k.T_map_cam is not None and k.confidence >= p.min_confidence
                                           for k in a) < 2:
                    a = []
            if len(a) >= 2 and frozenset(k.stamp_ns for k in a) not in self._tried_sets:
                self._recovery_stage = stage
                return mode, a
            if stage == 3:
                return "", []  # the newest keyframes already failed as a segment: wait for another
            stage += 1
        return "", []

    def _attempt_window(self, candidates: list[Keyframe], out: EngineOutput, reason: str) -> bool:
        """One window attempt (next plan of :meth:`_window_plan`); on failure the next keyframe tries the
        next fallback. Returns True when a window was made."""
        mode, anchors = self._window_plan(candidates)
        if not anchors:
            return False
        log.info("new window (%s, %s) from %d anchors", reason, mode, len(anchors))
        if self._new_window(anchors, out, first=False, mode=mode):
            st = self._status
            if mode in ("other_overlap", "fresh"):
                st.window_recoveries += 1
            if mode == "segment":
                st.map_segments += 1
                log.warning("window %d starts a new map segment (discontinuity %d): windows could not be "
                            "chained; its pose is guessed from the last poses (constant velocity)", self._window_id,
                            st.map_segments)
            self._recovery_stage = 0
            self._tried_sets.clear()
            self._failed_overlap.clear()
            return True
        self._tried_sets.add(frozenset(k.stamp_ns for k in anchors))
        prev = {a.kf.stamp_ns for a in self._anchors}
        self._failed_overlap.update(k.stamp_ns for k in anchors if k.stamp_ns in prev)
        self._recovery_stage = {0: 1, 1: 2, 2: 3, 3: 2}[self._recovery_stage]
        return False

    def _segment_transform(self, anchors: list[Keyframe], T_win_cam: np.ndarray) -> Sim3:
        """Sim(3) window -> map of a new segment (nothing relates it to the map, so its placement is a guess).

        The newest anchor with a map pose keeps that pose; without one, the oldest anchor (the closest in
        time to the last pose) is placed at the constant-velocity prediction from the last poses
        (:meth:`_predict_pose`). The scale is the previous window's (backends normalise each window alike,
        e.g. colmap to a median depth of 1).
        """
        s = self._T_map_window.s if self._T_map_window is not None else 1.0
        idx = max((i for i, k in enumerate(anchors) if k.T_map_cam is not None), default=None)
        if idx is not None:
            T_ref = np.asarray(anchors[idx].T_map_cam, np.float64)
        else:
            idx = 0
            T_ref = self._predict_pose(anchors[0].stamp_ns)
            if T_ref is None:
                return Sim3(s, np.eye(3), np.zeros(3))
        R = T_ref[:3, :3] @ T_win_cam[idx][:3, :3].T
        return Sim3(s, R, T_ref[:3, 3] - s * R @ T_win_cam[idx][:3, 3])

    def _predict_pose(self, stamp_ns: int, min_baseline_s: float = 0.5,
                      max_ratio: float = 5.0) -> Optional[np.ndarray]:
        """Constant-velocity prediction of ``T_map_cam`` (map units) at ``stamp_ns`` from the last stored pose
        and the latest one at least ``min_baseline_s`` older: translation linear in time, rotation by the
        same fraction of the relative rotation (axis-angle); extrapolation limited to ``max_ratio`` times
        that baseline. The last pose when there is no older one; None without poses."""
        from scipy.spatial.transform import Rotation

        poses = self.traj.poses()
        if not poses:
            return None
        p2 = poses[-1]
        T2 = np.asarray(p2.T_map_cam, np.float64)
        p1 = next((p for p in reversed(poses[:-1]) if p2.stamp_ns - p.stamp_ns >= min_baseline_s * 1e9), None)
        if p1 is None or stamp_ns <= p2.stamp_ns:
            return T2.copy()
        T1 = np.asarray(p1.T_map_cam, np.float64)
        a = min(max_ratio, (stamp_ns - p2.stamp_ns) / float(p2.stamp_ns - p1.stamp_ns))
        rv = Rotation.from_matrix(T1[:3, :3].T @ T2[:3, :3]).as_rotvec()
        T = np.eye(4)
        T[:3, :3] = T2[:3, :3] @ Rotation.from_rotvec(a * rv).as_matrix()
        T[:3, 3] = T2[:3, 3] + a * (T2[:3, 3] - T1[:3, 3])
        return T

    def _new_window(self, anchors: list[Keyframe], out: EngineOutput, first: bool, mode: str = "overlap") -> bool:
        """Reconstruct, chain and add a window; on success update state/outputs and return True.

        ``mode`` "segment": not chained (see :meth:`_segment_transform`); its anchors' poses are output."""
        st = self._status
        wid = self._next_window_id
        self._next_window_id += 1  # one id per attempt (a failed attempt's id is not reused)
        t0 = time.perf_counter()
        try:
            win = self.backend.reconstruct_window(wid, [k.frame for k in anchors])
            self._check_window(win, len(anchors))
        except Exception as e:  # noqa: BLE001 - BackendError, bad shapes (ValueError) or a backend crash
            if not isinstance(e, (BackendError, ValueError)):
                log.exception("backend.reconstruct_window raised %s", type(e).__name__)
            st.backend_errors += not isinstance(e, ValueError) or isinstance(e, BackendError)
            st.window_failures += 1
            st.last_error = f"reconstruct_window {wid}: {e}"
            log.warning("window %d failed: %s", wid, e)
            st.last_window_ms = 1e3 * (time.perf_counter() - t0)
            return False
        T_win_cam = invert_transform(np.asarray(win.extrinsics, dtype=np.float64))
        P, conf = window_point_maps(win)
        if first:
            S = Sim3.identity()
            residual = float("nan")
        elif mode == "segment":
            S = self._segment_transform(anchors, T_win_cam)
            residual = float("nan")
        else:
            try:
                S, residual = self._chain(anchors, win, T_win_cam, P, conf)
            except ChainingError as e:
                st.chain_failures += 1
                st.window_failures += 1
                st.last_error = f"chaining window {wid}: {e}"
                log.warning("window %d not chained: %s", wid, e)
                st.last_window_ms = 1e3 * (time.perf_counter() - t0)
                return False
        win.T_map_window = S.matrix()
        win.chain_residual = residual
        self._T_map_window = S
        self._window_id = wid
        st.windows += 1
        st.chain_residual = residual
        st.state = "mapping"
        self._consecutive_failures = 0
        # anchor poses and records
        H, W = win.image_size_hw
        self._anchors = []
        for i, kf in enumerate(anchors):
            T = S.transform_pose(T_win_cam[i])
            kf.T_map_cam = T
            kf.confidence = 1.0
            kf.window_id = wid
            fr = kf.frame
            if win.intrinsics_image is not None and np.shape(win.intrinsics_image) == (len(anchors), 3, 3):
                K = np.asarray(win.intrinsics_image[i], np.float64)
            else:
                K = scale_intrinsics(win.intrinsics[i], fr.width / W, fr.height / H)
            pose = self._store_pose(fr, T, K, 1.0, PoseKind.ANCHOR)
            if first or mode == "segment":
                out.poses.append(pose)
            self._scale_sample(kf)
            self._anchors.append(self._anchor_record(kf, None if P is None else P[i],
                                                     None if conf is None else conf[i], S))
        self._cutoff_ns = anchors[-1].stamp_ns
        # map
        pts, cols = self._window_cloud(win, P, conf, anchors)
        if pts is not None and len(pts):
            pts_map = S.apply(pts)
            self.map.add(pts_map, cols)
            s = self._out_scale
            out.window_points = (pts_map * s).astype(np.float32)
            out.window_colors = cols
        st.map_points = len(self.map)
        st.map_voxel_size = self.map.voxel_size
        out.window = win
        st.last_window_ms = 1e3 * (time.perf_counter() - t0)
        return True

    @staticmethod
    def _check_window(win: WindowReconstruction, n: int) -> None:
        """Shape checks of a backend's window (raises ValueError naming the expected shapes)."""
        if not isinstance(win, WindowReconstruction):
            raise ValueError(f"backend returned {type(win).__name__}, expected WindowReconstruction")
        E = np.asarray(win.extrinsics)
        if E.shape != (n, 3, 4) and E.shape != (n, 4, 4):
            raise ValueError(f"window extrinsics must be ({n}, 3, 4), got {E.shape}")
        if not np.all(np.isfinite(E)):
            raise ValueError("window extrinsics are not finite")
        if np.asarray(win.intrinsics).shape != (n, 3, 3):
            raise ValueError(f"window intrinsics must be ({n}, 3, 3), got {np.asarray(win.intrinsics).shape}")
        H, W = (int(x) for x in win.image_size_hw)
        for name, tail in (("points", (3,)), ("depth", ()), ("points_conf", ()), ("depth_conf", ()),
                           ("colors", (3,))):
            a = getattr(win, name)
            if a is not None and np.asarray(a).shape != (n, H, W) + tail:
                raise ValueError(f"window {name} must be {(n, H, W) + tail}, got {np.asarray(a).shape}")
        if win.sparse_points is not None and np.asarray(win.sparse_points).reshape(-1).size % 3:
            raise ValueError(f"window sparse_points must be (N, 3), got {np.asarray(win.sparse_points).shape}")

    def _anchor_record(self, kf: Keyframe, P_i, conf_i, S: Sim3) -> _AnchorRecord:
        if P_i is None:
            z = np.zeros((0, 2))
            return _AnchorRecord(kf, z, np.zeros((0, 3)), np.zeros(0))
        H, W = P_i.shape[:2]
        n = max(1, self.config.chain_points_per_anchor)
        step = max(1, int(np.sqrt(H * W / n)))
        v, u = np.mgrid[step // 2:H:step, step // 2:W:step]
        v, u = v.reshape(-1), u.reshape(-1)
        p = P_i[v, u]
        cf = conf_i[v, u]
        ok = np.isfinite(p).all(1) & np.isfinite(cf) & (cf >= self.config.min_point_confidence)
        uv = np.stack([(u[ok] + 0.5) / W, (v[ok] + 0.5) / H], 1)
        return _AnchorRecord(kf, uv, S.apply(p[ok]), cf[ok])

    def _chain(self, anchors, win, T_win_cam, P, conf) -> tuple[Sim3, float]:
        c = self.config
        prev = {a.kf.stamp_ns: a for a in self._anchors}
        shared = []
        mp, wp, pw = [], [], []
        H, W = win.image_size_hw
        for i, kf in enumerate(anchors):
            if kf.T_map_cam is None:
                continue
            rec = prev.get(kf.stamp_ns)
            w = 1.0 if rec is not None else c.localized_anchor_weight * max(0.0, min(1.0, kf.confidence))
            if w <= 0:
                continue
            shared.append(SharedFrame(kf.T_map_cam, T_win_cam[i], w))
            if rec is not None and P is not None and len(rec.uv_norm):
                u = np.clip((rec.uv_norm[:, 0] * W).astype(int), 0, W - 1)
                v = np.clip((rec.uv_norm[:, 1] * H).astype(int), 0, H - 1)
                mp.append(rec.pts_map)
                wp.append(P[i, v, u])
                pw.append(np.minimum(rec.conf, conf[i, v, u]))
        kw = {}
        if mp:
            kw = dict(map_points=np.concatenate(mp), win_points=np.concatenate(wp),
                      point_weights=np.concatenate(pw))
        res = chain_window(shared, centre_weight=c.chain_centre_weight, rng=self._rng, **kw)
        log.info("window chained: s=%.4g residual=%.4g (%s, %d frames, %d points)", res.T_map_window.s,
                 res.residual, res.method, res.num_frames, res.num_points)
        return res.T_map_window, res.residual

    def _window_cloud(self, win, P, conf, anchors) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """Window-frame points (subsampled, confidence-filtered) and colours."""
        c = self.config
        if P is not None:
            S_, H, W = P.shape[:3]
            cols = win.colors
            if cols is None:
                cols = np.stack([cv2.resize(k.frame.image, (W, H), interpolation=cv2.INTER_AREA) for k in anchors])
            pts = P.reshape(-1, 3)
            cf = conf.reshape(-1)
            cols = np.asarray(cols, np.uint8).reshape(-1, 3)
            ok = np.isfinite(pts).all(1) & np.isfinite(cf) & (cf >= c.min_point_confidence)
            pts, cols = pts[ok], cols[ok]
        elif win.sparse_points is not None:
            pts = np.asarray(win.sparse_points, np.float64).reshape(-1, 3)
            cols = (np.full((len(pts), 3), 128, np.uint8) if win.sparse_colors is None
                    else np.asarray(win.sparse_colors, np.uint8).reshape(-1, 3))
            ok = np.isfinite(pts).all(1)
            pts, cols = pts[ok], cols[ok]
        else:
            return None, None
        if len(pts) > c.max_points_per_window > 0:
            idx = np.sort(self._rng.choice(len(pts), c.max_points_per_window, replace=False))
            pts, cols = pts[idx], cols[idx]
        return pts, cols

    # ------------------------------------------------------------------ outputs
    def status(self) -> EngineStatus:
        """A copy of the counters, with scale / memory figures refreshed."""
        with self._lock:
            st = self._status
            est = self._metric_scale
            st.scale = est.scale if self.metric else 1.0
            st.scale_std = est.std if self.metric else float("nan")
            st.metric = self.metric
            st.map_points = len(self.map)
            st.memory_bytes = int(self.keyframes.nbytes + sum(f.image.nbytes for f in self._held) + self.map.nbytes
                                  + sum(a.nbytes for a in self._anchors) + self.traj.nbytes
                                  + int(getattr(self.backend, "memory_bytes", 0) or 0))
            return EngineStatus(**asdict(st))

    def scale_estimate(self):
        """The current :class:`~selfi_ros.engine.scale.ScaleEstimate` (valid or not)."""
        with self._lock:
            return self.scale.estimate

    def trajectory(self) -> list[PoseEstimate]:
        """All poses so far, in stamp order (bounded by the engine's history size)."""
        with self._lock:
            return [self._output_pose(p) for p in self.traj.poses()]

    def map_cloud(self) -> tuple[np.ndarray, np.ndarray]:
        """Accumulated voxelised map: (N, 3) float32 map-frame points, (N, 3) uint8 RGB."""
        with self._lock:
            return self.map.scaled(self._out_scale)

    def save(self, out_dir: str) -> dict:
        """Write map.ply, trajectory.tum, cameras.json and metadata.json atomically; returns their paths.

        With a random-weights backend every file carries the warning (metadata.json ``WARNING`` and
        ``random_weights``, cameras.json ``random_weights``, a PLY header comment, a TUM ``#`` line)."""
        import os

        with self._lock:
            traj = self.trajectory()
            pts, cols = self.map_cloud()
            st = self.status()
            meta = {
                "backend": st.backend,
                "random_weights": st.random_weights,
                "WARNING": ("outputs come from a RANDOMLY INITIALISED model: plumbing only, not a reconstruction"
                            if st.random_weights else ""),
                "metric": st.metric,
                "units": "metres" if st.metric else "up to scale (map units of the first window)",
                "scale_m_per_unit": st.scale,
                "scale_std": st.scale_std,
                "frame_convention": "T_map_cam camera-to-map, OpenCV optical axes; extrinsics camera-from-map",
                "status": asdict(st),
                "config": asdict(self.config),
            }
        # every saved file says so when the model had random weights (PLY comment, TUM comment, JSON field)
        notes = [f"selfi_ros {st.backend}: {meta['WARNING']}"] if st.random_weights else []
        paths = {
            "map": eio.write_ply(os.path.join(out_dir, "map.ply"), pts, cols, comments=notes),
            "trajectory": eio.write_tum(os.path.join(out_dir, "trajectory.tum"), traj, comments=notes),
            "cameras": eio.write_json(os.path.join(out_dir, "cameras.json"),
                                      {"metric": st.metric, "random_weights": st.random_weights,
                                       "frames": eio.cameras_entries(traj)}),
        }
        paths["metadata"] = eio.write_json(os.path.join(out_dir, "metadata.json"), meta)
        return paths

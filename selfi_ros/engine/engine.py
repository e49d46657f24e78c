"""The streaming reconstruction engine: frames in, poses + map out. No ROS imports.

Driven the same way by the ROS node (from its worker thread), the offline CLI and the tests:

    engine = Engine(backend, EngineConfig(...))
    for batch in batches_of_frames:
        for out in engine.process_frames(batch):   # one EngineOutput per frame, in order
            publish(out.poses, out.window)         # poses carry their own image stamps
    engine.save("out/")                            # map.ply, trajectory.tum, cameras.json, metadata.json

Pipeline (SAIL-Recon-style anchors + localization over a stream, official repository HKUST-SAIL/SAIL-Recon;
windows chained by Sim(3)):

1. Keyframe selection (time / optical flow / odometry distance) into a bounded keyframe buffer.
2. Until the first window exists, keyframes are collected (non-keyframes are held, bounded); with
   ``window_size`` keyframes the backend reconstructs window 0 (its frame becomes the map frame, up to
   scale), its points enter the voxel map, and poses are emitted for every anchor and held frame.
3. Afterwards each frame is localized against the current window (``Backend.localize``) and its pose
   ``T_map_cam = T_map_window ∘ T_window_cam`` is returned, stamped with its own image stamp. The frames
   of one :meth:`Engine.process_frames` batch between window events share one ``localize`` call.
4. When the window policy says so (N keyframes, low confidence, low anchor coverage), a new window is
   reconstructed from the ``window_overlap`` most recent previous anchors + new keyframes, chained into
   the map by a robust Sim(3) on the shared anchors' poses and pixel-aligned point maps
   (:mod:`selfi_ros.engine.integration`), and becomes current. A failed window leaves the current one in
   use and the next keyframes try fallbacks (:mod:`selfi_ros.engine.recovery`), last a new map segment
   (a discontinuity, counted in ``EngineStatus.map_segments``).
   A stale frame (newer frames wait: the batch's earlier frames, or all with ``under_load``) that is not a
   keyframe is not localized (counted), so a slow backend keeps up with the newest frames and every keyframe.
5. With odometry, the metric scale (metres per map unit) is estimated; once valid, outputs are metric
   (latched: they never fall back to map units; the latest valid estimate is used). Everything stored
   (keyframe poses, trajectory, map) stays in map units; an output is multiplied by the scale once, when
   it leaves the engine.

6. With a backend that keeps window memories (``supports_map``): a bounded window database and a Sim(3)
   pose graph; verified loop closures re-express poses and map (:mod:`selfi_ros.engine.loop_closure`); a
   lost camera relocalizes and a known place is revisited instead of growing the map
   (:mod:`selfi_ros.engine.recovery`); maps are saved / loaded and ``localization_only`` localizes frames
   against a loaded map (:mod:`selfi_ros.engine.map_store`).

Memory is bounded: keyframes, held frames, trajectory, map and window database have caps. Thread safety:
all public methods except :meth:`Engine.set_idle` and :meth:`Engine.backend_status` take one re-entrant lock.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from selfi_ros.geometry.sim3 import Sim3
from selfi_ros.engine import integration as ig
from selfi_ros.engine import io as eio
from selfi_ros.engine.backend import Backend, BackendError
from selfi_ros.engine.chaining import ChainingError
from selfi_ros.engine.config import EngineConfig
from selfi_ros.engine.keyframes import Keyframe, KeyframeBuffer, KeyframeSelector
from selfi_ros.engine.loop_closure import LoopClosure, LoopDetector
from selfi_ros.engine.map import PointMap, TrajectoryStore
from selfi_ros.engine import map_store
from selfi_ros.engine.pose_graph import PoseGraph
from selfi_ros.engine.recovery import Relocalization, WindowRecovery
from selfi_ros.engine.scale import OdometryBuffer, ScaleEstimator
from selfi_ros.engine.status import BackendStatus, EngineStatus
from selfi_ros.engine.types import Frame, OdometrySample, PoseEstimate, PoseKind, WindowReconstruction
from selfi_ros.engine.window_db import WindowDatabase
from selfi_ros.engine.windows import WindowPolicy

__all__ = ["Engine", "EngineConfig", "EngineOutput"]

log = logging.getLogger("selfi_ros.engine")


@dataclass
class EngineOutput:
    """What the engine produced for one input frame (:meth:`Engine.process_frames`).

    Attributes:
        poses: poses computed for this frame (each stamped with its own image stamp; may include poses of
            earlier buffered frames when a window was just reconstructed).
        window: the window reconstructed (and chained into map) at this frame, or None.
        window_points: (N, 3) float32 points of that window in the map frame, or None.
        window_colors: (N, 3) uint8 RGB of those points, or None.
        is_keyframe: whether the input frame became a keyframe.
        rejected: non-empty reason when the frame was not used.
        metric: True when poses/points are in metres (scale from odometry applied).
        map_corrected: a loop closure moved the map's windows here: earlier poses and the map cloud changed
            (republish them; the ``map`` frame jumps, REP-105: ``odom`` stays smooth).
        map_correction: (4, 4) Sim(3) ``T_map_new_map_old`` of the current window (output units) or None.
    """

    poses: list[PoseEstimate] = field(default_factory=list)
    window: Optional[WindowReconstruction] = None
    window_points: Optional[np.ndarray] = None
    window_colors: Optional[np.ndarray] = None
    is_keyframe: bool = False
    rejected: str = ""
    metric: bool = False
    map_corrected: bool = False
    map_correction: Optional[np.ndarray] = None


class Engine(ig.WindowIntegration, LoopClosure, Relocalization):
    """Keyframes -> windows of anchors -> poses + voxelised map (see module docstring).

    Args:
        backend: the reconstruction backend (:class:`~selfi_ros.engine.backend.Backend`).
        config: engine parameters (defaults: ``EngineConfig()``).

    Raises:
        TypeError: ``backend`` lacks a member of the :class:`~selfi_ros.engine.backend.Backend` protocol
            (the message names the missing ones).
        ValueError: inconsistent configuration (e.g. keyframe buffer smaller than a window).
    """

    def __init__(self, backend: Backend, config: Optional[EngineConfig] = None) -> None:
        if not isinstance(backend, Backend):
            missing = [m for m in ("name", "random_weights", "reconstruct_window", "localize", "reset", "status",
                                   "set_idle", "close", "supports_map", "map_signature", "export_window",
                                   "load_window", "localize_in", "describe") if not hasattr(backend, m)]
            raise TypeError(f"{type(backend).__name__} is not a Backend: missing {', '.join(missing)} "
                            "(derive from selfi_ros.engine.backend.BackendBase for the optional members)")
        self.backend = backend
        self.config = config if config is not None else EngineConfig()
        c = self.config
        if c.keyframe_buffer_size < c.window_size:
            raise ValueError(f"keyframe_buffer_size ({c.keyframe_buffer_size}) must be >= window_size "
                             f"({c.window_size})")
        if c.loop_min_keyframes < 2:
            raise ValueError(f"loop_min_keyframes must be >= 2, got {c.loop_min_keyframes}")
        self.db: Optional[WindowDatabase] = None
        self.policy = WindowPolicy.from_config(c)
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
            self.recovery = WindowRecovery(self.policy)
            self._held: collections.deque = collections.deque()
            self._anchors: list[ig.AnchorRecord] = []
            self._T_map_window: Optional[Sim3] = None
            self._window_id = -1
            self._next_window_id = 0
            self._cutoff_ns = -(2 ** 62)  # keyframes after this stamp are window candidates
            self._last_stamp: Optional[int] = None
            self._consecutive_failures = 0
            self._metric_scale = None  # latest valid ScaleEstimate
            # window memories (backends with supports_map): database, pose graph, loops, revisits
            if self.db is not None:
                self.db.clear()
            self.db = (WindowDatabase(self.backend, int(c.window_db_ram_mb * 2 ** 20), c.window_db_max_windows,
                                      c.window_db_spill_dir, int(c.window_db_disk_mb * 2 ** 20))
                       if bool(self.backend.supports_map) else None)
            self.graph = PoseGraph()
            self._loops = LoopDetector(c.loop_min_keyframes)
            self._desc_cache: collections.OrderedDict = collections.OrderedDict()
            self._active_memory = None  # a stored window being revisited (None: the backend's current one)
            self._frontier, self._frontier_misses = None, 0  # the backend's window left for a revisit
            self._camera = None  # (K, width, height) of the first frame with intrinsics
            self.map_info: dict = {}  # metadata of a loaded map
            self._relocalize_first = False  # restart_stream(): relocalize frames before a first window
            self._status = EngineStatus(backend=str(self.backend.name),
                                        random_weights=bool(self.backend.random_weights),
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

    def set_idle(self, idle: bool) -> None:
        """Tell the backend whether the caller is idle (no frames waiting): ``backend.set_idle(idle)``, which
        runs background work (online adapter training) only while idle. Does not take the engine lock."""
        self.backend.set_idle(bool(idle))

    def process_frame(self, frame: Frame, under_load: bool = False) -> EngineOutput:
        """Feed one frame (time order): :meth:`process_frames` with a batch of one."""
        return self.process_frames([frame], under_load)[0]

    def process_frames(self, frames: Sequence[Frame], under_load: bool = False) -> list[EngineOutput]:
        """Feed frames (time order). Never raises on bad data: a bad frame's output has ``rejected`` set.

        Every frame goes through keyframe selection in order; the frames to localize between two window
        events (non-keyframes, and keyframes that cannot trigger a window) are localized in one
        ``backend.localize`` call, just before the next window event or at the end of the batch. The
        poses are the ones single-frame calls would give, each with its own image stamp.

        Args:
            frames: the frames, stamps strictly increasing (also across calls).
            under_load: the caller has newer frames waiting beyond this batch (e.g. the node's queue is not
                empty). A frame is *stale* when newer frames wait: every frame of the batch but the last,
                and the last too with ``under_load``. With the config's ``skip_stale_non_keyframes`` (the
                default) keyframe selection still runs on a stale frame (cheap optical flow) and keyframes
                are fully processed, but a stale non-keyframe is neither localized nor held: no pose,
                counted in ``status().frames_skipped``. This keeps the newest frame and every keyframe
                flowing when the backend is slower than the camera, exactly as feeding the frames one by one
                with ``under_load`` set while newer ones wait. With ``skip_stale_non_keyframes`` False every
                frame is localized, the batch's in one ``localize`` call.

        Returns:
            One :class:`EngineOutput` per input frame, in order.
        """
        with self._lock:
            outs: list[Optional[EngineOutput]] = [None] * len(frames)
            pending: list[tuple[int, Frame, Optional[Keyframe]]] = []  # frames to localize, in order
            for i, frame in enumerate(frames):
                st = self._status
                st.frames_in += 1
                if not isinstance(frame, Frame):
                    outs[i] = self._reject(f"expected a Frame, got {type(frame).__name__}")
                    continue
                if self._last_stamp is not None and frame.stamp_ns <= self._last_stamp:
                    outs[i] = self._reject(f"stamp {frame.stamp_ns} not after the previous frame's "
                                           f"{self._last_stamp}")
                    continue
                self._last_stamp = frame.stamp_ns
                try:
                    stale = bool(under_load) or i < len(frames) - 1  # newer frames wait
                    outs[i] = self._step(i, frame, stale, pending, outs)
                except Exception as e:  # noqa: BLE001 - never crash the caller's thread on bad data
                    outs[i] = self._fail(e, frame)
            try:
                self._localize_pending(pending, outs)
            except Exception as e:  # noqa: BLE001
                for j, fr, _ in pending:
                    outs[j] = self._fail(e, fr)
            return outs

    def _fail(self, e: Exception, frame: Frame) -> EngineOutput:
        if isinstance(e, (BackendError, ChainingError)):  # already handled inside; defensive
            return self._reject(f"{type(e).__name__}: {e}")
        log.exception("engine failed on frame %d", frame.index)
        return self._reject(f"internal error: {type(e).__name__}: {e}")

    def _reject(self, reason: str) -> EngineOutput:
        self._status.frames_rejected += 1
        self._status.last_error = reason
        log.warning("frame rejected: %s", reason)
        return EngineOutput(rejected=reason, metric=self.metric)

    def _step(self, i: int, frame: Frame, under_load: bool, pending: list, outs: list) -> EngineOutput:
        """One frame of a batch: keyframe selection, then the first window, a deferred localization
        (appended to ``pending``) or a keyframe that may trigger a window (``pending`` localized first)."""
        c = self.config
        odom_xyz = self.odom.position_at(frame.stamp_ns) if len(self.odom) else None
        decision = self.selector.check(frame, odom_xyz)
        out = EngineOutput(is_keyframe=decision.is_keyframe, metric=self.metric)
        if self._camera is None and frame.K is not None:
            self._camera = (frame.K.copy(), frame.width, frame.height)
        if c.localization_only:  # against the loaded map only: no keyframes, no windows
            if not (decision.is_keyframe or not under_load or not c.skip_stale_non_keyframes):
                self._status.frames_skipped += 1
                return out
            self._localization_only_step(frame, out)
            out.metric = self.metric
            return out
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
        if self._T_map_window is None:
            if self._relocalize_first and self._restart_relocalized(frame, kf, out):
                return out
            return self._first_window_step(frame, kf, out)
        if kf is None and not c.localize_non_keyframes:
            return out
        outs[i] = out
        pending.append((i, frame, kf))
        if kf is None:
            return out  # deferred
        candidates = self.keyframes.since(self._cutoff_ns)
        if not (self.recovery.recovering or self.policy.may_trigger(len(candidates))):
            return out  # cannot trigger a window whatever its localization: deferred
        try:
            pose, conf, coverage = self._localize_pending(pending, outs, event=True)
        finally:
            pending.clear()
        self._window_event(frame, candidates, pose, conf, coverage, out)
        return out

    def _localize_pending(self, pending: list, outs: list, event: bool = False
                          ) -> tuple[Optional[PoseEstimate], float, float]:
        """Localize the ``pending`` (index, frame, keyframe or None) in one backend call and fill their
        outputs in order; a keyframe's map pose, confidence, state and scale sample are updated right after
        its own pose, as with one call per frame. With ``event`` the last one is the keyframe that may
        trigger a window: its output pose (None: failed), confidence and anchor coverage (NaN: unknown) are
        returned instead of being added to its output."""
        nan = float("nan")
        if not pending:
            return None, nan, nan
        poses, failures = self._localize([fr for _, fr, _ in pending])
        for n, ((i, fr, kf), pose, nfail) in enumerate(zip(pending, poses, failures)):
            out_pose = None if pose is None else self._output_pose(pose)
            conf = coverage = nan
            if kf is not None:
                conf, coverage = self._keyframe_localized(kf, pose, nfail)
            if event and n == len(pending) - 1:
                return out_pose, conf, coverage
            out = outs[i]
            if out_pose is not None:
                out.poses.append(out_pose)  # its only pose: a deferred frame starts no window
            out.metric = self.metric
        return None, nan, nan

    def _keyframe_localized(self, kf: Keyframe, pose: Optional[PoseEstimate], failures: int
                            ) -> tuple[float, float]:
        """Record a keyframe's localization (``pose`` in map units, None: failed; ``failures``: consecutive
        localization failures after it). Returns (confidence, anchor coverage), NaN when it failed."""
        c = self.config
        self._status.state = "localizing" if failures < c.lost_after_failures else "lost"
        if pose is None:
            return float("nan"), float("nan")
        kf.T_map_cam = np.array(pose.T_map_cam, dtype=np.float64)
        kf.confidence = pose.confidence
        kf.window_id = pose.window_id
        coverage = self._coverage(kf.T_map_cam, pose.K, kf.frame)
        self._scale_sample(kf)
        return pose.confidence, coverage

    def _window_event(self, frame: Frame, candidates: list[Keyframe], pose: Optional[PoseEstimate], conf: float,
                      coverage: float, out: EngineOutput) -> None:
        """After a keyframe's localization: a window attempt from ``candidates`` (the keyframes since the
        current window, this one last) when the policy (or a pending recovery) asks, then the keyframe's own
        pose into ``out`` (its anchor pose when it became an anchor)."""
        kf = candidates[-1] if candidates and candidates[-1].stamp_ns == frame.stamp_ns else None
        if kf is not None and pose is not None:
            self._loop_step(kf, out)
        if self.recovery.recovering:  # a window failed: try the next fallback at every keyframe
            want, reason = True, "recovery"
        else:
            trig = self.policy.trigger(len(self.keyframes.since(self._cutoff_ns)), conf, coverage)
            want, reason = trig.new_window, trig.reason
        revisit = self._try_revisit(kf) if want and kf is not None and not out.map_corrected else None
        if revisit is not None:
            pose = self._output_pose(revisit)
        elif out.map_corrected:
            stored = self.traj.get(frame.stamp_ns)
            pose = self._output_pose(stored) if stored is not None else pose
        elif want and self._attempt_window(self.keyframes.since(self._cutoff_ns), out, reason):
            refined = self.traj.get(frame.stamp_ns)
            if refined is not None and refined.kind == PoseKind.ANCHOR:
                pose = self._output_pose(refined)
        if pose is not None and all(p.stamp_ns != pose.stamp_ns for p in out.poses):
            out.poses.append(pose)
        out.poses.sort(key=lambda p: p.stamp_ns)
        out.metric = self.metric

    # ------------------------------------------------------------------ helpers
    def _output_pose(self, p: PoseEstimate) -> PoseEstimate:
        """Copy of a stored (map-unit) pose for output: scaled to metres when the scale is known."""
        T = np.array(p.T_map_cam, dtype=np.float64)
        T[:3, 3] *= self._out_scale
        return PoseEstimate(p.stamp_ns, T, None if p.K is None else p.K.copy(), p.confidence, p.window_id, p.kind,
                            p.backend, self.metric, p.frame_index, p.width, p.height, p.source)

    def _store_pose(self, frame: Frame, T_map_cam: np.ndarray, K, conf: float, kind: PoseKind) -> PoseEstimate:
        """Store a pose (map units) in the trajectory; returns the stored pose. ``status().poses`` counts
        distinct frames: a frame posed again (an anchor re-posed by a later window) replaces its pose and is
        not counted twice."""
        p = PoseEstimate(frame.stamp_ns, T_map_cam, None if K is None else np.asarray(K, np.float64), float(conf),
                         self._window_id, kind, self.backend.name, False, frame.index,
                         frame.width, frame.height, frame.source)
        new = self.traj.get(frame.stamp_ns) is None
        self.traj.add(p)
        self._status.poses += int(new)
        return p

    # ------------------------------------------------------------------ outputs
    def status(self) -> EngineStatus:
        """A copy of the engine counters with the scale figures refreshed (cheap: no memory sum, see
        :meth:`memory_bytes`)."""
        with self._lock:
            st = self._status
            est = self._metric_scale
            st.scale = est.scale if self.metric else 1.0
            st.scale_std = est.std if self.metric else float("nan")
            st.metric = self.metric
            st.map_points = len(self.map)
            if self.db is not None:
                st.window_db_windows = len(self.db)
                st.window_db_spilled = self.db.spilled
                st.window_db_evictions = int(sum(self.db.evictions.values()))
                st.window_db_loads = self.db.loads
            return replace(st)  # a copy (scalar fields only)

    def backend_status(self) -> BackendStatus:
        """The backend's counters (``backend.status()``). Does not take the engine lock."""
        return self.backend.status()

    def memory_bytes(self) -> int:
        """Bytes held by the engine's buffers (keyframe and held images, map, anchor records, trajectory) plus
        the backend's scene memory (``backend_status().memory_bytes``); computed on demand (it sums them)."""
        with self._lock:
            own = (self.keyframes.nbytes + sum(f.image.nbytes for f in self._held) + self.map.nbytes
                   + sum(a.nbytes for a in self._anchors) + self.traj.nbytes
                   + (self.db.ram_bytes if self.db is not None else 0))
        return int(own + int(self.backend_status().memory_bytes))

    def scale_estimate(self):
        """The current :class:`~selfi_ros.engine.scale.ScaleEstimate` (valid or not)."""
        with self._lock:
            return self.scale.estimate

    def trajectory(self) -> list[PoseEstimate]:
        """All poses so far, in stamp order (bounded by the engine's history size), in output units."""
        with self._lock:
            return [self._output_pose(p) for p in self.traj.poses()]

    def map_cloud(self) -> tuple[np.ndarray, np.ndarray]:
        """Accumulated voxelised map: (N, 3) float32 map-frame points (output units), (N, 3) uint8 RGB."""
        with self._lock:
            return self.map.scaled(self._out_scale)

    def save(self, out_dir: str) -> dict:
        """Write map.ply, trajectory.tum, cameras.json and metadata.json atomically; returns their paths
        (:func:`selfi_ros.engine.io.save_outputs`); with a backend that keeps window memories and at least
        one window also the reusable map into ``out_dir/map`` (:meth:`save_map`; key ``map_dir``, or
        ``map_error`` saying why it could not be written)."""
        with self._lock:
            traj = self.trajectory()
            pts, cols = self.map_cloud()
            st = self.status()
            paths = eio.save_outputs(out_dir, traj, pts, cols, st, self.config)
            if self.db is not None and len(self.db):
                try:
                    paths["map_dir"] = self.save_map(os.path.join(out_dir, "map"))["directory"]
                except Exception as e:  # noqa: BLE001 - the outputs above are written; say why the map is not
                    log.error("the reusable map could not be saved: %s: %s", type(e).__name__, e)
                    self._status.last_error = paths["map_error"] = f"save_map: {type(e).__name__}: {e}"
        return paths

    def save_map(self, directory: str) -> dict:
        """Write the whole reusable map into ``directory`` atomically; returns the paths
        (:func:`selfi_ros.engine.map_store.save_map`, which says what it raises)."""
        with self._lock:
            return map_store.save_map(self, directory)

    def load_map(self, directory: str, camera=None) -> dict:
        """Replace the engine's state by a map saved with :meth:`save_map` (frames are then localized
        against it; with ``localization_only`` no window is added). ``camera``: optional ``(K, width,
        height)`` that must match the map's. Returns the map's metadata. Raises
        :class:`~selfi_ros.engine.map_store.MapLoadError` (a ValueError) with a one-line reason; the
        engine's state is unchanged then."""
        with self._lock:
            return map_store.load_map(self, directory, camera)

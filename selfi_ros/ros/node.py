"""``selfi_node``: the rclpy node around :class:`~selfi_ros.engine.engine.Engine`.

Inputs: ``sensor_msgs/Image`` (or ``CompressedImage`` on ``<image_topic>/compressed``) + ``CameraInfo``
matched by stamp (approximate sync, ``sync_threshold_ms``), optional ``nav_msgs/Odometry``, and
``/tf_static`` for the ``base_frame -> camera`` extrinsics (chains through intermediate frames).

Each image is converted to a :class:`~selfi_ros.engine.types.Frame` in its callback, validated (encoding,
size, CameraInfo agreement, intrinsics, stamp order) and put into a bounded queue (when full, the frame
whose removal leaves the smallest time gap is dropped, so that the queue spans a long stall); a worker
thread owns the engine, so callbacks never block on inference. When newer frames wait in the queue, the
worker passes ``under_load`` to the engine: keyframes are still fully processed, other frames are not
localized (``skip_stale_non_keyframes``; counted as dropped, reason ``skipped_under_load``), so that the
worker catches up with the newest frame instead of lagging behind. Every rejection or drop
is logged (throttled) and counted by reason (``~/status``, ``/diagnostics``).

Outputs, stamped with the image stamp: ``/tf`` (REP-105: ``map -> odom`` with odometry, ``map ->
base_link`` with a URDF camera, else ``map -> camera``; parameter ``publish_tf``), ``~/window_cloud`` and
``~/map_cloud`` (``sensor_msgs/PointCloud2`` in the map frame, the map latched and voxelised),
``~/path``, ``~/odometry`` (with covariance), ``~/pose``, ``~/status`` (``selfi_ros/SelfiStatus``) and
``/diagnostics``. Services ``~/reset`` and ``~/save_map`` (``std_srvs/Trigger``).

Start it as ``ros2 run selfi_ros selfi_node --ros-args --params-file config/selfi.yaml`` on a robot, or
``python -m selfi_ros.ros.node --ros-args --params-file config/selfi.yaml -p backend:=colmap`` from a venv.
"""
from __future__ import annotations

import collections
import importlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from selfi_ros.geometry import invert_transform

from selfi_ros.engine.engine import Engine, EngineOutput
from selfi_ros.engine.types import Frame, PoseEstimate
from selfi_ros.ros import conversions as cv
from selfi_ros.ros.params import NodeConfig, backend_options, declare_parameters

RANDOM_WEIGHTS_BANNER = (
    "\n" + "!" * 78 + "\n!! selfi_node: the backend runs a model with RANDOM WEIGHTS. Poses and clouds are\n"
    "!! MEANINGLESS - plumbing tests only. Give a checkpoint for real output.\n" + "!" * 78
)


def ensure_localhost_discovery() -> None:
    """Default ``ROS_AUTOMATIC_DISCOVERY_RANGE`` to ``LOCALHOST`` when unset (call before ``rclpy.init``);
    set it to ``SUBNET`` explicitly to talk to other machines."""
    if not os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE"):
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        print("selfi_ros: ROS_AUTOMATIC_DISCOVERY_RANGE unset -> LOCALHOST (set SUBNET for other machines)",
              file=sys.stderr)


def make_backend_from_config(cfg: NodeConfig):
    """Backend named by ``cfg.backend``: a registry name (``colmap``, ``vggt``, ``oracle``) or
    ``package.module:Class`` (tests, plug-ins), built with the backend options that were set.

    Raises:
        ValueError / ImportError / TypeError: unknown backend, missing module, or options it does not take.
    """
    opts = backend_options(cfg)
    if ":" in cfg.backend:
        mod, cls = cfg.backend.split(":", 1)
        return getattr(importlib.import_module(mod), cls)(**opts)
    from selfi_ros.backends import make_backend

    return make_backend(cfg.backend, **opts)


@dataclass
class _Pending:
    """An image converted in its callback, waiting for a matching CameraInfo."""

    stamp_ns: int
    rgb: np.ndarray
    frame_id: str
    recv_wall: float


@dataclass
class _Info:
    stamp_ns: int
    model: Optional[cv.CameraModel]
    error: str


class _ThinningQueue:
    """Bounded FIFO of frames (items with ``stamp_ns``) that keeps its time coverage when full.

    ``put`` never blocks. When full, it drops the waiting frame whose removal leaves the smallest time gap
    between its neighbours (the newest frame is always kept; with ``maxsize`` < 3 the oldest is dropped)
    and returns it. During a long stall of the worker (a window reconstruction) the queue thus holds frames
    spread over the whole stall instead of only the last few: keyframe selection still sees intermediate
    views, so the map is not left with a gap that nothing can be localized across.
    """

    def __init__(self, maxsize: int) -> None:
        self._d: collections.deque = collections.deque()
        self._max = maxsize
        self._cv = threading.Condition()

    def put(self, item) -> Any:
        with self._cv:
            self._d.append(item)
            dropped = None
            if len(self._d) > self._max:
                if len(self._d) < 4:
                    dropped = self._d.popleft()
                else:  # interior item with the smallest gap between its neighbours (ties: the oldest)
                    st = [x.stamp_ns for x in self._d]
                    k = min(range(1, len(st) - 1), key=lambda i: st[i + 1] - st[i - 1])
                    dropped = self._d[k]
                    del self._d[k]
            self._cv.notify()
            return dropped

    def get(self, timeout: float):
        with self._cv:
            if not self._d:
                self._cv.wait(timeout)
            return self._d.popleft() if self._d else None

    def clear(self) -> int:
        with self._cv:
            n = len(self._d)
            self._d.clear()
            return n

    def __len__(self) -> int:
        return len(self._d)


class SelfiNode:
    """The node (composition over inheritance so that importing this module needs no rclpy).

    Args:
        node_name: ROS node name (default ``selfi_node``; the YAML uses this name).
        engine: an already built engine (tests); default: built from the parameters.
        **node_kwargs: passed to ``rclpy.node.Node`` (e.g. ``parameter_overrides``).

    Raises:
        ValueError: invalid parameters; the backend's errors when it cannot be built.
    """

    def __init__(self, node_name: str = "selfi_node", engine: Optional[Engine] = None, **node_kwargs) -> None:
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.node import Node

        self.node = Node(node_name, **node_kwargs)
        self.log = self.node.get_logger()
        self.cfg, self.engine_cfg = declare_parameters(self.node)
        cfg = self.cfg
        if engine is None:
            backend = make_backend_from_config(cfg)
            engine = Engine(backend, self.engine_cfg)
        self.engine = engine
        self.backend_name = str(getattr(engine.backend, "name", cfg.backend))
        self.random_weights = bool(getattr(engine.backend, "random_weights", False))
        if self.random_weights:
            self.log.warning(RANDOM_WEIGHTS_BANNER)
        self._declare_model_info()
        # Selfi online adapter training (background, only while the worker queue is empty)
        self.online = None
        if cfg.online_adapter_training:
            from selfi_ros.backends.vggt_online import OnlineAdapterHook

            if cfg.online_clip_len > self.engine_cfg.window_size:
                raise ValueError(f"parameter online_clip_len ({cfg.online_clip_len}) must be <= window_size "
                                 f"({self.engine_cfg.window_size}): a clip is taken from one window")
            self.online = OnlineAdapterHook(engine.backend, clip_len=cfg.online_clip_len,
                                            eval_every=cfg.online_eval_every, min_gain=cfg.online_min_gain)
            self.log.info(f"online adapter training on: clips of {cfg.online_clip_len} anchors, evaluation every "
                          f"{cfg.online_eval_every} steps, swap on a held-out PCK@3 gain >= {cfg.online_min_gain}")

        # --- state shared between callbacks (executor) and the worker thread
        self._lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()  # reason -> count
        self.frames_in = 0
        self.frames_dropped = 0
        self.frames_rejected = 0
        self._last_accepted_stamp: Optional[int] = None
        self._last_image_wall: Optional[float] = None
        self._first_image_wall: Optional[float] = None
        self._start_wall = time.monotonic()
        self._pending: collections.deque = collections.deque()
        self._infos: collections.deque = collections.deque(maxlen=50)
        self._recv_wall: collections.OrderedDict = collections.OrderedDict()  # stamp -> receive wall time
        self._queue = _ThinningQueue(cfg.queue_size)
        self._commands: collections.deque = collections.deque()
        self._odom_in: collections.deque = collections.deque(maxlen=1000)
        self._odom_hist: collections.deque = collections.deque(maxlen=2000)  # (stamp, T_odom_base)
        self._static: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T_parent_child)
        self._camera_frame: str = cfg.camera_frame
        self._tf_mode: Optional[str] = None if cfg.publish_tf == "auto" else cfg.publish_tf
        self._path: collections.deque = collections.deque(maxlen=cfg.path_max_length)
        self._engine_status = engine.status()
        self._map_snapshot: Optional[tuple[np.ndarray, np.ndarray]] = None
        self._map_dirty = False
        self._latency_ms = float("nan")
        self._last_stamp_out = 0
        self._stop = threading.Event()
        self._last_warn: dict[str, float] = {}

        self._make_interfaces(MutuallyExclusiveCallbackGroup())
        self._worker = threading.Thread(target=self._work, name="selfi_engine", daemon=True)
        self._worker.start()
        self.log.info(
            f"selfi_node: backend={self.backend_name}{' (RANDOM WEIGHTS)' if self.random_weights else ''} image={cfg.image_topic} ({cfg.image_transport}, qos {cfg.qos}) "
            f"camera_info={cfg.camera_info_topic} odom={cfg.odom_topic or '-'} publish_tf={cfg.publish_tf} "
            f"map_frame={cfg.map_frame}")

    def _declare_model_info(self) -> None:
        """Read-only parameter ``model_random_weights`` (``ros2 param get /selfi_node model_random_weights``):
        a frame-independent flag for outputs that cannot carry one (TF, PointCloud2, Path). Overrides are
        ignored: it reports the backend that was built, it does not configure it."""
        from rcl_interfaces.msg import ParameterDescriptor

        desc = ParameterDescriptor(read_only=True, description=(
            "read-only: true when the backend model has RANDOM weights (every output is meaningless)"))
        self.node.declare_parameter("model_random_weights", self.random_weights, desc, ignore_override=True)

    # ------------------------------------------------------------------------------- interfaces
    def _make_interfaces(self, service_group) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry, Path
        from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                               qos_profile_sensor_data)
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from std_srvs.srv import Trigger

        cfg, n = self.cfg, self.node
        if cfg.qos == "sensor_data":
            in_qos = QoSProfile(depth=cfg.qos_depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                                durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)
        else:
            in_qos = QoSProfile(depth=cfg.qos_depth, reliability=ReliabilityPolicy.RELIABLE,
                                history=HistoryPolicy.KEEP_LAST)
        if cfg.image_transport == "compressed":
            topic = cfg.image_topic.rstrip("/") + "/compressed"
            self.sub_image = n.create_subscription(CompressedImage, topic, self._on_image, in_qos)
        else:
            self.sub_image = n.create_subscription(Image, cfg.image_topic, self._on_image, in_qos)
        self.sub_info = n.create_subscription(CameraInfo, cfg.camera_info_topic, self._on_info, in_qos)
        if cfg.odom_topic:
            self.sub_odom = n.create_subscription(Odometry, cfg.odom_topic, self._on_odom, qos_profile_sensor_data
                                                  if cfg.qos == "sensor_data" else 50)
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        try:
            from tf2_msgs.msg import TFMessage

            self.sub_tf_static = n.create_subscription(TFMessage, "/tf_static", self._on_tf_static, latched)
        except ImportError:
            self.log.error("tf2_msgs is not installed: no /tf output and no /tf_static input "
                           "(run scripts/build_interfaces.sh)")
            TFMessage = None
        # /tf: tf2_ros.TransformBroadcaster where importable, else the same topic and QoS by hand
        self._tf_broadcaster = None
        self.pub_tf = None
        try:
            import tf2_ros

            self._tf_broadcaster = tf2_ros.TransformBroadcaster(n)
        except ImportError:
            if TFMessage is not None:
                self.pub_tf = n.create_publisher(TFMessage, "/tf", QoSProfile(
                    depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST))
        map_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        self.pub_map = n.create_publisher(PointCloud2, "~/map_cloud", map_qos)
        self.pub_window = n.create_publisher(PointCloud2, "~/window_cloud", 5)
        self.pub_path = n.create_publisher(Path, "~/path", 5)
        self.pub_odom = n.create_publisher(Odometry, "~/odometry", 50)
        self.pub_pose = n.create_publisher(PoseStamped, "~/pose", 50)
        self.pub_diag = n.create_publisher(DiagnosticArray, "/diagnostics", 10)
        try:
            from selfi_ros.msg import SelfiStatus

            self._status_cls = SelfiStatus
            self.pub_status = n.create_publisher(SelfiStatus, "~/status", 10)
        except ImportError:
            self._status_cls = None
            self.pub_status = None
            self.log.error("selfi_ros.msg not built: no ~/status (run scripts/build_interfaces.sh or colcon build)")
        self.srv_reset = n.create_service(Trigger, "~/reset", self._srv_reset, callback_group=service_group)
        self.srv_save = n.create_service(Trigger, "~/save_map", self._srv_save, callback_group=service_group)
        # housekeeping timers run on the steady clock: with use_sim_time they must not stop with /clock
        from rclpy.clock import Clock, ClockType

        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.timer_flush = n.create_timer(0.05, self._flush_pending, clock=steady)
        self.timer_status = n.create_timer(self.cfg.status_period_s, self._publish_status, clock=steady)
        self.timer_map = n.create_timer(self.cfg.map_publish_period_s, self._publish_map_timer, clock=steady)

    # ----------------------------------------------------------------------------- bookkeeping
    def _count(self, reason: str, detail: str, dropped: bool) -> None:
        """Count a rejected (bad content) or dropped (queue/stamp order) frame and log it, throttled."""
        with self._lock:
            self.counts[reason] += 1
            if dropped:
                self.frames_dropped += 1
            else:
                self.frames_rejected += 1
        self.warn_throttled(reason, f"frame {'dropped' if dropped else 'rejected'} ({reason}): {detail} "
                            f"[{self.counts[reason]} so far]")

    def warn_throttled(self, key: str, text: str) -> None:
        """Log a warning at most once per ``log_throttle_s`` per ``key`` (rclpy throttles per call site)."""
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e18) >= self.cfg.log_throttle_s:
            self._last_warn[key] = now
            self.log.warning(text)

    # ----------------------------------------------------------------------------------- inputs
    def _on_image(self, msg) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames_in += 1
            self._last_image_wall = now
            if self._first_image_wall is None:
                self._first_image_wall = now
        try:
            rgb = cv.compressed_to_rgb8(msg) if hasattr(msg, "format") else cv.image_to_rgb8(msg)
        except cv.ConversionError as e:
            self._count("bad_image", str(e), dropped=False)
            return
        frame_id = self.cfg.camera_frame or msg.header.frame_id or "camera"
        if not self._camera_frame:
            self._camera_frame = frame_id
        p = _Pending(cv.stamp_to_ns(msg.header.stamp), rgb, frame_id, now)
        info = self._match(p.stamp_ns)
        if info is not None:
            self._release(p, info, "synced")
            return
        self._pending.append(p)
        while len(self._pending) > max(2 * self.cfg.qos_depth, 4):
            old = self._pending.popleft()
            self._count("camera_info_wait_overflow", f"image {old.stamp_ns} waited too long for CameraInfo", True)

    def _on_info(self, msg) -> None:
        stamp = cv.stamp_to_ns(msg.header.stamp)
        try:
            info = _Info(stamp, cv.camera_info_to_model(msg), "")
        except cv.ConversionError as e:
            info = _Info(stamp, None, str(e))
            self.warn_throttled("bad_camera_info_msg", f"bad CameraInfo: {e}")
        self._infos.append(info)
        still = collections.deque()
        for p in self._pending:
            m = self._match(p.stamp_ns)
            if m is not None:
                self._release(p, m, "synced")
            else:
                still.append(p)
        self._pending = still

    def _match(self, stamp_ns: int) -> Optional[_Info]:
        best, best_dt = None, None
        thr = self.cfg.sync_threshold_ms * 1e6
        for info in self._infos:
            dt = abs(info.stamp_ns - stamp_ns)
            if dt <= thr and (best_dt is None or dt < best_dt):
                best, best_dt = info, dt
        return best

    def _flush_pending(self) -> None:
        """Timer: release images that waited ``camera_info_wait_s`` with the latest CameraInfo, or with
        K unknown once ``camera_info_timeout_s`` passed without any CameraInfo."""
        if not self._pending:
            return
        now = time.monotonic()
        cfg = self.cfg
        while self._pending and now - self._pending[0].recv_wall >= cfg.camera_info_wait_s:
            if self._infos:
                self._release(self._pending.popleft(), self._infos[-1], "latest")
            elif self._first_image_wall is not None and now - self._first_image_wall >= cfg.camera_info_timeout_s:
                self._release(self._pending.popleft(), None, "none")
            else:
                break

    def _release(self, p: _Pending, info: Optional[_Info], how: str) -> None:
        """Validate an image against its CameraInfo and the stamp order, then queue it for the engine."""
        h, w = p.rgb.shape[:2]
        K = None
        if info is None:
            with self._lock:
                self.counts["no_camera_info"] += 1
            self.warn_throttled("no_camera_info", f"no CameraInfo on {self.cfg.camera_info_topic} after "
                                f"{self.cfg.camera_info_timeout_s} s: running with unknown intrinsics")
        elif info.model is None:
            self._count("bad_camera_info", info.error, dropped=False)
            return
        else:
            m = info.model
            if m.width > 0 and m.height > 0 and (m.width, m.height) != (w, h):
                self._count("size_mismatch", f"image {w}x{h} but CameraInfo {m.width}x{m.height}", dropped=False)
                return
            K = m.K
            if how == "latest":
                with self._lock:
                    self.counts["camera_info_unsynced"] += 1
        last = self._last_accepted_stamp
        if last is not None and p.stamp_ns <= last:
            reason = "stamp_repeated" if p.stamp_ns == last else "stamp_out_of_order"
            self._count(reason, f"stamp {p.stamp_ns} ns after {last} ns", dropped=True)
            return
        try:
            frame = Frame(stamp_ns=p.stamp_ns, image=p.rgb, K=K, frame_id=p.frame_id, index=self.frames_in - 1)
        except ValueError as e:
            self._count("bad_frame", str(e), dropped=False)
            return
        self._last_accepted_stamp = p.stamp_ns
        with self._lock:
            self._recv_wall[p.stamp_ns] = p.recv_wall
            while len(self._recv_wall) > 1000:
                self._recv_wall.popitem(last=False)
        dropped = self._queue.put(frame)
        if dropped is not None:
            self._count("queue_full", f"engine busy, dropped frame {dropped.stamp_ns} (queue {self.cfg.queue_size})",
                        dropped=True)

    def _on_odom(self, msg) -> None:
        s = cv.odometry_to_sample(msg)
        self._odom_in.append(s)
        self._odom_hist.append((s.stamp_ns, s.T_odom_base))

    def _on_tf_static(self, msg) -> None:
        for t in msg.transforms:
            self._static[t.child_frame_id] = (t.header.frame_id, cv.transform_to_matrix(t))

    def T_base_camera(self) -> Optional[np.ndarray]:
        """``T_base_cam`` (4x4) from /tf_static, chained through intermediate frames, or None."""
        frame, T = self._camera_frame, np.eye(4)
        for _ in range(32):
            if frame == self.cfg.base_frame:
                return T
            if frame not in self._static:
                return None
            parent, T_pc = self._static[frame]
            T = T_pc @ T
            frame = parent
        return None

    # ----------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while not self._stop.is_set():
            while self._commands:
                fn, done, result = self._commands.popleft()
                try:
                    result["value"] = fn()
                except Exception as e:  # noqa: BLE001 - reported to the service caller
                    result["error"] = f"{type(e).__name__}: {e}"
                done.set()
            frame = self._queue.get(timeout=0.05)
            if self.online is not None:
                self.online.set_idle(frame is None)
                if self.online.poll_swap():
                    self.log.info(f"online adapter training: adapter swapped in (swap {self.online.swaps}); "
                                  "used from the next window")
            if frame is None:
                continue
            while self._odom_in:
                self.engine.add_odometry(self._odom_in.popleft())
            # newer frames waiting: this one is stale; the engine still checks it for a keyframe but (with
            # skip_stale_non_keyframes) does not localize it, so the worker catches up with the newest frame
            under_load = len(self._queue) > 0
            skipped = int(getattr(self._engine_status, "frames_skipped", 0))
            try:
                out = self.engine.process_frame(frame, under_load=under_load)
            except Exception as e:  # noqa: BLE001 - the engine promises not to raise; never kill the worker
                self.log.error(f"engine failed on frame {frame.stamp_ns}: {type(e).__name__}: {e}")
                out = EngineOutput(rejected=f"exception: {e}")
            try:
                self._publish_output(out)
            except Exception as e:  # noqa: BLE001
                self.log.error(f"publishing failed: {type(e).__name__}: {e}", throttle_duration_sec=5.0)
            self._engine_status = self.engine.status()
            if int(getattr(self._engine_status, "frames_skipped", 0)) > skipped:
                self._count("skipped_under_load", f"frame {frame.stamp_ns} not localized (not a keyframe, "
                            f"{len(self._queue)} newer frames waiting)", dropped=True)
            if out.window is not None and self.random_weights:
                self.warn_throttled("random_weights_output", f"window {out.window.window_id} published from a "
                                    "model with RANDOM WEIGHTS: poses and clouds are meaningless (plumbing only)")
            if out.window is not None and self.online is not None:
                self.online.feed_window(out.window)
            if out.window is not None:
                self._map_snapshot = self.engine.map_cloud()
                self._map_dirty = True
                self._publish_map()
                self._publish_status()

    def _run_in_worker(self, fn, timeout: float = 120.0) -> dict:
        done, result = threading.Event(), {}
        self._commands.append((fn, done, result))
        if not done.wait(timeout):
            result["error"] = f"timed out after {timeout} s"
        return result

    def _resolve_tf_mode(self) -> str:
        if self._tf_mode is not None:
            return self._tf_mode
        waited = time.monotonic() - self._start_wall
        if waited < self.cfg.tf_static_timeout_s and self.T_base_camera() is None:
            time.sleep(self.cfg.tf_static_timeout_s - waited)  # worker thread only
        has_static = self.T_base_camera() is not None
        has_odom = bool(self.cfg.odom_topic) and len(self._odom_hist) > 0
        mode = "map_to_odom" if (has_static and has_odom) else ("map_to_base_link" if has_static else "map_to_camera")
        self.log.info(f"publish_tf auto -> {mode} (static {self.cfg.base_frame}->camera: {has_static}, "
                      f"odometry: {has_odom})")
        self._tf_mode = mode
        return mode

    def _odom_at(self, stamp_ns: int, max_dt_ns: int = 100_000_000) -> Optional[np.ndarray]:
        best, best_dt = None, None
        for s, T in reversed(self._odom_hist):
            dt = abs(s - stamp_ns)
            if best_dt is None or dt < best_dt:
                best, best_dt = T, dt
            if s < stamp_ns - max_dt_ns:
                break
        return best if best_dt is not None and best_dt <= max_dt_ns else None

    def _publish_output(self, out: EngineOutput) -> None:
        from nav_msgs.msg import Path

        cfg = self.cfg
        if out.rejected:
            with self._lock:
                self.counts["engine_rejected"] += 1
            self.warn_throttled("engine_rejected", f"engine rejected a frame: {out.rejected} "
                                f"[{self.counts['engine_rejected']} so far]")
        poses = sorted(out.poses, key=lambda p: p.stamp_ns)
        if poses:
            mode = self._resolve_tf_mode() if cfg.publish_tf != "none" else "none"
            T_base_cam = self.T_base_camera()
            transforms = []
            for pose in poses:
                transforms.extend(self._pose_outputs(pose, mode, T_base_cam))
            if transforms:
                self._send_tf(transforms)
            path = Path()
            path.header.stamp = cv.ns_to_stamp(poses[-1].stamp_ns)
            path.header.frame_id = cfg.map_frame
            path.poses = list(self._path)
            self.pub_path.publish(path)
            now = time.monotonic()
            with self._lock:
                recv = self._recv_wall.get(poses[-1].stamp_ns)
            if recv is not None:
                self._latency_ms = (now - recv) * 1000.0
            self._last_stamp_out = poses[-1].stamp_ns
        if out.window is not None and out.window_points is not None and cfg.publish_window_cloud \
                and self.pub_window.get_subscription_count() > 0:
            stamp = int(out.window.stamps_ns[-1]) if len(out.window.stamps_ns) else self._last_stamp_out
            self.pub_window.publish(cv.points_to_pointcloud2(out.window_points, out.window_colors, stamp,
                                                             cfg.map_frame))

    def _pose_outputs(self, pose: PoseEstimate, mode: str, T_base_cam: Optional[np.ndarray]) -> list:
        cfg = self.cfg
        cam = cfg.camera_frame or self._camera_frame or "camera"
        T_map_cam = np.asarray(pose.T_map_cam, dtype=np.float64)
        if T_base_cam is not None:
            child, T_child = cfg.base_frame, T_map_cam @ invert_transform(T_base_cam)
        else:
            child, T_child = cam, T_map_cam
        ps = cv.pose_stamped(T_child, cfg.map_frame, pose.stamp_ns)
        self._path.append(ps)
        self.pub_pose.publish(ps)
        self.pub_odom.publish(cv.odometry(T_child, cfg.map_frame, child, pose.stamp_ns, pose.confidence,
                                          scale=float(getattr(self._engine_status, "scale", 1.0) or 1.0)))
        if mode == "none":
            return []
        if mode == "map_to_camera":
            return [cv.transform_stamped(T_map_cam, cfg.map_frame, cam, pose.stamp_ns)]
        if T_base_cam is None:
            self.warn_throttled("tf_no_static", f"publish_tf={mode} but no {cfg.base_frame} -> {cam} on /tf_static "
                                "yet: no TF")
            return []
        T_map_base = T_map_cam @ invert_transform(T_base_cam)
        if mode == "map_to_base_link":
            return [cv.transform_stamped(T_map_base, cfg.map_frame, cfg.base_frame, pose.stamp_ns)]
        if not getattr(self._engine_status, "metric", False):
            self.warn_throttled("odom_not_metric", "publishing map -> odom while the map scale is not yet "
                                "metric (odometry pairs still being collected): map -> odom will jump when it is")
        T_odom_base = self._odom_at(pose.stamp_ns)
        if T_odom_base is None:
            with self._lock:
                self.counts["tf_no_odometry_at_stamp"] += 1
            return []
        return [cv.transform_stamped(T_map_base @ invert_transform(T_odom_base), cfg.map_frame, cfg.odom_frame,
                                     pose.stamp_ns)]

    def _send_tf(self, transforms: list) -> None:
        if self._tf_broadcaster is not None:
            self._tf_broadcaster.sendTransform(transforms)
        elif self.pub_tf is not None:
            self.pub_tf.publish(cv.tf_message(transforms))

    def _publish_map(self) -> None:
        snap = self._map_snapshot
        if snap is None or self.pub_map.get_subscription_count() == 0:
            return
        pts, cols = snap
        self.pub_map.publish(cv.points_to_pointcloud2(pts, cols, self._last_stamp_out, self.cfg.map_frame))
        self._map_dirty = False

    def _publish_map_timer(self) -> None:
        if self._map_dirty:
            self._publish_map()

    # ----------------------------------------------------------------------------------- status
    def status_values(self) -> dict[str, Any]:
        """Everything ``~/status`` carries, as a dict (also used for /diagnostics)."""
        es = self._engine_status
        align = getattr(self.engine.backend, "alignment_counts", None) or {}
        with self._lock:
            v = dict(
                state=str(getattr(es, "state", "")), backend=self.backend_name, random_weights=self.random_weights,
                frames_in=self.frames_in, frames_dropped=self.frames_dropped,
                frames_rejected=self.frames_rejected + int(getattr(es, "frames_rejected", 0)),
                keyframes=int(getattr(es, "keyframes", 0)), windows=int(getattr(es, "windows", 0)),
                poses=int(getattr(es, "poses", 0)), localization_failures=int(getattr(es, "localization_failures", 0)),
                frames_skipped=int(getattr(es, "frames_skipped", 0)),
                window_failures=int(getattr(es, "window_failures", 0)),
                window_recoveries=int(getattr(es, "window_recoveries", 0)),
                map_segments=int(getattr(es, "map_segments", 0)),
                pose_check_flagged=int(align.get("pose_check_flagged", 0)),
                pose_check_rejected=int(align.get("pose_check_rejected", 0)),
                adapter_swaps=int(align.get("adapter_swaps", 0)),
                queue_depth=len(self._queue), map_points=int(getattr(es, "map_points", 0)),
                scale=float(getattr(es, "scale", 1.0)), scale_std=float(getattr(es, "scale_std", float("nan"))),
                metric=bool(getattr(es, "metric", False)),
                chain_residual=float(getattr(es, "chain_residual", float("nan"))),
                last_window_ms=float(getattr(es, "last_window_ms", 0.0)),
                last_localize_ms=float(getattr(es, "last_localize_ms", 0.0)),
                latency_ms=float(self._latency_ms), memory_bytes=_rss_bytes(),
            )
        return v

    def alignment_values(self) -> dict[str, Any]:
        """Selfi alignment counters for /diagnostics: the backend's pose-check / refinement counts
        (``pose_check_flagged``, ``pose_check_rejected``, ...) and the online trainer's (``online_swaps``, ...);
        empty without an adapter."""
        v = dict(getattr(self.engine.backend, "alignment_counts", None) or {})
        if self.online is not None:
            v.update(self.online.values())
        return v

    def _publish_status(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        v = self.status_values()
        stamp = cv.ns_to_stamp(self._last_stamp_out) if self._last_stamp_out else self.node.get_clock().now().to_msg()
        if self.pub_status is not None:
            msg = self._status_cls()
            msg.header.stamp = stamp
            msg.header.frame_id = self.cfg.map_frame
            for k, val in v.items():
                setattr(msg, k, val)
            self.pub_status.publish(msg)
        level, problems = DiagnosticStatus.OK, []
        if self.random_weights:
            level = DiagnosticStatus.WARN
            problems.append("RANDOM WEIGHTS: outputs are meaningless (plumbing only)")
        now = time.monotonic()
        last = self._last_image_wall
        since = (now - last) if last is not None else (now - self._start_wall)
        if since > self.cfg.no_image_warn_s:
            level = DiagnosticStatus.WARN
            problems.append(f"no image since {since:.1f} s on {self.cfg.image_topic}")
        if v["state"] == "lost":
            level = DiagnosticStatus.WARN
            problems.append("tracking lost")
        st = DiagnosticStatus(level=level, name=f"{self.node.get_name()}: reconstruction",
                              hardware_id=self.backend_name,
                              message="; ".join(problems) if problems else f"{v['state']}")
        with self._lock:
            counts = sorted(self.counts.items())
        vals = {**v, **{f"count_{k}": n for k, n in counts}}
        vals.update(self.alignment_values())
        last_err = getattr(self._engine_status, "last_error", "")
        if last_err:
            vals["engine_last_error"] = last_err
        st.values = [KeyValue(key=k, value=str(x)) for k, x in vals.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.node.get_clock().now().to_msg()
        arr.status = [st]
        self.pub_diag.publish(arr)

    # --------------------------------------------------------------------------------- services
    def _srv_reset(self, request, response):
        def do():
            n = self._queue.clear()
            self.engine.reset()
            self._path.clear()
            self._map_snapshot = None
            self._engine_status = self.engine.status()
            self._last_accepted_stamp = None
            return n

        r = self._run_in_worker(do)
        response.success = "error" not in r
        response.message = r.get("error", f"reset (dropped {r.get('value', 0)} queued frames)")
        self.log.info(f"~/reset: {response.message}")
        return response

    def _srv_save(self, request, response):
        out_dir = self.cfg.save_dir or os.path.join(
            os.environ.get("ROS_HOME", os.path.join(os.path.expanduser("~"), ".ros")), "selfi_map")
        r = self._run_in_worker(lambda: self.engine.save(out_dir))
        response.success = "error" not in r
        response.message = r.get("error") or f"saved to {out_dir}: {r.get('value')}"
        self.log.info(f"~/save_map: {response.message}")
        return response

    def destroy(self) -> None:
        """Stop the worker and destroy the node."""
        self._stop.set()
        self._worker.join(timeout=5.0)
        if self.online is not None:
            self.online.stop()
        self.node.destroy_node()


def node_command(params: Optional[dict] = None, params_file: Optional[str] = None,
                 python: Optional[str] = None, node_name: Optional[str] = None) -> list[str]:
    """argv that starts ``selfi_node`` in a subprocess (for the demo, tests, scripts)::

        subprocess.Popen(node_command({"backend": "colmap", "use_sim_time": True}, "config/selfi.yaml"),
                         env={**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": "42"})

    Args:
        params: ``name -> value`` overrides (bool, int, float, str), passed as ``-p name:=value``.
        params_file: a YAML like config/selfi.yaml (loaded first; ``params`` override it).
        python: interpreter (default: this one). node_name: rename the node (``-r __node:=...``).
    """
    argv = [python or sys.executable, "-m", "selfi_ros.ros.node", "--ros-args"]
    if node_name:
        argv += ["-r", f"__node:={node_name}"]
    if params_file:
        argv += ["--params-file", str(params_file)]
    for k, v in (params or {}).items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, str) and (v == "" or v.strip() != v or v.lower() in ("true", "false", "null")
                                     or _looks_numeric(v)):
            v = f"'{v}'"  # keep strings strings (YAML parsing of -p values)
        argv += ["-p", f"{k}:={v}"]
    return argv


def _looks_numeric(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def main(args: Optional[list[str]] = None) -> int:
    """Entry point of ``selfi_node`` (console script, ``ros2 run``, ``python -m selfi_ros.ros.node``)."""
    ensure_localhost_discovery()
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = SelfiNode()
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node.node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as e:  # invalid parameters: a clear message, no traceback
        print(f"selfi_node: {e}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

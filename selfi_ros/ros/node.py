"""``selfi_node``: the rclpy node around :class:`~selfi_ros.engine.engine.Engine` - wiring only.

Inputs: ``sensor_msgs/Image`` (or ``CompressedImage`` on ``<image_topic>/compressed``) + ``CameraInfo``
matched by stamp (approximate sync, ``sync_threshold_ms``), optional ``nav_msgs/Odometry``, and
``/tf_static`` for the ``base_frame -> camera`` extrinsics (chains through intermediate frames).

Messages become validated :class:`~selfi_ros.engine.types.Frame` s in :mod:`selfi_ros.ros.input` (the
same code the offline tools use) and go into a bounded queue (when full, the frame whose removal leaves
the smallest time gap is dropped, so that the queue spans a long stall); a worker thread owns the engine,
so callbacks never block on inference. With ``skip_stale_non_keyframes`` (the default) the worker takes
the oldest frame and passes ``under_load`` when newer frames wait: keyframes are still fully processed,
other frames are not localized (counted as dropped, reason ``skipped_under_load``), so that the worker
catches up with the newest frame instead of lagging behind; without it every frame is localized and the
worker hands all waiting frames to the engine at once (``process_frames`` localizes them in one call).
It tells the engine when it is idle (``set_idle``: the backend's background work, e.g. online adapter
training, runs only then). Every rejection or drop is logged (throttled) and counted by reason
(``~/status``, ``/diagnostics``, derived in :mod:`selfi_ros.ros.status`); a time jump starts a new map
(:class:`~selfi_ros.ros.frame_queue.MapRestarts`).

Outputs (:mod:`selfi_ros.ros.outputs`), stamped with the image stamp: ``/tf`` (REP-105: ``map -> odom``
with odometry, ``map -> base_link`` with a URDF camera, else ``map -> camera``; parameter ``publish_tf``),
``~/window_cloud`` and ``~/map_cloud`` (``sensor_msgs/PointCloud2`` in the map frame, the map latched and
voxelised, serialised only when changed and subscribed), ``~/path`` (at most once per ``status_period_s``),
``~/odometry`` (with covariance), ``~/pose``, ``~/status`` (``selfi_ros/SelfiStatus``) and ``/diagnostics``.
TF and the map frame (one parent per frame, a late ``/tf_static``, the map anchored to the robot's body when
one is known): :mod:`selfi_ros.ros.outputs`. Services ``~/reset`` (``std_srvs/Trigger``), ``~/save_map``
(``selfi_ros/srv/SaveMap``: a target folder) and ``~/load_map`` (``selfi_ros/srv/LoadMap``),
:mod:`selfi_ros.ros.services`; ``map_path`` loads a map at start, ``save_on_shutdown`` saves to ``save_dir`` on
SIGINT / SIGTERM.

Shutdown (SIGINT, SIGTERM; :mod:`selfi_ros.ros.entry`, which also holds :func:`main` and
:func:`node_command`): the engine worker stops before the node and the context; exit status 0.

Errors at start: an invalid parameter value (wrong type, out of range, unknown backend or enum value, a
plug-in that cannot be imported, an invalid topic name), a missing or unusable checkpoint, an
unloadable ``map_path``: one line ``selfi_node: <parameter and problem>`` on stderr, exit status 2, no traceback.

Start it as ``ros2 run selfi_ros selfi_node --ros-args --params-file config/selfi.yaml`` on a robot, or
``python -m selfi_ros.ros.node --ros-args --params-file config/selfi.yaml -p backend:=colmap`` from a venv.
"""
from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Optional, Sequence

from selfi_ros.backends.config import VGGTBackendConfig
from selfi_ros.engine.engine import Engine, EngineOutput
from selfi_ros.engine.status import BackendStatus, EngineStatus
from selfi_ros.engine.types import Frame
from selfi_ros.ros import conversions as cv
from selfi_ros.ros import status as st
from selfi_ros.ros.frame_queue import MapRestarts, ThinningQueue
from selfi_ros.ros.input import FrameInput, InputConfig, InputEvent
from selfi_ros.ros.outputs import NodeOutputs
from selfi_ros.ros.params import check_topic_names, declare_parameters, make_backend_from_config, unknown_overrides
from selfi_ros.ros.runtime_params import RuntimeParameters, declare_model_info
from selfi_ros.ros.entry import ensure_localhost_discovery, main, node_command
from selfi_ros.ros.services import (WorkerCommands, create_services, default_save_dir, load_map_folder,
                                    save_map_folder)

__all__ = ["SelfiNode", "main", "node_command", "ensure_localhost_discovery", "make_backend_from_config"]

RANDOM_WEIGHTS_BANNER = (
    "\n" + "!" * 78 + "\n!! selfi_node: the backend runs a model with RANDOM WEIGHTS. Poses and clouds are\n"
    "!! MEANINGLESS - plumbing tests only. Give a checkpoint for real output.\n" + "!" * 78
)


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
        self.cfg, self.engine_cfg, self.backend_cfg = declare_parameters(self.node)
        cfg = self.cfg
        unknown = unknown_overrides(self.node)
        if unknown:
            self.log.warning(f"ignored: not parameters of selfi_node: {', '.join(unknown)}")
        if engine is None:
            engine = Engine(make_backend_from_config(cfg, self.backend_cfg), self.engine_cfg)
        self.engine = engine
        es = engine.status()
        self.backend_name = es.backend or cfg.backend
        self.random_weights = bool(es.random_weights)
        if self.random_weights:
            self.log.warning(RANDOM_WEIGHTS_BANNER)
        declare_model_info(self.node, self.random_weights)
        bc = self.backend_cfg
        if isinstance(bc, VGGTBackendConfig) and bc.online_adapter_training:  # run by the backend, while idle
            self.log.info(f"online adapter training on: clips of {bc.online_clip_len} anchors, evaluation every "
                          f"{bc.online_eval_every} steps, swap on a held-out PCK@3 gain >= {bc.online_min_gain}")

        # --- state shared between callbacks (executor) and the worker thread
        self._lock = threading.Lock()
        self.counters = st.NodeCounters()
        self.input = FrameInput(InputConfig.from_node_config(cfg))
        self.input_clock = time.monotonic  # receive time of the input callbacks (s); tests replay bag time
        self._queue = ThinningQueue(cfg.queue_size)
        self._commands = WorkerCommands()
        self._odom_in: collections.deque = collections.deque(maxlen=1000)
        self._recv_wall: collections.OrderedDict = collections.OrderedDict()  # stamp -> receive time (s)
        self._last_image_wall: Optional[float] = None
        self._start_wall = time.monotonic()
        self._es: EngineStatus = es  # engine / backend status, refreshed by the worker (status rate, windows)
        self._bs: BackendStatus = self.engine.backend_status()
        self._es_wall = time.monotonic()
        self._skipped_seen = es.frames_skipped
        self._last_stamp_out = 0
        self._stop = threading.Event()
        self._last_warn: dict[str, float] = {}
        self.restarts = MapRestarts()  # new maps after a time jump / resolution change (input -> worker)

        self._make_interfaces(MutuallyExclusiveCallbackGroup())
        if cfg.map_path:
            self._load_at_start(cfg.map_path)
        self.runtime_params = RuntimeParameters(self)  # DYNAMIC_PARAMETERS applied, the others refused
        self.node.add_on_set_parameters_callback(self.runtime_params.on_set)
        self._worker = threading.Thread(target=self._work, name="selfi_engine", daemon=True)
        self._worker.start()
        self.log.info(
            f"selfi_node: backend={self.backend_name}{' (RANDOM WEIGHTS)' if self.random_weights else ''} "
            f"image={cfg.image_topic} ({cfg.image_transport}, qos {cfg.qos}) camera_info={cfg.camera_info_topic} "
            f"odom={cfg.odom_topic or '-'} publish_tf={cfg.publish_tf} map_frame={cfg.map_frame}")

    # ------------------------------------------------------------------------------- interfaces
    def _make_interfaces(self, service_group) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry
        from rclpy.clock import Clock, ClockType
        from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                               qos_profile_sensor_data)
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        cfg, n = self.cfg, self.node
        check_topic_names(cfg)
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
        self.outputs = NodeOutputs(n, cfg, self.engine.map_cloud, self.log)
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        try:
            from tf2_msgs.msg import TFMessage

            self.sub_tf_static = n.create_subscription(TFMessage, "/tf_static", self.outputs.static.add, latched)
        except ImportError:
            self.log.error("tf2_msgs is not installed: no /tf_static input (run scripts/build_interfaces.sh)")
        self.pub_diag = n.create_publisher(DiagnosticArray, "/diagnostics", 10)
        try:
            from selfi_ros.msg import SelfiStatus

            self._status_cls = SelfiStatus
            self.pub_status = n.create_publisher(SelfiStatus, "~/status", 10)
        except ImportError:
            self._status_cls = None
            self.pub_status = None
            self.log.error("selfi_ros.msg not built: no ~/status (run scripts/build_interfaces.sh or colcon build)")
        self.srv_reset, self.srv_save, self.srv_load = create_services(
            n, self._commands, self._reset, self._save, lambda: self.cfg.save_dir, self.log, service_group,
            load=self._load if hasattr(self.engine, "load_map") else None)
        # housekeeping timers run on the steady clock: with use_sim_time they must not stop with /clock
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.timer_flush = n.create_timer(0.05, self._flush_pending, clock=steady)
        self.timer_status = n.create_timer(cfg.status_period_s, self._publish_status, clock=steady)

    # ----------------------------------------------------------------------------- bookkeeping
    def _count(self, reason: str, detail: str, dropped: Optional[bool]) -> None:
        """Count a rejected (bad content), dropped (queue/stamp order) or noted (``dropped=None``) frame and
        log a rejection or drop, throttled."""
        with self._lock:
            c = self.counters
            c.counts[reason] = n = c.counts.get(reason, 0) + 1
            if dropped is True:
                c.frames_dropped += 1
            elif dropped is False:
                c.frames_rejected += 1
        if dropped is not None:
            self.warn_throttled(reason, f"frame {'dropped' if dropped else 'rejected'} ({reason}): {detail} "
                                f"[{n} so far]")

    def warn_throttled(self, key: str, text: str) -> None:
        """Log a warning at most once per ``log_throttle_s`` per ``key`` (rclpy throttles per call site)."""
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e18) >= self.cfg.log_throttle_s:
            self._last_warn[key] = now
            self.log.warning(text)

    # ----------------------------------------------------------------------------------- inputs
    def _on_image(self, msg) -> None:
        now = self.input_clock()
        with self._lock:
            self.counters.frames_in += 1
            self._last_image_wall = now
        self._handle(self.input.add_image(msg, now))

    def _on_info(self, msg) -> None:
        self._handle(self.input.add_camera_info(msg, self.input_clock()))

    def _flush_pending(self) -> None:
        """Timer: release images that waited long enough for a CameraInfo (see :mod:`selfi_ros.ros.input`)."""
        if self.input.waiting:
            self._handle(self.input.flush(self.input_clock()))

    def _handle(self, events: Sequence[InputEvent]) -> None:
        """Count rejections, drops and notes; queue accepted frames for the worker."""
        for ev in events:
            if ev.kind == "frame":
                self._queue_frame(ev.frame, ev.recv_s)
            elif ev.kind in ("rejected", "dropped"):
                self._count(ev.reason, ev.detail, dropped=ev.kind == "dropped")
            elif ev.kind == "restart":  # logged once: not throttled
                self._count(ev.reason, ev.detail, dropped=None)
                self.restarts.request(ev, time.monotonic())
                self.log.warning(f"{ev.reason}: {ev.detail} [{self.counters.counts[ev.reason]} so far]")
            elif ev.kind == "note":
                self._count(ev.reason, ev.detail, dropped=None)
                if ev.reason == "no_camera_info":
                    self.warn_throttled("no_camera_info", f"no CameraInfo on {self.cfg.camera_info_topic} after "
                                        f"{self.cfg.camera_info_timeout_s} s: running with unknown intrinsics")
            else:
                self.warn_throttled(ev.reason, ev.detail)

    def _queue_frame(self, frame: Frame, recv_s: float) -> None:
        with self._lock:
            self._recv_wall[frame.stamp_ns] = recv_s
            while len(self._recv_wall) > 1000:
                self._recv_wall.popitem(last=False)
        self.restarts.queued(frame)
        dropped = self._queue.put(frame)
        if dropped is not None:
            self.restarts.forget(dropped)
            self._count("queue_full", f"engine busy, dropped frame {dropped.stamp_ns} (queue {self.cfg.queue_size})",
                        dropped=True)

    def _on_odom(self, msg) -> None:
        s = cv.odometry_to_sample(msg)
        self._odom_in.append(s)
        self.outputs.odom.add(s.stamp_ns, s.T_odom_base)

    @property
    def camera_frame(self) -> str:
        """The camera frame of the outputs: ``camera_frame``, else the first image's header frame
        (:attr:`FrameInput.camera_frame <selfi_ros.ros.input.FrameInput>` holds exactly that)."""
        return self.input.camera_frame or "camera"

    # ----------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        last_map_check = time.monotonic()
        while not self._stop.is_set():
            self._commands.run_pending()
            self.runtime_params.apply_engine_updates()
            batch = self._next_batch()
            self.engine.set_idle(not batch and len(self._queue) == 0)
            for part in self.restarts.segments(batch, self._new_map):
                while self._odom_in:
                    self.engine.add_odometry(self._odom_in.popleft())
                outs = self._run_engine(part)
                if any(o.metric and o.poses for o in outs):
                    self._refresh_status()  # odometry covariance in metres: the current scale
                for frame, out in zip(part, outs):
                    try:
                        self._publish_output(frame, out)
                    except Exception as e:  # noqa: BLE001
                        self.log.error(f"publishing failed: {type(e).__name__}: {e}", throttle_duration_sec=5.0)
            now = time.monotonic()
            if now - self._es_wall >= 0.5 * self.cfg.status_period_s:
                self._refresh_status()
            if now - last_map_check >= self.cfg.map_publish_period_s:
                last_map_check = now
                self.outputs.map.maybe_publish(self._last_stamp_out)

    def _next_batch(self) -> list[Frame]:
        """The frames for the next engine call (waits up to 50 ms for one). With ``skip_stale_non_keyframes``
        (the default) the oldest frame alone: the frames behind it stay queued, where the queue may still
        thin them while the engine works, and a stale non-keyframe costs only its keyframe check, so there is
        nothing to batch; each frame is published as soon as it is processed. Without it every frame is
        localized, and all waiting frames go in one call (their localization batched by the engine)."""
        if self.engine.config.skip_stale_non_keyframes:
            frame = self._queue.get(timeout=0.05)
            return [] if frame is None else [frame]
        return self._queue.get_all(timeout=0.05)

    def _run_engine(self, batch: list[Frame]) -> list[EngineOutput]:
        """The batch through the engine (its non-keyframes localized together): one ``EngineOutput`` per
        frame, in order; ``under_load`` when newer frames arrived meanwhile. The engine never raises, but a
        failure here must not kill the worker either."""
        try:
            return list(self.engine.process_frames(batch, under_load=len(self._queue) > 0))
        except Exception as e:  # noqa: BLE001 - the engine promises not to raise; never kill the worker
            self.log.error(f"engine failed on frames {batch[0].stamp_ns}..{batch[-1].stamp_ns}: "
                           f"{type(e).__name__}: {e}")
            return [EngineOutput(rejected=f"exception: {e}") for _ in batch]

    def _refresh_status(self) -> None:
        """Read the engine's and the backend's status (worker thread: the engine lock is free here); the
        engine's load-shedding skips since the last read are counted as drops (``skipped_under_load``)."""
        es, bs = self.engine.status(), self.engine.backend_status()
        if not es.backend:
            es.backend = self.backend_name
        with self._lock:
            new = es.frames_skipped - self._skipped_seen
            self._skipped_seen = es.frames_skipped
            if new > 0:
                c = self.counters
                c.frames_dropped += new
                c.counts["skipped_under_load"] = n = c.counts.get("skipped_under_load", 0) + new
            self._es, self._bs, self._es_wall = es, bs, time.monotonic()
        if new > 0:
            self.warn_throttled("skipped_under_load", f"frames dropped (skipped_under_load): {new} non-keyframes "
                                f"not localized while newer frames waited [{n} so far]")

    def _publish_output(self, frame: Frame, out: EngineOutput) -> None:
        cfg = self.cfg
        if out.rejected:
            self._count("engine_rejected", f"engine rejected frame {frame.stamp_ns}: {out.rejected}", dropped=None)
            self.warn_throttled("engine_rejected", f"engine rejected a frame: {out.rejected} "
                                f"[{self.counters.counts['engine_rejected']} so far]")
        if out.poses:
            mode = self.outputs.tf_mode(self.camera_frame, self._start_wall, self.log)
            if mode == "map_to_odom" and not out.metric:
                self.warn_throttled("odom_not_metric", "publishing map -> odom while the map scale is not yet "
                                    "metric (odometry pairs still being collected): map -> odom will jump when it is")
            scale = float(self._es.scale) if out.metric else 1.0
            for why in self.outputs.publish_poses(out.poses, mode, self.camera_frame, scale):
                if why == "tf_no_static":
                    self.warn_throttled("tf_no_static", f"publish_tf={mode} but no {cfg.base_frame} -> "
                                        f"{self.camera_frame} on /tf_static yet: no TF")
                elif why == "tf_camera_has_parent":
                    self._count(why, "", dropped=None)
                    self.warn_throttled(why, f"publish_tf=map_to_camera but {self.camera_frame} has a parent on "
                                        "/tf_static: no TF (it would have two parents; use auto or map_to_base_link)")
                else:
                    self._count(why, "no odometry at the pose stamp", dropped=None)
            last = max(p.stamp_ns for p in out.poses)
            with self._lock:
                recv = self._recv_wall.get(last)
                if recv is not None:
                    self.counters.latency_ms = (time.monotonic() - recv) * 1000.0
            self._last_stamp_out = last
        if out.map_corrected:  # a loop closure moved earlier windows: ~/path and ~/map_cloud follow
            self.outputs.replace_path(self.engine.trajectory(), self.outputs.tf_mode(
                self.camera_frame, self._start_wall, self.log), self.camera_frame)
            self.outputs.map.maybe_publish(self._last_stamp_out)
            self.log.info(f"loop closure: map corrected, ~/path and ~/map_cloud republished "
                          f"[{self.engine.status().loop_closures} closures]")
        if out.window is not None:
            stamp = int(out.window.stamps_ns[-1]) if len(out.window.stamps_ns) else self._last_stamp_out
            self.outputs.publish_window(out.window_points, out.window_colors, stamp)
            if self.random_weights:
                self.warn_throttled("random_weights_output", f"window {out.window.window_id} published from a "
                                    "model with RANDOM WEIGHTS: poses and clouds are meaningless (plumbing only)")
            self.outputs.map.mark_changed()
            self.outputs.map.maybe_publish(self._last_stamp_out)
            self._refresh_status()
            self._publish_status()

    # ----------------------------------------------------------------------------------- status
    def _snapshot(self) -> tuple[EngineStatus, BackendStatus, st.NodeCounters]:
        with self._lock:
            c = self.counters
            nc = st.NodeCounters(frames_in=c.frames_in, frames_dropped=c.frames_dropped,
                                 frames_rejected=c.frames_rejected, queue_depth=len(self._queue),
                                 latency_ms=c.latency_ms, memory_bytes=st.rss_bytes(), counts=dict(c.counts))
            return self._es, self._bs, nc

    def _publish_status(self) -> None:
        """``~/status`` and ``/diagnostics`` (status timer, and after each window); ``~/path`` goes first
        (its rate rule, :class:`~selfi_ros.ros.outputs.PathPublisher`)."""
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        self.outputs.path.maybe_publish()
        es, bs, nc = self._snapshot()
        v = st.status_values(es, bs, nc)
        stamp = cv.ns_to_stamp(self._last_stamp_out) if self._last_stamp_out else self.node.get_clock().now().to_msg()
        if self.pub_status is not None:
            msg = st.fill_message(self._status_cls(), v)
            msg.header.stamp = stamp
            msg.header.frame_id = self.cfg.map_frame
            self.pub_status.publish(msg)
        now = time.monotonic()
        last = self._last_image_wall
        since = now - (last if last is not None else self._start_wall)
        problems = st.diagnostic_problems(v, self.random_weights, since, self.cfg.no_image_warn_s, self.cfg.image_topic)
        problems += self.restarts.warnings(now) + self.outputs.plan.warnings(now)
        status = DiagnosticStatus(level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
                                  name=f"{self.node.get_name()}: reconstruction", hardware_id=self.backend_name,
                                  message="; ".join(problems) if problems else f"{v['state']}")
        status.values = [KeyValue(key=k, value=str(x)) for k, x in st.diagnostic_values(es, bs, nc).items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.node.get_clock().now().to_msg()
        arr.status = [status]
        self.pub_diag.publish(arr)

    # --------------------------------------------------------------------------------- services
    def _new_map(self, reason: str) -> None:
        """A restart from the input (worker thread): after a time jump with ``time_jump_action:=relocalize``
        and a backend with window memories the map is kept and the next frames relocalize in it
        (:meth:`Engine.restart_stream`); otherwise (``new_map``, a resolution change) a new map begins."""
        if reason == "time_jump" and self.cfg.time_jump_action == "relocalize" and self.engine.restart_stream():
            self.log.warning("time jump: map kept (time_jump_action=relocalize), relocalizing against it")
            self._refresh_status()
            return
        self._reset(keep_input=True)

    def _reset(self, keep_input: bool = False) -> int:
        """``~/reset`` in the worker thread: returns the queued frames dropped. It forgets the windows, the
        map, the trajectory, ``~/path``, the stamp order and zeroes the node's counters (``frames_in``,
        ``frames_dropped``, ``frames_rejected``, every ``count_<reason>``, the latency), as ``~/status``
        says. ``keep_input``: a new map after a time jump or a resolution change (:class:`MapRestarts`):
        queue, stamp order and counters kept."""
        n = 0 if keep_input else self._queue.clear()
        if not keep_input:
            self.restarts.reset(self.input)
        self.engine.reset()
        self.outputs.path.clear()
        self.outputs.map.mark_changed()
        with self._lock:
            self._skipped_seen = 0
            if not keep_input:
                self.counters = st.NodeCounters()
                self._recv_wall.clear()
        self._refresh_status()
        return n

    def _save(self, out_dir: str) -> str:
        """``~/save_map`` (worker thread, or after the worker stopped): :func:`~selfi_ros.ros.services.save_map_folder`."""
        return save_map_folder(self, out_dir)

    def _load(self, path: str) -> str:
        """``~/load_map`` (worker thread): :func:`~selfi_ros.ros.services.load_map_folder`."""
        return load_map_folder(self, path)

    def _load_at_start(self, map_path: str) -> None:
        """Parameter ``map_path``: load it before the worker starts. Raises ValueError naming the parameter."""
        if not hasattr(self.engine, "load_map"):
            raise ValueError(f"parameter map_path={map_path!r}: map loading not available")
        try:
            self.log.info(f"map_path: {self._load(map_path)}")
        except (ValueError, OSError) as e:
            raise ValueError(f"parameter map_path={map_path!r}: {type(e).__name__}: {e}") from None

    def destroy(self, save: bool = False) -> None:
        """Stop the worker (joined: it finishes the frame it is on), answer pending service calls, optionally
        save the map to ``save_dir`` (``save_on_shutdown``), close the backend and destroy the node - the
        context must still be valid (``main`` shuts it down after this)."""
        self._stop.set()
        self._worker.join(timeout=120.0 if save else 10.0)
        stopped = not self._worker.is_alive()
        self._commands.fail_pending("the node is shutting down")
        if save:
            out_dir = default_save_dir(self.cfg.save_dir)
            if not stopped:
                self.log.error(f"save_on_shutdown: the engine worker did not stop in time: nothing saved to {out_dir}")
            else:
                try:
                    self.log.info(f"save_on_shutdown: saved to {out_dir}: {self._save(out_dir)}")
                except Exception as e:  # noqa: BLE001 - reported, the shutdown goes on
                    self.log.error(f"save_on_shutdown: save to {out_dir} failed: {type(e).__name__}: {e}")
        if stopped and hasattr(self.engine.backend, "close"):  # a stand-in engine's backend may not have it
            self.engine.backend.close()  # stops the backend's background work (online adapter training)
        self.node.destroy_node()


if __name__ == "__main__":
    sys.exit(main())

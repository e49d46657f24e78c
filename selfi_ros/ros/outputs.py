"""The node's outputs: ``/tf`` (REP-105 modes), ``~/pose`` (``PoseStamped``), ``~/odometry``, ``~/path``,
``~/window_cloud`` and ``~/map_cloud``, all in the map frame and stamped with the image stamp.

TF modes (REP-105, ``publish_tf``): ``map_to_camera`` (``map -> camera``), ``map_to_base_link`` (``map ->
body``: the robot body the camera is mounted on, through the static chain on ``/tf_static`` as a URDF gives
it), ``map_to_odom`` (``map -> odom`` such that ``map -> odom -> body`` equals the pose, with the robot's own
odometry at the image stamp), ``none``. The body is ``base_frame`` when ``/tf_static`` connects it to the
camera, else the root of the camera's static tree when the camera has a static parent at all (a camera
driver alone publishes e.g. ``camera_link -> camera_color_optical_frame``), else there is none (a bare
camera). ``T_map_body = T_map_cam @ inv(T_body_cam)`` is computed once per pose.

One parent per frame, always (:class:`TfPlan`):

* ``auto`` is resolved at the first pose: the worker waits until ``tf_static_timeout_s`` after the node's
  start for the static chain, then picks ``map_to_odom`` (body and odometry), ``map_to_base_link`` (body) or
  ``map_to_camera`` (bare camera).
* A late ``/tf_static`` (the body becomes known after ``auto`` chose ``map_to_camera``, e.g.
  robot_state_publisher started after the camera) switches cleanly, once: from the next pose on, ``map ->
  body`` (or ``map -> odom``) and never ``map -> camera`` again, so the camera never has two parents at one
  time; ``~/pose``, ``~/odometry`` and ``~/path`` switch their child frame with ``/tf`` at the same pose. It is
  logged once (WARN) and ``/diagnostics`` warns for :data:`SWITCH_WARN_S` s.
* With a fixed ``map_to_camera`` and a camera that has a static parent, no TF is published (reason
  ``tf_camera_has_parent``, counted and logged, throttled) instead of giving the camera a second parent.

The map frame (REP-105 ``map``: world-fixed, z up with a body known). The engine keeps its own frame (the
first anchor keyframe's camera, REP-103 optical: x right, y down, z forward); the outputs re-express every
pose and cloud once, here, with the anchor ``T_map_engine``:

* body known: ``T_map_engine = T_body_cam``, i.e. ``map`` is the body's pose at the engine's first anchor
  keyframe (normally the first image): ``T_map_cam = T_body_cam @ T_engine_cam``, ``map -> body`` is the
  identity there, x forward, z up (REP-105; gravity-aligned as far as the robot started level).
* bare camera: ``T_map_engine = I``: ``map`` is the first anchor keyframe's optical frame (z forward,
  y down).
* the body becoming known later (a late ``/tf_static``) re-anchors the map once, to what it would have been
  had the static chain come in time: the ``~/path`` kept so far is re-expressed, ``~/map_cloud`` re-published.

Publication rules (bounded work per frame):

* ``~/path`` (``nav_msgs/Path``, up to ``path_max_length`` poses) is published by
  :class:`PathPublisher`: at most once per ``status_period_s`` (with ``~/status``: on the status timer and
  after a window), only when it gained poses since it was last published, and only when someone
  subscribes (otherwise it stays pending until someone does). The newest pose reaches it within one period;
  re-sending up to 2,000 poses on every frame is avoided.
* ``~/map_cloud`` (latched, ``TRANSIENT_LOCAL``) is copied from the engine and serialised by
  :class:`MapPublisher` only when the map changed (a window was added, a reset) since it was last
  published AND someone subscribes; the check runs after each window and every ``map_publish_period_s``.
* ``~/window_cloud`` after each window, when someone subscribes.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from typing import Callable, Optional, Sequence

import numpy as np

from selfi_ros.engine.types import PoseEstimate
from selfi_ros.geometry import invert_transform
from selfi_ros.ros import conversions as cv
from selfi_ros.ros.spatial import transform_points


class StaticTransforms:
    """``/tf_static`` store: ``child -> (parent, T_parent_child)``, chained on demand."""

    def __init__(self) -> None:
        self._static: dict[str, tuple[str, np.ndarray]] = {}

    def add(self, msg) -> None:
        """Take every transform of a ``tf2_msgs/TFMessage``."""
        for t in msg.transforms:
            self._static[t.child_frame_id] = (t.header.frame_id, cv.transform_to_matrix(t))

    def root_of(self, child: str, max_depth: int = 32) -> Optional[tuple[str, np.ndarray]]:
        """``(root frame, 4x4 T_root_child)`` of the static tree ``child`` hangs in, or None when ``child``
        has no static parent (a loop is cut after ``max_depth`` frames)."""
        if child not in self._static:
            return None
        frame, T = child, np.eye(4)
        for _ in range(max_depth):
            if frame not in self._static:
                break
            up, T_pc = self._static[frame]
            T = T_pc @ T
            frame = up
        return frame, T

    def lookup(self, parent: str, child: str, max_depth: int = 32) -> Optional[np.ndarray]:
        """4x4 float64 ``T_parent_child`` chained through intermediate frames, or None when not connected."""
        frame, T = child, np.eye(4)
        for _ in range(max_depth):
            if frame == parent:
                return T
            if frame not in self._static:
                return None
            up, T_pc = self._static[frame]
            T = T_pc @ T
            frame = up
        return None


class OdometryHistory:
    """Recent ``(stamp_ns, T_odom_base)`` of the robot's odometry (bounded), looked up by stamp."""

    def __init__(self, maxlen: int = 2000) -> None:
        self._hist: collections.deque = collections.deque(maxlen=maxlen)

    def add(self, stamp_ns: int, T_odom_base: np.ndarray) -> None:
        """Record one odometry pose (4x4, ``odom <- base``)."""
        self._hist.append((int(stamp_ns), T_odom_base))

    def __len__(self) -> int:
        return len(self._hist)

    def at(self, stamp_ns: int, max_dt_ns: int = 100_000_000) -> Optional[np.ndarray]:
        """The sample nearest to ``stamp_ns`` within ``max_dt_ns`` (4x4), or None."""
        best, best_dt = None, None
        for s, T in reversed(self._hist):
            dt = abs(s - stamp_ns)
            if best_dt is None or dt < best_dt:
                best, best_dt = T, dt
            if s < stamp_ns - max_dt_ns:
                break
        return best if best_dt is not None and best_dt <= max_dt_ns else None


def pose_transforms(pose: PoseEstimate, mode: str, T_base_cam: Optional[np.ndarray], map_frame: str,
                    camera_frame: str, base_frame: str, odom_frame: str,
                    T_odom_base: Optional[np.ndarray]) -> tuple[str, np.ndarray, list, str]:
    """One pose -> (child frame, 4x4 ``T_map_child`` for ``~/pose`` / ``~/odometry``, ``TransformStamped`` s
    for ``/tf``, why no TF: "" or ``tf_no_static`` / ``tf_no_odometry_at_stamp`` / ``tf_camera_has_parent``).

    ``pose.T_map_cam`` is already in the ROS map frame. ``base_frame`` / ``T_base_cam``: the body and its
    static ``T_body_cam`` (None: no body known). The child follows the TF: the camera in ``map_to_camera``
    (where a camera with a static parent gets no TF: it would have two parents), else the body when known
    (``T_map_base = T_map_cam @ inv(T_base_cam)``, computed once), else the camera. Raises
    :class:`~selfi_ros.ros.conversions.ConversionError` for a non-rigid pose.
    """
    T_map_cam = np.asarray(pose.T_map_cam, dtype=np.float64)
    if mode == "map_to_camera":
        if T_base_cam is not None:
            return camera_frame, T_map_cam, [], "tf_camera_has_parent"
        return camera_frame, T_map_cam, [cv.transform_stamped(T_map_cam, map_frame, camera_frame, pose.stamp_ns)], ""
    T_map_base = None if T_base_cam is None else T_map_cam @ invert_transform(T_base_cam)
    child, T_child = (base_frame, T_map_base) if T_map_base is not None else (camera_frame, T_map_cam)
    if mode == "none":
        return child, T_child, [], ""
    if T_map_base is None:
        return child, T_child, [], "tf_no_static"
    if mode == "map_to_base_link":
        return child, T_child, [cv.transform_stamped(T_map_base, map_frame, base_frame, pose.stamp_ns)], ""
    if T_odom_base is None:
        return child, T_child, [], "tf_no_odometry_at_stamp"
    return child, T_child, [cv.transform_stamped(T_map_base @ invert_transform(T_odom_base), map_frame, odom_frame,
                                                 pose.stamp_ns)], ""


#: seconds /diagnostics warns after the TF plan switched (a late /tf_static re-anchored the map)
SWITCH_WARN_S = 30.0


class TfPlan:
    """Which TF the node publishes and the anchor of its map frame (module docstring): resolved at the first
    pose, switched at most once by a late ``/tf_static``. Used from the engine's worker thread only.

    Args:
        cfg: the node's :class:`~selfi_ros.ros.params.NodeConfig` (``publish_tf``, ``base_frame``,
            ``odom_topic``, ``tf_static_timeout_s``; read at each use: ``publish_tf`` is dynamic).
        static: the ``/tf_static`` store. has_odometry: whether odometry samples arrived.
        clock: monotonic seconds; sleep: waits (tests pass their own).
    """

    def __init__(self, cfg, static: StaticTransforms, has_odometry: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg, self.static, self.has_odometry, self.clock, self.sleep = cfg, static, has_odometry, clock, sleep
        self._mode: Optional[str] = None if cfg.publish_tf == "auto" else cfg.publish_tf
        self.T_map_engine = np.eye(4)  # the anchor: ROS map <- engine frame
        self.anchor_frame: Optional[str] = None  # the body the map is anchored to (None: the camera)
        self.anchored = False  # decided (first pose, or a loaded map)
        self.switches = 0  # re-anchorings by a late /tf_static
        self._warn_until = -math.inf
        self._warning = ""

    def body(self, camera_frame: str) -> Optional[tuple[str, np.ndarray]]:
        """``(body frame, 4x4 T_body_cam)``: ``base_frame`` when the static chain connects it to the camera,
        else the root of the camera's static tree, else None (bare camera)."""
        T = self.static.lookup(self.cfg.base_frame, camera_frame)
        if T is not None:
            return self.cfg.base_frame, T
        return self.static.root_of(camera_frame)

    def resolve(self, camera_frame: str, start_s: float, log) -> tuple[str, Optional[tuple[str, np.ndarray]],
                                                                            Optional[np.ndarray]]:
        """Before publishing poses: ``(mode, body or None, change)``. ``change`` is None, or the 4x4 rigid
        ``T_newmap_oldmap`` when a late ``/tf_static`` re-anchored the map just now (outputs published so far
        are re-expressed with it). ``start_s``: the node's start (monotonic s; the ``auto`` wait counts from
        it)."""
        c = self.cfg
        body = self.body(camera_frame)
        if not self.anchored:
            if self._mode is None and body is None:  # auto: wait for the static chain
                waited = self.clock() - start_s
                if waited < c.tf_static_timeout_s:
                    self.sleep(c.tf_static_timeout_s - waited)
                body = self.body(camera_frame)
            self._anchor(body)
        if self._mode is None:
            self._mode = self._auto_mode(body)
            log.info(f"publish_tf auto -> {self._mode} (body {body[0] if body else '-'} -> {camera_frame} on "
                     f"/tf_static: {body is not None}, odometry: {self.has_odometry()}); map frame "
                     + (f"= {body[0]} at the first anchor keyframe (z up)" if body else
                        "= the first anchor keyframe's optical frame (z forward)"))
        change = None
        if body is not None and self.anchor_frame is None:  # late /tf_static: switch cleanly, once
            old = self.T_map_engine
            self._anchor(body)
            change = self.T_map_engine @ invert_transform(old)
            self.switches += 1
            was = self._mode
            if c.publish_tf == "auto":
                self._mode = self._auto_mode(body)
            self._warning = (f"late /tf_static: {body[0]} -> {camera_frame} arrived after the first pose; TF "
                             f"switched {was} -> {self._mode} and the map re-anchored to {body[0]}")
            self._warn_until = self.clock() + SWITCH_WARN_S
            log.warning(self._warning + " (camera never published under two parents)")
        return self._mode, body, change

    def _auto_mode(self, body) -> str:
        if body is None:
            return "map_to_camera"
        return "map_to_odom" if (bool(self.cfg.odom_topic) and self.has_odometry()) else "map_to_base_link"

    def _anchor(self, body) -> None:
        self.T_map_engine = np.eye(4) if body is None else np.array(body[1], dtype=np.float64)
        self.anchor_frame = None if body is None else body[0]
        self.anchored = True

    def set_anchor(self, T_map_engine: np.ndarray, anchor_frame: Optional[str]) -> None:
        """Take a saved anchor (a loaded map keeps its map frame)."""
        self.T_map_engine = np.asarray(T_map_engine, dtype=np.float64).reshape(4, 4)
        self.anchor_frame = anchor_frame or None
        self.anchored = True

    def set_mode(self, mode: str) -> None:
        """``publish_tf`` changed at run time (already validated): a fixed mode applies from the next pose,
        ``auto`` is resolved again at the next pose (without a new wait); the map anchor is kept."""
        self._mode = None if mode == "auto" else mode

    def warnings(self, now: float) -> list[str]:
        """``/diagnostics`` problems: the late-/tf_static switch for :data:`SWITCH_WARN_S` s after it."""
        return [self._warning] if now < self._warn_until else []


class PathPublisher:
    """``nav_msgs/Path`` of the last ``max_length`` poses, published at a bounded rate (module docstring).

    Args:
        publisher: has ``publish(msg)`` and ``get_subscription_count()``.
        frame_id: the map frame. max_length: poses kept. min_period_s: least time between publications (s).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, publisher, frame_id: str, max_length: int, min_period_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.publisher, self.frame_id, self.min_period_s, self.clock = publisher, frame_id, min_period_s, clock
        self._poses: collections.deque = collections.deque(maxlen=max_length)
        self._lock = threading.Lock()
        self._new = 0  # poses added since the last publication
        self._last_pub = -math.inf
        self._last_stamp = 0
        self.published = 0  # Path messages sent

    def add(self, pose_stamped_msg, stamp_ns: int) -> None:
        """Append one ``PoseStamped`` (not published yet)."""
        with self._lock:
            self._poses.append(pose_stamped_msg)
            self._new += 1
            self._last_stamp = max(self._last_stamp, int(stamp_ns))

    def maybe_publish(self) -> bool:
        """Publish when poses were added, ``min_period_s`` passed and someone subscribes; returns whether it did."""
        from nav_msgs.msg import Path

        with self._lock:
            now = self.clock()
            if self._new == 0 or now - self._last_pub < self.min_period_s:
                return False
            if self.publisher.get_subscription_count() == 0:
                return False
            path = Path()
            path.header.stamp = cv.ns_to_stamp(self._last_stamp)
            path.header.frame_id = self.frame_id
            path.poses = list(self._poses)
            self._new, self._last_pub = 0, now
        self.publisher.publish(path)
        self.published += 1
        return True

    def re_express(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        """Replace every kept pose ``T`` (4x4 of the child in the map frame) by ``fn(T)`` (a re-anchored map,
        a switched child frame); published with the next poses."""
        with self._lock:
            self._poses = collections.deque(
                (cv.pose_stamped(fn(cv.pose_to_matrix(m.pose)), m.header.frame_id, cv.stamp_to_ns(m.header.stamp))
                 for m in self._poses), maxlen=self._poses.maxlen)
            self._new += 1

    def replace(self, messages: Sequence) -> None:
        """Replace every kept pose by ``messages`` (``PoseStamped`` in stamp order; the last ``max_length``
        kept): a loop closure corrected the whole trajectory. Published with the next rule check."""
        with self._lock:
            self._poses = collections.deque(messages, maxlen=self._poses.maxlen)
            if self._poses:
                self._last_stamp = max(self._last_stamp, cv.stamp_to_ns(self._poses[-1].header.stamp))
            self._new += 1

    def clear(self) -> None:
        """Forget every pose (``~/reset``)."""
        with self._lock:
            self._poses.clear()
            self._new = 0

    def __len__(self) -> int:
        return len(self._poses)


class MapPublisher:
    """``~/map_cloud``: copied and serialised only when changed and subscribed (module docstring).

    Args:
        publisher: has ``publish(msg)`` and ``get_subscription_count()``.
        source: returns the map as ((N, 3) float32 points, (N, 3) uint8 RGB) (``Engine.map_cloud``).
        serialise: ``(points, colors, stamp_ns) -> message`` (``points_to_pointcloud2`` in the map frame).
    """

    def __init__(self, publisher, source: Callable[[], tuple[np.ndarray, np.ndarray]],
                 serialise: Callable[[np.ndarray, np.ndarray, int], object]) -> None:
        self.publisher, self.source, self.serialise = publisher, source, serialise
        self._changed = False
        self.serialised = 0  # clouds serialised (and published)

    def mark_changed(self) -> None:
        """The map changed (a window was added, a reset)."""
        self._changed = True

    def maybe_publish(self, stamp_ns: int) -> bool:
        """Copy, serialise and publish when changed and subscribed; returns whether it did. Call it from the
        thread that owns the engine (the copy takes the engine's lock)."""
        if not self._changed or self.publisher.get_subscription_count() == 0:
            return False
        pts, cols = self.source()
        self.publisher.publish(self.serialise(pts, cols, int(stamp_ns)))
        self._changed = False
        self.serialised += 1
        return True


class NodeOutputs:
    """The publishers of ``selfi_node`` (created on an rclpy ``node``) and the per-output rules above.

    Args:
        node: the rclpy node. cfg: its :class:`~selfi_ros.ros.params.NodeConfig`.
        map_source: ``Engine.map_cloud`` (called from the engine's thread only).
        log: the node's logger (errors about missing message packages).
    """

    def __init__(self, node, cfg, map_source: Callable[[], tuple[np.ndarray, np.ndarray]], log) -> None:
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry, Path
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        self.cfg = cfg
        self.static = StaticTransforms()
        self.odom = OdometryHistory(2000)
        self.plan = TfPlan(cfg, self.static, lambda: len(self.odom) > 0)
        self._log = log
        self.tf_broadcaster = None  # tf2_ros.TransformBroadcaster where importable, else /tf by hand
        self.pub_tf = None
        try:
            import tf2_ros

            self.tf_broadcaster = tf2_ros.TransformBroadcaster(node)
        except ImportError:
            try:
                from tf2_msgs.msg import TFMessage

                self.pub_tf = node.create_publisher(TFMessage, "/tf", QoSProfile(
                    depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST))
            except ImportError:
                log.error("tf2_msgs is not installed: no /tf output (run scripts/build_interfaces.sh)")
        map_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        self.pub_map = node.create_publisher(PointCloud2, "~/map_cloud", map_qos)
        self.pub_window = node.create_publisher(PointCloud2, "~/window_cloud", 5)
        self.pub_path = node.create_publisher(Path, "~/path", 5)
        self.pub_odom = node.create_publisher(Odometry, "~/odometry", 50)
        self.pub_pose = node.create_publisher(PoseStamped, "~/pose", 50)
        self.path = PathPublisher(self.pub_path, cfg.map_frame, cfg.path_max_length, cfg.status_period_s)
        self.map = MapPublisher(self.pub_map, lambda: self._in_map(*map_source()),
                                lambda p, c, s: cv.points_to_pointcloud2(p, c, s, cfg.map_frame))

    def _in_map(self, points: Optional[np.ndarray], colors):
        """Engine-frame (N, 3) points -> the ROS map frame (the anchor, module docstring); float32."""
        if points is None or not len(points):
            return points, colors
        return transform_points(self.plan.T_map_engine, points), colors

    def tf_mode(self, camera_frame: str, start_s: float, log) -> str:
        """The TF mode for the next poses (:meth:`TfPlan.resolve`; worker thread only): when a late
        ``/tf_static`` re-anchors the map now, the kept ``~/path`` is re-expressed (child frame: the body)
        and ``~/map_cloud`` marked changed."""
        mode, body, change = self.plan.resolve(camera_frame, start_s, log)
        if change is not None:
            T_cam_body = invert_transform(body[1])
            self.path.re_express(lambda T: change @ T @ T_cam_body)  # kept camera poses -> body poses, new map
            self.map.mark_changed()
        return mode

    def set_tf_mode(self, mode: str) -> None:
        """Change the TF mode at run time (parameter ``publish_tf``, already validated against
        :data:`~selfi_ros.ros.params.TF_MODES`): a fixed mode applies from the next pose, ``auto`` is resolved
        again at the next pose (:meth:`TfPlan.set_mode`)."""
        self.cfg.publish_tf = mode
        self.plan.set_mode(mode)

    def publish_poses(self, poses: Sequence[PoseEstimate], mode: str, camera_frame: str, scale: float) -> list[str]:
        """``~/pose``, ``~/odometry`` (covariance position sigmas times ``scale``, metres per map unit) and one
        ``/tf`` message for ``poses`` (engine frame; re-expressed in the map frame here) in stamp order; the
        poses join ``~/path`` (published by its rule). Returns the reasons for poses without TF
        (``tf_no_static``, ``tf_no_odometry_at_stamp``, ``tf_camera_has_parent``)."""
        c = self.cfg
        body = self.plan.body(camera_frame)
        body_frame, T_body_cam = body if body is not None else (c.base_frame, None)
        A = self.plan.T_map_engine
        transforms, missing = [], []
        for pose in sorted(poses, key=lambda p: p.stamp_ns):
            T_odom_base = self.odom.at(pose.stamp_ns) if mode == "map_to_odom" else None
            in_map = dataclasses.replace(pose, T_map_cam=A @ np.asarray(pose.T_map_cam, dtype=np.float64))
            child, T_child, tfs, why = pose_transforms(in_map, mode, T_body_cam, c.map_frame, camera_frame,
                                                       body_frame, c.odom_frame, T_odom_base)
            ps = cv.pose_stamped(T_child, c.map_frame, pose.stamp_ns)
            self.path.add(ps, pose.stamp_ns)
            self.pub_pose.publish(ps)
            self.pub_odom.publish(cv.odometry(T_child, c.map_frame, child, pose.stamp_ns, pose.confidence, scale=scale))
            transforms.extend(tfs)
            if why:
                missing.append(why)
        if transforms:
            if self.tf_broadcaster is not None:
                self.tf_broadcaster.sendTransform(transforms)
            elif self.pub_tf is not None:
                self.pub_tf.publish(cv.tf_message(transforms))
        return missing

    def replace_path(self, poses: Sequence[PoseEstimate], mode: str, camera_frame: str) -> None:
        """A loop closure moved earlier poses: ``~/path`` is rebuilt from ``poses`` (the engine's corrected
        trajectory, engine frame, output units) with the child frame of ``mode`` (as :meth:`publish_poses`),
        and ``~/map_cloud`` is marked changed. No /tf is sent for past stamps: the ``map`` frame jumps with the
        next pose (REP-105: ``map`` may jump, ``odom`` stays continuous)."""
        c = self.cfg
        body = self.plan.body(camera_frame)
        body_frame, T_body_cam = body if body is not None else (c.base_frame, None)
        A = self.plan.T_map_engine
        keep = sorted(poses, key=lambda p: p.stamp_ns)[-self.path._poses.maxlen:]
        messages = []
        for pose in keep:
            in_map = dataclasses.replace(pose, T_map_cam=A @ np.asarray(pose.T_map_cam, dtype=np.float64))
            _, T_child, _, _ = pose_transforms(in_map, mode, T_body_cam, c.map_frame, camera_frame, body_frame,
                                               c.odom_frame, None)
            messages.append(cv.pose_stamped(T_child, c.map_frame, pose.stamp_ns))
        self.path.replace(messages)
        self.map.mark_changed()

    def publish_window(self, points: Optional[np.ndarray], colors: Optional[np.ndarray], stamp_ns: int) -> None:
        """``~/window_cloud`` (when enabled and subscribed): engine-frame points, published in the map frame."""
        if points is not None and self.cfg.publish_window_cloud and self.pub_window.get_subscription_count() > 0:
            pts, cols = self._in_map(points, colors)
            self.pub_window.publish(cv.points_to_pointcloud2(pts, cols, stamp_ns, self.cfg.map_frame))

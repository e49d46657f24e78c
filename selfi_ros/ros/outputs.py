"""The node's outputs: ``/tf`` (REP-105 modes), ``~/pose`` (``PoseStamped``), ``~/odometry``, ``~/path``,
``~/window_cloud`` and ``~/map_cloud``, all in the map frame and stamped with the image stamp.

TF modes (REP-105, ``publish_tf``): ``map_to_camera`` (``map -> camera``), ``map_to_base_link`` (``map ->
base_frame`` through the static ``base_frame -> camera`` chain on ``/tf_static``, as a URDF gives it),
``map_to_odom`` (``map -> odom`` such that ``map -> odom -> base`` equals the pose, with the robot's own
odometry at the image stamp), ``none``; ``auto`` picks one once, from what arrived within
``tf_static_timeout_s``. ``T_map_base = T_map_cam @ inv(T_base_cam)`` is computed once per pose.

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
import math
import threading
import time
from typing import Callable, Optional, Sequence

import numpy as np

from selfi_ros.engine.types import PoseEstimate
from selfi_ros.geometry import invert_transform
from selfi_ros.ros import conversions as cv


class StaticTransforms:
    """``/tf_static`` store: ``child -> (parent, T_parent_child)``, chained on demand."""

    def __init__(self) -> None:
        self._static: dict[str, tuple[str, np.ndarray]] = {}

    def add(self, msg) -> None:
        """Take every transform of a ``tf2_msgs/TFMessage``."""
        for t in msg.transforms:
            self._static[t.child_frame_id] = (t.header.frame_id, cv.transform_to_matrix(t))

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
    for ``/tf``, why no TF: "" or ``tf_no_static`` / ``tf_no_odometry_at_stamp``).

    The child is ``base_frame`` (``T_map_base = T_map_cam @ inv(T_base_cam)``, computed once) when the static
    chain is known, else the camera. Raises :class:`~selfi_ros.ros.conversions.ConversionError` for a
    non-rigid pose.
    """
    T_map_cam = np.asarray(pose.T_map_cam, dtype=np.float64)
    T_map_base = None if T_base_cam is None else T_map_cam @ invert_transform(T_base_cam)
    child, T_child = (base_frame, T_map_base) if T_map_base is not None else (camera_frame, T_map_cam)
    if mode == "none":
        return child, T_child, [], ""
    if mode == "map_to_camera":
        return child, T_child, [cv.transform_stamped(T_map_cam, map_frame, camera_frame, pose.stamp_ns)], ""
    if T_map_base is None:
        return child, T_child, [], "tf_no_static"
    if mode == "map_to_base_link":
        return child, T_child, [cv.transform_stamped(T_map_base, map_frame, base_frame, pose.stamp_ns)], ""
    if T_odom_base is None:
        return child, T_child, [], "tf_no_odometry_at_stamp"
    return child, T_child, [cv.transform_stamped(T_map_base @ invert_transform(T_odom_base), map_frame, odom_frame,
                                                 pose.stamp_ns)], ""


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
        self._tf_mode: Optional[str] = None if cfg.publish_tf == "auto" else cfg.publish_tf
        self.static = StaticTransforms()
        self.odom = OdometryHistory(2000)
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
        self.map = MapPublisher(self.pub_map, map_source,
                                lambda p, c, s: cv.points_to_pointcloud2(p, c, s, cfg.map_frame))

    def T_base_camera(self, camera_frame: str) -> Optional[np.ndarray]:
        """``T_base_cam`` (4x4) from /tf_static, chained through intermediate frames, or None."""
        return self.static.lookup(self.cfg.base_frame, camera_frame)

    def tf_mode(self, camera_frame: str, start_s: float, log) -> str:
        """The TF mode (``publish_tf``; ``auto`` is resolved once: it waits until ``tf_static_timeout_s``
        after ``start_s`` (monotonic s) for the static chain - call it from the worker thread only)."""
        if self._tf_mode is not None:
            return self._tf_mode
        c = self.cfg
        waited = time.monotonic() - start_s
        if waited < c.tf_static_timeout_s and self.T_base_camera(camera_frame) is None:
            time.sleep(c.tf_static_timeout_s - waited)
        has_static = self.T_base_camera(camera_frame) is not None
        has_odom = bool(c.odom_topic) and len(self.odom) > 0
        mode = "map_to_odom" if (has_static and has_odom) else ("map_to_base_link" if has_static else "map_to_camera")
        log.info(f"publish_tf auto -> {mode} (static {c.base_frame}->camera: {has_static}, odometry: {has_odom})")
        self._tf_mode = mode
        return mode

    def set_tf_mode(self, mode: str) -> None:
        """Change the TF mode at run time (parameter ``publish_tf``, already validated against
        :data:`~selfi_ros.ros.params.TF_MODES`): a fixed mode applies from the next pose, ``auto`` is resolved
        again at the next pose (the ``tf_static_timeout_s`` wait counts from the node's start)."""
        self.cfg.publish_tf = mode
        self._tf_mode = None if mode == "auto" else mode

    def publish_poses(self, poses: Sequence[PoseEstimate], mode: str, camera_frame: str, scale: float) -> list[str]:
        """``~/pose``, ``~/odometry`` (covariance position sigmas times ``scale``, metres per map unit) and one
        ``/tf`` message for ``poses`` in stamp order; the poses join ``~/path`` (published by its rule).
        Returns the reasons for poses without TF (``tf_no_static``, ``tf_no_odometry_at_stamp``)."""
        c = self.cfg
        T_base_cam = self.T_base_camera(camera_frame)
        transforms, missing = [], []
        for pose in sorted(poses, key=lambda p: p.stamp_ns):
            T_odom_base = self.odom.at(pose.stamp_ns) if mode == "map_to_odom" else None
            child, T_child, tfs, why = pose_transforms(pose, mode, T_base_cam, c.map_frame, camera_frame,
                                                       c.base_frame, c.odom_frame, T_odom_base)
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

    def publish_window(self, points: Optional[np.ndarray], colors: Optional[np.ndarray], stamp_ns: int) -> None:
        """``~/window_cloud`` (when enabled and subscribed)."""
        if points is not None and self.cfg.publish_window_cloud and self.pub_window.get_subscription_count() > 0:
            self.pub_window.publish(cv.points_to_pointcloud2(points, colors, stamp_ns, self.cfg.map_frame))

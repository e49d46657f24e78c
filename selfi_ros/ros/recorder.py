"""`selfi-ros record`: an independent rclpy subscriber that records what a pose node publishes.

Subscribes to ``/tf`` (``tf2_msgs/TFMessage``), PointCloud2 topics (default ``/selfi_node/map_cloud``,
latched, and ``/selfi_node/window_cloud``), the node's status (``selfi_ros/SelfiStatus``, when that
interface is built) and, for latency, the input image topic. On SIGINT/SIGTERM (or after ``--duration``)
it writes into ``--out``:

* ``trajectory.tum``: ``T_parent_child`` of every ``/tf`` transform ``--parent-frame -> --child-frame``
  (default ``map -> camera_optical_frame``), one line per image stamp (a later transform for the same
  stamp, e.g. a refined anchor pose, replaces the earlier one);
* ``map.ply``: the last cloud received on the map topic (map frame);
* ``recording.json``: message counts per topic, the last status values, and per-pose latency.

Latency of a pose = receive time of its first ``/tf`` transform - receive time (here, same clock) of
the input image carrying the same header stamp. Measured this way, it needs no clock agreement with
the player and works when a bag is replayed with its original (old) stamps; it includes the node's
queueing and inference but not the image's transport time to the node (the same loopback hop the
image took to this recorder). When no image with that stamp was seen (live camera not subscribed, or
``--image-topic ''``), latency = receive time - stamp (wall clock), reported separately.

Every process using this must keep DDS discovery local: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
(defaulted here when unset).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class RecorderConfig:
    """What to record. Topic names are absolute; empty strings disable that subscription."""

    parent_frame: str = "map"  # TF parent frame of the recorded trajectory
    child_frame: str = "camera_optical_frame"  # TF child frame of the recorded trajectory
    map_topic: str = "/selfi_node/map_cloud"  # latched PointCloud2 map (last one saved as PLY)
    cloud_topics: tuple = ("/selfi_node/window_cloud",)  # other PointCloud2 topics (counted, sizes kept)
    status_topic: str = "/selfi_node/status"  # selfi_ros/SelfiStatus
    diagnostics_topic: str = "/diagnostics"  # diagnostic_msgs/DiagnosticArray (the node's key/values kept)
    image_topic: str = "/camera/image_raw/compressed"  # input images (receive times for latency)
    image_type: str = "compressed"  # compressed | raw


@dataclass
class _PoseRecord:
    stamp_ns: int
    T: np.ndarray
    first_recv_ns: int


@dataclass
class Recording:
    """Everything received so far (filled by the subscription callbacks, under a lock)."""

    poses: dict = field(default_factory=dict)  # stamp_ns -> _PoseRecord
    image_recv_ns: dict = field(default_factory=dict)  # image stamp_ns -> first receive time (ns, wall)
    counts: dict = field(default_factory=dict)  # topic -> messages
    cloud_sizes: dict = field(default_factory=dict)  # topic -> list of point counts
    map_points: Optional[np.ndarray] = None
    map_colors: Optional[np.ndarray] = None
    map_frame_id: str = ""
    map_recv_ns: int = 0
    status: dict = field(default_factory=dict)
    status_recv_ns: int = 0
    diagnostics: dict = field(default_factory=dict)  # last key -> value (str) of the node's diagnostic status
    tf_other_frames: set = field(default_factory=set)  # (parent, child) pairs seen but not recorded


def _status_to_dict(msg) -> dict:
    out = {}
    for name in msg.get_fields_and_field_types():
        if name == "header":
            continue
        v = getattr(msg, name)
        out[name] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def latency_stats(latencies_ms: list) -> dict:
    """p50 / p95 / mean / max (ms) and count of a list of latencies; NaN figures when empty."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    if a.size == 0:
        return {"count": 0, "p50_ms": float("nan"), "p95_ms": float("nan"), "mean_ms": float("nan"),
                "max_ms": float("nan")}
    return {"count": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "mean_ms": float(a.mean()), "max_ms": float(a.max())}


class Recorder:
    """The subscriptions on an existing rclpy ``node`` and the bookkeeping (see module docstring).

    Args:
        node: an ``rclpy.node.Node`` (the caller owns init/spin/shutdown).
        config: :class:`RecorderConfig`.
    """

    def __init__(self, node, config: Optional[RecorderConfig] = None) -> None:
        from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                               qos_profile_sensor_data)
        from sensor_msgs.msg import CompressedImage, Image, PointCloud2
        from tf2_msgs.msg import TFMessage

        self.node = node
        self.cfg = config or RecorderConfig()
        self.rec = Recording()
        self._lock = threading.Lock()
        self._subs = []
        c = self.cfg
        tf_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self._subs.append(node.create_subscription(TFMessage, "/tf", self._on_tf, tf_qos))
        if c.map_topic:
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
            self._subs.append(node.create_subscription(
                PointCloud2, c.map_topic, lambda m: self._on_cloud(c.map_topic, m, True), latched))
        for t in c.cloud_topics:
            if t:
                self._subs.append(node.create_subscription(
                    PointCloud2, t, lambda m, t=t: self._on_cloud(t, m, False), 10))
        if c.status_topic:
            try:
                from selfi_ros.msg import SelfiStatus

                self._subs.append(node.create_subscription(SelfiStatus, c.status_topic, self._on_status, 10))
            except ImportError:
                node.get_logger().warning("selfi_ros.msg not built: status not recorded")
        if c.diagnostics_topic:
            from diagnostic_msgs.msg import DiagnosticArray

            self._subs.append(node.create_subscription(DiagnosticArray, c.diagnostics_topic, self._on_diag, 10))
        if c.image_topic:
            cls = CompressedImage if c.image_type == "compressed" else Image
            self._subs.append(node.create_subscription(cls, c.image_topic, self._on_image, qos_profile_sensor_data))

    @staticmethod
    def _now_ns() -> int:
        return time.time_ns()

    def _count(self, topic: str) -> None:
        self.rec.counts[topic] = self.rec.counts.get(topic, 0) + 1

    def _on_image(self, msg) -> None:
        now = self._now_ns()
        s = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._lock:
            self._count(self.cfg.image_topic)
            self.rec.image_recv_ns.setdefault(s, now)

    def _on_tf(self, msg) -> None:
        from selfi_ros.ros.conversions import transform_to_matrix

        now = self._now_ns()
        with self._lock:
            self._count("/tf")
            for t in msg.transforms:
                parent, child = t.header.frame_id.lstrip("/"), t.child_frame_id.lstrip("/")
                if parent != self.cfg.parent_frame.lstrip("/") or child != self.cfg.child_frame.lstrip("/"):
                    self.rec.tf_other_frames.add((parent, child))
                    continue
                s = t.header.stamp.sec * 1_000_000_000 + t.header.stamp.nanosec
                T = transform_to_matrix(t.transform)
                old = self.rec.poses.get(s)
                self.rec.poses[s] = _PoseRecord(s, T, old.first_recv_ns if old else now)

    def _on_cloud(self, topic: str, msg, is_map: bool) -> None:
        from selfi_ros.ros.conversions import pointcloud2_to_points

        now = self._now_ns()
        try:
            pts, cols = pointcloud2_to_points(msg)
        except Exception as e:  # noqa: BLE001 - count and keep going
            self.node.get_logger().warning(f"bad PointCloud2 on {topic}: {e}")
            pts, cols = None, None
        with self._lock:
            self._count(topic)
            self.rec.cloud_sizes.setdefault(topic, []).append(0 if pts is None else int(len(pts)))
            if is_map and pts is not None:
                self.rec.map_points, self.rec.map_colors = pts, cols
                self.rec.map_frame_id = msg.header.frame_id
                self.rec.map_recv_ns = now

    def _on_status(self, msg) -> None:
        with self._lock:
            self._count(self.cfg.status_topic)
            self.rec.status = _status_to_dict(msg)
            self.rec.status_recv_ns = self._now_ns()

    def _on_diag(self, msg) -> None:
        """Keep the key/values of the node's reconstruction status (e.g. ``count_skipped_under_load``)."""
        for st in msg.status:
            if "reconstruction" in st.name:
                with self._lock:
                    self._count(self.cfg.diagnostics_topic)
                    self.rec.diagnostics = {kv.key: kv.value for kv in st.values}

    # ------------------------------------------------------------------ results
    def latencies(self) -> tuple[list, list]:
        """(image-receive -> TF-receive latencies in ms, stamp -> TF-receive latencies in ms for poses
        whose image was not seen)."""
        with self._lock:
            a, b = [], []
            for s, p in self.rec.poses.items():
                t_img = self.rec.image_recv_ns.get(s)
                if t_img is not None:
                    a.append((p.first_recv_ns - t_img) * 1e-6)
                else:
                    b.append((p.first_recv_ns - s) * 1e-6)
            return a, b

    def steady_state_latencies(self) -> list:
        """Image-receive -> TF-receive latencies (ms) of the images that arrived after the first pose did,
        i.e. without the start-up wait until the first window exists."""
        with self._lock:
            if not self.rec.poses:
                return []
            t_first = min(p.first_recv_ns for p in self.rec.poses.values())
            return [(p.first_recv_ns - self.rec.image_recv_ns[s]) * 1e-6 for s, p in self.rec.poses.items()
                    if s in self.rec.image_recv_ns and self.rec.image_recv_ns[s] > t_first]

    def progress(self) -> dict:
        """Small live summary (for a supervising process): counts, poses, last status, last TF time."""
        with self._lock:
            last_tf = max((p.first_recv_ns for p in self.rec.poses.values()), default=0)
            try:  # graph query: is a pose publisher up yet? (for supervisors when status is not built)
                tf_pubs = int(self.node.count_publishers("/tf"))
            except Exception:  # noqa: BLE001 - node being destroyed
                tf_pubs = 0
            return {"counts": dict(self.rec.counts), "poses": len(self.rec.poses), "tf_publishers": tf_pubs,
                    "images": len(self.rec.image_recv_ns), "status": dict(self.rec.status),
                    "status_recv_ns": self.rec.status_recv_ns, "last_pose_recv_ns": last_tf,
                    "map_points": 0 if self.rec.map_points is None else int(len(self.rec.map_points)),
                    "map_recv_ns": self.rec.map_recv_ns, "time_ns": self._now_ns()}

    def save(self, out_dir: str) -> dict:
        """Write trajectory.tum, map.ply (if a map arrived) and recording.json into ``out_dir``;
        returns the recording summary (also in recording.json)."""
        from selfi_ros.engine.io import atomic_write_text, write_json, write_ply
        from selfi_ros.geometry import matrix_to_quat_xyzw

        os.makedirs(out_dir, exist_ok=True)
        img_lat, stamp_lat = self.latencies()
        steady = self.steady_state_latencies()
        with self._lock:
            lines = []
            for s in sorted(self.rec.poses):
                T = self.rec.poses[s].T
                q = matrix_to_quat_xyzw(T[:3, :3])
                p = T[:3, 3]
                lines.append(f"{s // 1_000_000_000}.{s % 1_000_000_000:09d} {p[0]:.9f} {p[1]:.9f} {p[2]:.9f} "
                             f"{q[0]:.9f} {q[1]:.9f} {q[2]:.9f} {q[3]:.9f}")
            paths = {"trajectory": atomic_write_text(os.path.join(out_dir, "trajectory.tum"),
                                                     "\n".join(lines) + ("\n" if lines else ""))}
            if self.rec.map_points is not None:
                paths["map"] = write_ply(os.path.join(out_dir, "map.ply"), self.rec.map_points, self.rec.map_colors)
            summary = {
                "parent_frame": self.cfg.parent_frame, "child_frame": self.cfg.child_frame,
                "poses": len(self.rec.poses), "images_seen": len(self.rec.image_recv_ns),
                "counts": dict(self.rec.counts), "cloud_sizes": {k: v[-20:] for k, v in self.rec.cloud_sizes.items()},
                "map_points": 0 if self.rec.map_points is None else int(len(self.rec.map_points)),
                "map_frame_id": self.rec.map_frame_id,
                "status": dict(self.rec.status),
                "diagnostics": dict(self.rec.diagnostics),
                "tf_other_frames": sorted(f"{a}->{b}" for a, b in self.rec.tf_other_frames),
                "latency_image_to_tf": latency_stats(img_lat),
                "latency_image_to_tf_after_first_pose": latency_stats(steady),
                "latency_stamp_to_tf": latency_stats(stamp_lat),
                "latency_image_to_tf_ms": [round(x, 3) for x in img_lat],
                "outputs": paths,
            }
        paths["recording"] = write_json(os.path.join(out_dir, "recording.json"), summary)
        return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = RecorderConfig()
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--parent-frame", default=d.parent_frame)
    parser.add_argument("--child-frame", default=d.child_frame)
    parser.add_argument("--map-topic", default=d.map_topic)
    parser.add_argument("--cloud-topics", default=",".join(d.cloud_topics), help="comma-separated PointCloud2 topics")
    parser.add_argument("--status-topic", default=d.status_topic)
    parser.add_argument("--image-topic", default=d.image_topic, help="input image topic for latency ('' = none)")
    parser.add_argument("--image-type", default=d.image_type, choices=("compressed", "raw"))
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: on signal)")
    parser.add_argument("--progress-file", default="",
                        help="rewrite this JSON (atomically, every 0.5 s) with live counts, for a supervisor")


def run(args: argparse.Namespace) -> int:
    from selfi_ros.ros.node import ensure_localhost_discovery

    ensure_localhost_discovery()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from selfi_ros.engine.io import write_json

    stop = threading.Event()

    def _stop(signum, frame):  # noqa: ARG001
        stop.set()

    rclpy.init(args=None, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    node = rclpy.create_node("selfi_recorder")
    cfg = RecorderConfig(parent_frame=args.parent_frame, child_frame=args.child_frame, map_topic=args.map_topic,
                         cloud_topics=tuple(t for t in args.cloud_topics.split(",") if t),
                         status_topic=args.status_topic, image_topic=args.image_topic, image_type=args.image_type)
    recorder = Recorder(node, cfg)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    t_end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    next_progress = 0.0
    try:
        while not stop.is_set() and time.monotonic() < t_end:
            ex.spin_once(timeout_sec=0.05)
            if args.progress_file and time.monotonic() >= next_progress:
                write_json(args.progress_file, recorder.progress())
                next_progress = time.monotonic() + 0.5
        summary = recorder.save(args.out)
        if args.progress_file:
            write_json(args.progress_file, dict(recorder.progress(), saved=True))
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    lat = summary["latency_image_to_tf"]
    print(json.dumps({"poses": summary["poses"], "images_seen": summary["images_seen"],
                      "map_points": summary["map_points"], "latency_p50_ms": lat["p50_ms"],
                      "latency_p95_ms": lat["p95_ms"]}))
    return 0


def main(argv: Optional[list] = None) -> int:
    """``python -m selfi_ros.ros.recorder ...`` (same as ``selfi-ros record``)."""
    p = argparse.ArgumentParser(prog="selfi-ros record", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

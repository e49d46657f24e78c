"""Helpers for the node tests over DDS: a trivial geometric backend, the node in a subprocess, and an
in-process rclpy client that publishes inputs and records outputs. Not a test module itself.
"""
from __future__ import annotations

import collections
import os
import random
import subprocess
import sys
import threading
import time
from typing import Callable, Optional, Sequence

import numpy as np

from selfi_ros.engine.backend import BackendBase
from selfi_ros.engine.types import Frame, LocalizationResult, WindowReconstruction

TEST_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TEST_DIR)

#: camera speed of LineBackend along its x axis (m/s) and depth of the wall it sees (m)
LINE_SPEED = 0.5
WALL_DEPTH = 2.0


def assert_close_rel(actual, expected, rel=1e-5, atol_rel=None):
    """Compare fp32 results with a tolerance relative to the reference: ``rtol=rel`` and an absolute floor of
    ``atol_rel`` (default ``rel``) times max|expected|, because other x86-64 CPUs' fp32 kernels differ in the
    last bits. Accepts numpy arrays and torch tensors; raises AssertionError with the worst element."""
    import torch

    e = expected if isinstance(expected, torch.Tensor) else torch.as_tensor(np.asarray(expected))
    a = (actual if isinstance(actual, torch.Tensor) else torch.as_tensor(np.asarray(actual))).to(e.dtype)
    scale = float(e.abs().max()) if e.numel() else 0.0
    torch.testing.assert_close(a, e, rtol=rel, atol=(rel if atol_rel is None else atol_rel) * scale)


class LineBackend(BackendBase):
    """Backend with a known answer: the camera translates along +x at ``LINE_SPEED`` m/s of stamp time
    (no rotation) in front of a wall at ``WALL_DEPTH`` m; windows live in the first anchor's frame (the
    VGGT convention) at metric scale, so after chaining the map frame is the first anchor's camera frame.
    """

    name = "line"
    random_weights = False

    def __init__(self, random_weights: bool = False) -> None:
        self._x0: Optional[float] = None
        self.random_weights = bool(random_weights)
        self.res = (6, 8)  # (H, W) of the returned maps

    @staticmethod
    def x_of(stamp_ns: int) -> float:
        return LINE_SPEED * stamp_ns * 1e-9

    def reset(self) -> None:
        self._x0 = None

    def _K(self, f: Frame) -> np.ndarray:
        H, W = self.res
        K = np.array([[W * 0.8, 0, W / 2], [0, W * 0.8, H / 2], [0, 0, 1.0]])
        return K

    def reconstruct_window(self, window_id: int, anchors: Sequence[Frame]) -> WindowReconstruction:
        x0 = self.x_of(anchors[0].stamp_ns)
        self._x0 = x0
        H, W = self.res
        S = len(anchors)
        ext = np.zeros((S, 3, 4))
        pts = np.zeros((S, H, W, 3), np.float32)
        v, u = np.mgrid[0:H, 0:W]
        for i, f in enumerate(anchors):
            c = self.x_of(f.stamp_ns) - x0
            ext[i, :, :3] = np.eye(3)
            ext[i, 0, 3] = -c
            K = self._K(f)
            pts[i, ..., 0] = (u + 0.5 - K[0, 2]) / K[0, 0] * WALL_DEPTH + c
            pts[i, ..., 1] = (v + 0.5 - K[1, 2]) / K[1, 1] * WALL_DEPTH
            pts[i, ..., 2] = WALL_DEPTH
        cols = np.zeros((S, H, W, 3), np.uint8)
        cols[..., 0] = 200
        return WindowReconstruction(
            window_id=window_id, stamps_ns=np.array([f.stamp_ns for f in anchors]),
            frame_indices=np.array([f.index for f in anchors]), extrinsics=ext,
            intrinsics=np.stack([self._K(f) for f in anchors]), image_size_hw=(H, W),
            depth=np.full((S, H, W), WALL_DEPTH, np.float32), depth_conf=np.ones((S, H, W), np.float32),
            points=pts, points_conf=np.ones((S, H, W), np.float32), colors=cols, backend=self.name,
            random_weights=self.random_weights)

    def localize(self, frames: Sequence[Frame]) -> list[LocalizationResult]:
        from selfi_ros.engine.backend import BackendError

        if self._x0 is None:
            raise BackendError("no window yet")
        out = []
        for f in frames:
            E = np.zeros((3, 4))
            E[:, :3] = np.eye(3)
            E[0, 3] = -(self.x_of(f.stamp_ns) - self._x0)
            out.append(LocalizationResult(f.stamp_ns, f.index, E, K=None, confidence=0.9))
        return out


class RandomLineBackend(LineBackend):
    """LineBackend that claims random weights (to check the loud warnings)."""

    def __init__(self) -> None:
        super().__init__(random_weights=True)


def free_domain_id() -> int:
    """A ROS_DOMAIN_ID for one test (random in 30..200, so parallel test processes rarely collide)."""
    return random.Random(os.getpid() * 7919 + time.monotonic_ns()).randint(30, 200)


def ros_env(domain_id: int) -> dict:
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["PYTHONPATH"] = os.pathsep.join([REPO, TEST_DIR] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("ROS_LOG_DIR", os.path.join(REPO, "build", "ros_log"))
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    return env


class NodeProcess:
    """``python -m selfi_ros.ros.node`` in a subprocess with ``-p name:=value`` parameters; its output is
    captured to a file (``self.log()``)."""

    def __init__(self, domain_id: int, params: dict, log_path: str, params_file: Optional[str] = None) -> None:
        from selfi_ros.ros.node import node_command

        args = node_command(params, params_file)
        self.log_path = log_path
        self._fh = open(log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=REPO, env=ros_env(domain_id), stdout=self._fh,
                                     stderr=subprocess.STDOUT)

    def log(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        with open(self.log_path, "rb") as fh:
            return fh.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: clean rclpy shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()
        return self.proc.returncode


class RosClient:
    """In-process rclpy node in its own context/domain: publishers for the inputs, recorders for outputs.

    ``received[topic]`` is a list of messages in arrival order.
    """

    def __init__(self, domain_id: int, node_ns: str = "/selfi_node") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        self.rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id)
        self.node = rclpy.create_node("selfi_test_client", context=self.ctx)
        self.exec = SingleThreadedExecutor(context=self.ctx)
        self.exec.add_node(self.node)
        self.received: dict[str, list] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self.ns = node_ns
        self.reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                  durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop and self.ctx.ok():
            self.exec.spin_once(timeout_sec=0.05)

    def record(self, msg_type, topic: str, qos=None) -> None:
        def cb(m, t=topic):
            with self._lock:
                self.received[t].append(m)
        self.node.create_subscription(msg_type, topic, cb, qos or self.reliable)

    def publisher(self, msg_type, topic: str, qos=None):
        return self.node.create_publisher(msg_type, topic, qos or self.reliable)

    def get(self, topic: str) -> list:
        with self._lock:
            return list(self.received[topic])

    def wait_for(self, pred: Callable[[], bool], timeout: float, node: Optional[NodeProcess] = None) -> bool:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if pred():
                return True
            if node is not None and not node.alive():
                raise RuntimeError(f"node died:\n{node.log()[-3000:]}")
            time.sleep(0.05)
        return pred()

    def wait_subscribers(self, pub, n: int = 1, timeout: float = 15.0, node: Optional[NodeProcess] = None) -> bool:
        return self.wait_for(lambda: pub.get_subscription_count() >= n, timeout, node)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


def image_pair(stamp_ns: int, w: int = 64, h: int = 48, frame_id: str = "cam_optical", seed: int = 0,
               encoding: str = "rgb8", K: Optional[np.ndarray] = None):
    """A textured RGB ``Image`` and a matching ``CameraInfo`` (same stamp)."""
    from selfi_ros.ros.conversions import K_to_camera_info, rgb8_to_image

    rng = np.random.default_rng(seed + stamp_ns % 1000)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if K is None:
        K = np.array([[0.8 * w, 0, w / 2], [0, 0.8 * w, h / 2], [0, 0, 1.0]])
    return rgb8_to_image(img, stamp_ns, frame_id, encoding), K_to_camera_info(K, w, h, stamp_ns, frame_id)


#: parameters that make every frame a keyframe and small windows (fast tests)
FAST_ENGINE_PARAMS = dict(keyframe_max_interval_s=0.05, keyframe_min_interval_s=0.0, window_size=3,
                          window_overlap=1, window_max_keyframes=4, status_period_s=0.2,
                          map_publish_period_s=0.5, tf_static_timeout_s=0.5)


class SlowLineBackend(LineBackend):
    """LineBackend that takes 40 ms per localization and 80 ms per window (to overload the node)."""

    def reconstruct_window(self, window_id, anchors):
        time.sleep(0.08)
        return super().reconstruct_window(window_id, anchors)

    def localize(self, frames):
        time.sleep(0.04 * len(frames))
        return super().localize(frames)


def diag_values(arr) -> dict:
    """``/diagnostics`` DiagnosticArray of the node -> {key: value} of its first status, plus
    ``_level`` and ``_message``."""
    st = arr.status[0]
    out = {kv.key: kv.value for kv in st.values}
    out["_level"] = int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level)
    out["_message"] = st.message
    return out


def node_and_client_factory(tmp_path):
    """Generator behind the ``ros`` fixtures of the node tests: yields ``start(**params) -> (NodeProcess,
    RosClient)`` (a LineBackend node in its own process and an in-process client on a fresh domain id, LOCALHOST
    discovery); stops every pair it started when resumed."""
    made = []

    def start(**params):
        d = free_domain_id()
        node = NodeProcess(d, {"backend": "selfi_ros_testing:LineBackend", **FAST_ENGINE_PARAMS, **params},
                           str(tmp_path / f"node{len(made)}.log"))
        client = RosClient(d)
        made.append((node, client))
        return node, client

    yield start
    for node, client in made:
        client.close()
        node.stop()


def publish_image_pairs(client, pi, pc, stamps_ns: Sequence[int], gap_s: float = 0.08) -> list[int]:
    """Publish a CameraInfo (on ``pc``) then its Image (on ``pi``) of :func:`image_pair` for every stamp, ``gap_s``
    apart (the client keeps spinning meanwhile); returns the stamps (ns) in order."""
    stamps = [int(t) for t in stamps_ns]
    for t in stamps:
        im, ci = image_pair(t)
        pc.publish(ci)
        pi.publish(im)
        client.wait_for(lambda: False, gap_s)
    return stamps


def tum_folder_from_messages(root, image_messages) -> str:
    """A TUM RGB-D folder (``rgb/<stamp>.jpg`` with the messages' JPEG bytes, ``rgb.txt``) under ``root``
    (a pathlib.Path) from bag records of ``CompressedImage`` messages, with the committed real sample's
    calibration YAML and ground truth beside it. Returns ``root``."""
    import shutil

    from selfi_ros.data import TUM_SAMPLE_CAMERA_YAML, TUM_SAMPLE_GT
    from selfi_ros.ros.conversions import stamp_to_ns

    (root / "rgb").mkdir(parents=True)
    lines = ["# color images", "# timestamp filename"]
    for m in image_messages:
        s, ns = divmod(stamp_to_ns(m.message.header.stamp), 10**9)
        name = f"rgb/{s}.{ns // 1000:06d}.jpg"
        (root / name).write_bytes(bytes(m.message.data))
        lines.append(f"{s}.{ns // 1000:06d} {name}")
    (root / "rgb.txt").write_text("\n".join(lines) + "\n")
    shutil.copyfile(TUM_SAMPLE_CAMERA_YAML, root / "camera_info.yaml")
    shutil.copyfile(TUM_SAMPLE_GT, root / "groundtruth.txt")
    return root


def publish_bag_images(client, pi, pc, bag: str, n_images: int, gap_s: float = 0.2) -> int:
    """Publish a bag's ``/camera/image_raw/compressed`` and ``/camera/camera_info`` records in their order
    through ``pi`` / ``pc`` (``client``'s publishers), ``gap_s`` after each image, until ``n_images`` images
    went out. Returns the images sent."""
    from selfi_ros.ros.bag import read_messages

    sent = 0
    for m in read_messages(bag, topics=["/camera/image_raw/compressed", "/camera/camera_info"]):
        (pi if m.topic.endswith("compressed") else pc).publish(m.message)
        if m.topic.endswith("compressed"):
            sent += 1
            client.wait_for(lambda: False, gap_s)
        if sent >= n_images:
            break
    return sent

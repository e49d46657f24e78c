"""Messages -> Frame (selfi_ros.ros.input): the pairing / wait / validation rules of the plain class, and one
road: the same bag through the node's input path (SelfiNode callbacks, in process) and through
``frames_from_bag`` gives identical frames (stamps, K, pixels), also with CameraInfo size mismatches and with
CameraInfo stamps that match no image."""
import os
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
sys.path.insert(0, os.path.dirname(__file__))

from selfi_ros.engine.engine import EngineConfig, EngineOutput  # noqa: E402
from selfi_ros.engine.status import BackendStatus, EngineStatus  # noqa: E402
from selfi_ros.ros.bag import BagWriter, read_messages  # noqa: E402
from selfi_ros.ros.conversions import K_to_camera_info, rgb8_to_image, stamp_to_ns  # noqa: E402
from selfi_ros.ros.input import FrameInput, InputConfig  # noqa: E402
from selfi_ros_testing import REPO, free_domain_id  # noqa: E402

SAMPLE_BAG = os.path.join(REPO, "data", "sample", "woodbox_orbit.mcap")
IMAGE_TOPIC, INFO_TOPIC = "/camera/image_raw/compressed", "/camera/camera_info"
K = np.array([[50.0, 0, 16], [0, 50.0, 12], [0, 0, 1]])
MS = 1_000_000


def pair(stamp_ns, w=32, h=24, info_stamp=None, info_size=None, value=0):
    rgb = np.full((h, w, 3), value % 256, np.uint8)
    iw, ih = info_size or (w, h)
    return (rgb8_to_image(rgb, stamp_ns, "cam"),
            K_to_camera_info(K, iw, ih, stamp_ns if info_stamp is None else info_stamp, "cam"))


def kinds(events):
    return [(e.kind, e.reason) for e in events]


def test_synced_pairs_and_validation_reasons():
    fi = FrameInput(InputConfig())
    im, ci = pair(100 * MS)
    assert kinds(fi.add_camera_info(ci, 0.0)) == []
    ev = fi.add_image(im, 0.01)
    assert kinds(ev) == [("frame", "synced")] and np.array_equal(ev[0].frame.K, K) and ev[0].frame.index == 0
    assert ev[0].frame.frame_id == "cam" and fi.camera_frame == "cam"
    # image first, CameraInfo 3 ms later in stamp (within 5 ms): released when the CameraInfo arrives
    im, ci = pair(200 * MS, info_stamp=203 * MS)
    assert fi.add_image(im, 0.1) == [] and fi.waiting == 1
    assert kinds(fi.add_camera_info(ci, 0.12)) == [("frame", "synced")] and fi.waiting == 0
    im, ci = pair(300 * MS, info_size=(40, 30))
    fi.add_camera_info(ci, 0.2)
    assert kinds(fi.add_image(im, 0.2)) == [("rejected", "size_mismatch")]
    bad = rgb8_to_image(np.zeros((4, 4, 3), np.uint8), 400 * MS, "cam")
    bad.encoding = "yuv422_weird"
    assert kinds(fi.add_image(bad, 0.3)) == [("rejected", "bad_image")]
    im, ci = pair(500 * MS)
    ci.k = [0.0] * 9  # uncalibrated: an invalid CameraInfo rejects its images
    assert kinds(fi.add_camera_info(ci, 0.4)) == [("warning", "bad_camera_info_msg")]
    assert kinds(fi.add_image(im, 0.4)) == [("rejected", "bad_camera_info")]
    for stamp, reason in ((200 * MS, "stamp_repeated"), (150 * MS, "stamp_out_of_order")):  # last: 200 ms
        im, ci = pair(stamp)
        fi.add_camera_info(ci, 0.5)
        assert kinds(fi.add_image(im, 0.5)) == [("dropped", reason)]
    fi.reset()  # ~/reset forgets the stamp order
    im, _ = pair(150 * MS)
    assert kinds(fi.add_image(im, 0.6)) == [("frame", "synced")]
    assert kinds(fi.add_image(im, 0.6)) == [("dropped", "stamp_repeated")]
    assert fi.images_in == 9


def test_wait_latest_timeout_and_overflow():
    cfg = InputConfig(camera_info_wait_s=0.5, camera_info_timeout_s=2.0, qos_depth=2)
    fi = FrameInput(cfg)
    im, _ = pair(100 * MS)
    assert fi.add_image(im, 0.0) == []
    assert fi.flush(1.9) == []  # no CameraInfo ever: wait for the timeout
    ev = fi.flush(2.0)
    assert kinds(ev) == [("note", "no_camera_info"), ("frame", "none")] and ev[1].frame.K is None
    # a CameraInfo with a stamp matching nothing: images wait camera_info_wait_s, then take it (latest)
    _, ci = pair(0, info_stamp=50 * MS)
    fi.add_camera_info(ci, 2.1)
    im, _ = pair(200 * MS)
    assert fi.add_image(im, 2.2) == []
    assert fi.flush(2.69) == []
    ev = fi.flush(2.7)
    assert kinds(ev) == [("note", "camera_info_unsynced"), ("frame", "latest")] and np.array_equal(ev[1].frame.K, K)
    assert ev[1].recv_s == 2.2
    # more than max(2 * qos_depth, 4) = 4 waiting images: the oldest is dropped
    out = []
    for i in range(6):
        out += fi.add_image(pair((300 + i) * MS)[0], 3.0)
    assert kinds(out) == [("dropped", "camera_info_wait_overflow")] * 2 and fi.waiting == 4
    assert [e.frame.stamp_ns for e in fi.finish() if e.kind == "frame"] == [(302 + i) * MS for i in range(4)]


def test_fixed_intrinsics_without_pairing():
    fi = FrameInput(InputConfig(use_camera_info=False, fixed_K=K, camera_frame="optical"))
    ev = fi.add_image(pair(1)[0], 0.0)
    assert kinds(ev) == [("frame", "fixed")] and np.array_equal(ev[0].frame.K, K)
    assert ev[0].frame.frame_id == "optical"


# ------------------------------------------------------------------------------ one road: node == offline
def _write_variant(src, dst, n_images, variant):
    """First ``n_images`` image/CameraInfo pairs of the sample bag; ``size``: every third CameraInfo says
    another size; ``unmatched``: CameraInfo stamps 20 ms off (never within 5 ms) and none for the first 3."""
    n = 0
    with BagWriter(dst) as w:
        for m in read_messages(src, topics=[IMAGE_TOPIC, INFO_TOPIC]):
            msg = m.message
            if m.topic == IMAGE_TOPIC:
                n += 1
                if n > n_images:
                    break
            elif variant == "size" and n % 3 == 0:
                msg.width += 8
            elif variant == "unmatched":
                if n < 3:
                    continue
                ns = stamp_to_ns(msg.header.stamp) + 20 * MS
                msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 10**9, ns % 10**9
            w.write(m.topic, msg, m.log_time_ns)


class RecordingEngine:
    """Stands in for the Engine behind the node: records the frames the worker hands over."""

    def __init__(self):
        self.frames = []
        self.backend = object()
        self.config = EngineConfig()

    def status(self):
        return EngineStatus(backend="recording")

    def backend_status(self):
        return BackendStatus()

    def set_idle(self, idle):
        pass

    def add_odometry(self, sample):
        pass

    def process_frames(self, frames, under_load=False):
        self.frames.extend(frames)
        return [EngineOutput() for _ in frames]

    def map_cloud(self):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)

    def save(self, out_dir):
        return {}

    def reset(self):
        pass


def _through_node(bag):
    import rclpy
    from rclpy.parameter import Parameter

    from selfi_ros.ros.node import SelfiNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=free_domain_id())
    eng = RecordingEngine()
    node = SelfiNode(engine=eng, context=ctx, parameter_overrides=[
        Parameter("queue_size", value=1000), Parameter("image_transport", value="compressed")])
    try:
        clock = [0.0]
        node.input_clock = lambda: clock[0]
        for m in read_messages(bag):
            clock[0] = m.log_time_ns * 1e-9
            node._flush_pending()  # the node's 50 ms timer
            (node._on_info if m.topic == INFO_TOPIC else node._on_image)(m.message)
        clock[0] += 10.0  # the node runs on after the stream: every wait and timeout passes
        node._flush_pending()
        deadline = time.monotonic() + 20
        while len(node._queue) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the worker hands over the last batch
        return eng.frames, dict(node.counters.counts)
    finally:
        node.destroy()
        rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("variant", ["plain", "size", "unmatched"])
def test_node_input_path_equals_frames_from_bag(tmp_path, variant):
    from selfi_ros.apps.reconstruct import frames_from_bag

    bag = str(tmp_path / f"{variant}.mcap")
    _write_variant(SAMPLE_BAG, bag, 12, variant)
    online, counts = _through_node(bag)
    offline = list(frames_from_bag(bag))
    assert [f.stamp_ns for f in online] == [f.stamp_ns for f in offline]
    for a, b in zip(online, offline):
        assert np.array_equal(a.K, b.K) and np.array_equal(a.image, b.image) and a.index == b.index
    if variant == "plain":
        assert len(offline) == 12 and not counts
    elif variant == "size":
        assert counts.get("size_mismatch", 0) == 4 and len(offline) == 8
    else:
        assert counts.get("camera_info_unsynced", 0) == 12 and len(offline) == 12
        assert all(f.K is not None for f in offline)

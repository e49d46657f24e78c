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
#: the barrel distortion of the issue (plumb_bob k1 k2 p1 p2 k3)
ISSUE_D = np.array([-0.35, 0.12, 0.001, -0.002, 0.0])


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


def test_a_lost_camera_info_never_makes_its_image_overtaken():
    """Images are released in stamp order: image 100 ms waits (its CameraInfo was lost), image 200 ms arrives
    with its CameraInfo; 100 ms goes first with the latest CameraInfo instead of arriving later as out of
    order (or, 1 s later under load, as a time jump that would start a new map)."""
    fi = FrameInput(InputConfig(camera_info_wait_s=0.5, time_jump_threshold_s=1.0))
    _, ci0 = pair(0)
    fi.add_camera_info(ci0, 0.0)
    im1, _ = pair(100 * MS)  # its CameraInfo never comes
    assert fi.add_image(im1, 0.1) == [] and fi.waiting == 1
    im2, ci2 = pair(200 * MS)
    fi.add_camera_info(ci2, 0.2)  # matches nothing waiting: nothing released yet
    ev = fi.add_image(im2, 0.2)
    assert kinds(ev) == [("note", "camera_info_unsynced"), ("frame", "latest"), ("frame", "synced")]
    assert [e.frame.stamp_ns for e in ev if e.kind == "frame"] == [100 * MS, 200 * MS] and fi.waiting == 0
    # a CameraInfo releasing a newer waiting image releases the older waiting ones first, in stamp order
    im3, _ = pair(300 * MS)
    im4, ci4 = pair(400 * MS)
    assert fi.add_image(im4, 0.3) == [] and fi.add_image(im3, 0.3) == [] and fi.waiting == 2
    ev = fi.add_camera_info(ci4, 0.31)
    assert [e.frame.stamp_ns for e in ev if e.kind == "frame"] == [300 * MS, 400 * MS]
    assert "dropped" not in [e.kind for e in ev] and fi.waiting == 0


def test_fixed_intrinsics_without_pairing():
    fi = FrameInput(InputConfig(use_camera_info=False, fixed_K=K, camera_frame="optical"))
    ev = fi.add_image(pair(1)[0], 0.0)
    assert kinds(ev) == [("frame", "fixed")] and np.array_equal(ev[0].frame.K, K)
    assert ev[0].frame.frame_id == "optical"


# ------------------------------------------------------------------------------ lens distortion
def _distorted_info(model, stamp_ns):
    from selfi_ros.ros.conversions import camera_model_to_camera_info

    return camera_model_to_camera_info(model, stamp_ns, "cam")


def test_distorted_camera_info_gives_rectified_frames():
    """A plumb_bob / equidistant CameraInfo: the frame is the rectified image (dots of known 3D points where
    the pinhole Frame.K projects them) and Frame.K is P's 3x3 - not the raw image with K (the old behaviour)."""
    import test_camera_model as tc

    for name in ("plumb_bob", "equidistant"):
        model = tc._model(name)
        q, X, raw = tc._scene(model)
        fi = FrameInput(InputConfig())
        fi.add_camera_info(_distorted_info(model, 7 * MS), 0.0)
        ev = fi.add_image(rgb8_to_image(tc._dots((tc.W, tc.H), raw), 7 * MS, "cam"), 0.0)
        assert kinds(ev) == [("frame", "synced")]
        f = ev[0].frame
        np.testing.assert_array_equal(f.K, model.P[:, :3])
        assert not np.array_equal(f.K, model.K)
        expected = tc._pinhole(f.K, X @ model.R.T)
        tc.assert_close_rel(tc._centroids(f.image, expected), expected, rel=1e-3)
        # already rectified images (rectify:=false): used as they are, with P's intrinsics
        fi = FrameInput(InputConfig(rectify=False))
        fi.add_camera_info(_distorted_info(model, 7 * MS), 0.0)
        img = tc._dots((tc.W, tc.H), raw)
        f = fi.add_image(rgb8_to_image(img, 7 * MS, "cam"), 0.0)[0].frame
        np.testing.assert_array_equal(f.image, img)
        np.testing.assert_array_equal(f.K, model.P[:, :3])


def test_unsupported_model_is_a_counted_rejection_and_maps_are_cached():
    from selfi_ros.data.camera_model import CameraModel

    fi = FrameInput(InputConfig())
    bad = CameraModel(32, 24, "kannala_brandt", K, D=[0.1, 0.01, 0.0, 0.0])
    assert kinds(fi.add_camera_info(_distorted_info(bad, 1 * MS), 0.0)) == []
    ev = fi.add_image(pair(1 * MS)[0], 0.0)
    assert kinds(ev) == [("rejected", "unsupported_camera_model")]
    assert "kannala_brandt" in ev[0].detail and "rectify" in ev[0].detail
    # rectify:=false: the images are rectified already, the model does not matter
    fi = FrameInput(InputConfig(rectify=False))
    fi.add_camera_info(_distorted_info(bad, 1 * MS), 0.0)
    assert kinds(fi.add_image(pair(1 * MS)[0], 0.0)) == [("frame", "synced")]
    # one Rectifier (maps computed once) for a CameraInfo repeated at camera rate
    dist = CameraModel(32, 24, "plumb_bob", K, D=ISSUE_D)
    fi = FrameInput(InputConfig())
    for i in range(1, 6):
        fi.add_camera_info(_distorted_info(dist, i * MS), 0.0)
        assert kinds(fi.add_image(pair(i * MS, value=100)[0], 0.0)) == [("frame", "synced")]
    assert len(fi._rectifiers) == 1


def test_binning_and_roi_size_and_intrinsics():
    """A 2x2-binned ROI CameraInfo: images of the binned ROI size are accepted with the hand-computed
    intrinsics (principal point shifted by the ROI offset, then halved); full-size images are rejected."""
    from selfi_ros.data.camera_model import CameraModel, Roi

    Kf = np.array([[100.0, 0, 40.5], [0, 104.0, 30.25], [0, 0, 1]])
    m = CameraModel(80, 60, "plumb_bob", Kf, D=np.zeros(5), binning_x=2, binning_y=2,
                    roi=Roi(x_offset=8, y_offset=4, width=64, height=48))
    fi = FrameInput(InputConfig())
    fi.add_camera_info(_distorted_info(m, 1 * MS), 0.0)
    ev = fi.add_image(pair(1 * MS, w=32, h=24)[0], 0.0)
    assert kinds(ev) == [("frame", "synced")]
    np.testing.assert_allclose(ev[0].frame.K, [[50.0, 0, 16.25], [0, 52.0, 13.125], [0, 0, 1]], rtol=1e-15)
    fi.add_camera_info(_distorted_info(m, 2 * MS), 0.1)
    ev = fi.add_image(pair(2 * MS, w=80, h=60)[0], 0.1)
    assert kinds(ev) == [("rejected", "size_mismatch")] and "32x24" in ev[0].detail


def test_camera_info_round_trip_every_field():
    from selfi_ros.data.camera_model import CameraModel, Roi
    from selfi_ros.ros.conversions import camera_info_to_model

    m = CameraModel(640, 480, "rational_polynomial", [[400.0, 0, 320], [0, 401, 240], [0, 0, 1]],
                    D=[-0.3, 0.1, 0.001, -0.001, 0.0, 0.05, 0.02, 0.0],
                    R=[[1, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]],
                    P=[[350.0, 0, 300, -35], [0, 350, 250, 0], [0, 0, 1, 0]],
                    binning_x=2, binning_y=1, roi=Roi(10, 20, 300, 200, True))
    assert camera_info_to_model(_distorted_info(m, 5)) == m


# ------------------------------------------------------------------------------ one road: node == offline
def _write_variant(src, dst, n_images, variant):
    """First ``n_images`` image/CameraInfo pairs of the sample bag; ``size``: every third CameraInfo says
    another size; ``unmatched``: CameraInfo stamps 20 ms off (never within 5 ms) and none for the first 3;
    ``distorted``: every CameraInfo with the issue's plumb_bob D and a P of 0.9 times the focal length."""
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
            elif variant == "distorted":
                msg.d = [float(v) for v in ISSUE_D]
                p = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
                p[0, 0] *= 0.9
                p[1, 1] *= 0.9
                msg.p = p.ravel().tolist()
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


@pytest.mark.parametrize("variant", ["plain", "size", "unmatched", "distorted"])
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
    elif variant == "distorted":  # rectified on both roads: K is P's 3x3, pixels differ from the raw ones
        from dataclasses import replace

        from selfi_ros.ros.params import NodeConfig

        raw = list(frames_from_bag(bag, input_config=replace(InputConfig.from_node_config(NodeConfig()),
                                                             rectify=False)))
        assert len(offline) == 12 and not counts
        fx = next(iter(read_messages(bag, topics=[INFO_TOPIC]))).message.k[0]
        for f, r in zip(offline, raw):
            np.testing.assert_allclose(f.K, r.K)  # K = P's 3x3 either way
            assert abs(f.K[0, 0] - 0.9 * fx) < 1e-9
            assert np.abs(f.image.astype(int) - r.image.astype(int)).mean() > 5.0
    else:
        assert counts.get("camera_info_unsynced", 0) == 12 and len(offline) == 12
        assert all(f.K is not None for f in offline)


# ------------------------------------------------------------------ time jumps, odd and corrupt frames
def test_time_jump_restarts_small_disorder_drops():
    """A stamp 10 s back (> time_jump_threshold_s = 1 s) is a time jump: a restart event precedes the frame
    and the stamp order starts again from it; 0.5 s back afterwards is a late frame (dropped)."""
    fi = FrameInput(InputConfig(time_jump_threshold_s=1.0))
    for t in (20_000, 20_100, 20_200):
        im, ci = pair(t * MS)
        fi.add_camera_info(ci, 0.0)
        assert kinds(fi.add_image(im, 0.0)) == [("frame", "synced")]
    im, ci = pair(10_200 * MS)  # 10 s back
    fi.add_camera_info(ci, 0.0)
    ev = fi.add_image(im, 0.0)
    assert kinds(ev) == [("restart", "time_jump"), ("frame", "synced")]
    assert "10.000 s" in ev[0].detail and ev[1].frame.stamp_ns == 10_200 * MS
    im, ci = pair(10_300 * MS)
    fi.add_camera_info(ci, 0.0)
    assert kinds(fi.add_image(im, 0.0)) == [("frame", "synced")]  # the new order goes on
    for t, reason in ((9_800, "stamp_out_of_order"), (10_300, "stamp_repeated")):  # 0.5 s back: a late frame
        im, ci = pair(t * MS)
        fi.add_camera_info(ci, 0.0)
        assert kinds(fi.add_image(im, 0.0)) == [("dropped", reason)]
    # exactly at the threshold: still a late frame (a jump is strictly more than the threshold)
    fi2 = FrameInput(InputConfig(time_jump_threshold_s=0.5, use_camera_info=False))
    assert kinds(fi2.add_image(pair(2_000 * MS)[0], 0.0)) == [("frame", "fixed")]
    assert kinds(fi2.add_image(pair(1_500 * MS)[0], 0.0)) == [("dropped", "stamp_out_of_order")]
    assert kinds(fi2.add_image(pair(1_499 * MS)[0], 0.0)) == [("restart", "time_jump"), ("frame", "fixed")]


def test_resolution_change_needs_n_in_a_row_and_min_size():
    """A new image size is rejected until resolution_change_frames images of it came in a row; the last
    of them starts a new map at that size (a single odd frame never does). Images smaller than
    min_image_size_px are rejected, even when their CameraInfo matches."""
    fi = FrameInput(InputConfig(use_camera_info=False, resolution_change_frames=3, min_image_size_px=20))
    t = iter(range(1, 100))
    add = lambda w, h: kinds(fi.add_image(pair(next(t) * 10 * MS, w=w, h=h)[0], 0.0))  # noqa: E731
    assert add(32, 24) == [("frame", "fixed")]
    assert add(64, 48) == [("rejected", "resolution_changed")]  # one odd frame ...
    assert add(32, 24) == [("frame", "fixed")]  # ... and back: the count starts again
    assert add(64, 48) == [("rejected", "resolution_changed")]
    assert add(64, 48) == [("rejected", "resolution_changed")]
    ev = fi.add_image(pair(next(t) * 10 * MS, w=64, h=48)[0], 0.0)
    assert kinds(ev) == [("restart", "resolution_change"), ("frame", "fixed")] and ev[1].frame.image.shape == (48, 64, 3)
    assert add(32, 24) == [("rejected", "resolution_changed")]  # the old size is now the odd one
    assert add(64, 48) == [("frame", "fixed")]
    assert add(19, 48) == [("rejected", "image_too_small")]
    fi.reset()  # ~/reset forgets the size too
    assert add(32, 24) == [("frame", "fixed")]
    one = FrameInput(InputConfig(min_image_size_px=32))
    im, _ = pair(1_000 * MS, w=1, h=1)  # a 1x1 frame that matches its (valid) CameraInfo
    ci = K_to_camera_info(np.array([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]), 1, 1, 1_000 * MS, "cam")
    assert kinds(one.add_camera_info(ci, 0.0)) == []
    ev = one.add_image(im, 0.0)
    assert kinds(ev) == [("rejected", "image_too_small")] and "1x1" in ev[0].detail


def _jpegs():
    """A clean JPEG of a smooth random image (OpenCV, quality 95) and three corruptions of it; OpenCV
    decodes the last two into an image without an error (the failure of issue 9.5)."""
    import cv2

    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur((rng.random((96, 128, 3)) * 255).astype(np.uint8), (9, 9), 3)
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    sos = data.find(b"\xff\xda")
    scan = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")  # first entropy-coded byte
    flipped = bytearray(data)
    flipped[scan + 40:scan + 50] = bytes(rng.integers(0, 255, 10, dtype=np.uint8))
    bad = {"truncated": data[: len(data) // 2], "entropy_bytes": bytes(flipped),
           "early_eoi": data[: scan + 200] + b"\xff\xd9"}
    for name in ("entropy_bytes", "early_eoi"):  # (OpenCV 5 refuses the truncated one by itself)
        dec = cv2.imdecode(np.frombuffer(bad[name], np.uint8), cv2.IMREAD_COLOR)
        assert dec is not None and dec.shape == img.shape, name  # OpenCV cannot tell
    return data, bad


def _compressed(data, stamp_ns):
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id, msg.format, msg.data = "cam", "jpeg", data
    return msg


def test_corrupt_jpeg_rejected():
    """Truncated data, corrupted entropy-coded bytes and an early end-of-image marker: rejected
    (corrupt_image) with libjpeg's message; the clean JPEG and a PNG are frames."""
    import cv2

    from selfi_ros.ros.input import jpeg_corruption

    pytest.importorskip("simplejpeg")
    data, bad = _jpegs()
    assert jpeg_corruption(data) == ""
    want = {"truncated": "Premature end", "entropy_bytes": "Corrupt JPEG data", "early_eoi": "Corrupt JPEG data"}
    for name, b in bad.items():
        assert want[name] in jpeg_corruption(b), name
    fi = FrameInput(InputConfig(use_camera_info=False))
    assert kinds(fi.add_image(_compressed(data, 1 * MS), 0.0)) == [("frame", "fixed")]
    for i, (name, b) in enumerate(bad.items()):
        ev = fi.add_image(_compressed(b, (2 + i) * MS), 0.0)
        dec = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
        want_reason = "bad_image" if dec is None else "corrupt_image"  # undecodable / decodable but corrupt
        assert kinds(ev) == [("rejected", want_reason)], (name, ev[0].detail)
    png = cv2.imencode(".png", np.zeros((24, 32, 3), np.uint8))[1].tobytes()
    assert jpeg_corruption(png) == ""


def test_corrupt_jpeg_pillow_fallback_sees_truncation_only(monkeypatch):
    """Measured: without simplejpeg, Pillow's decoder (LOAD_TRUNCATED_IMAGES off) rejects a truncated
    JPEG but decodes corrupted entropy-coded bytes without an error (its libjpeg warnings are silent)."""
    from selfi_ros.ros.input import jpeg_corruption

    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # import simplejpeg -> ImportError
    data, bad = _jpegs()
    assert jpeg_corruption(data) == ""
    assert "truncated" in jpeg_corruption(bad["truncated"])
    assert jpeg_corruption(bad["entropy_bytes"]) == ""


def test_map_restarts_split_batches_and_thinning_across_a_jump():
    """MapRestarts: frames queued after a restart event form a new part, new_map() runs once between the
    parts; a tagged frame thinned away leaves its tag to the frames after it; ~/reset absorbs a pending
    restart. ThinningQueue: gaps are absolute, so a jump back does not look like the smallest gap."""
    from types import SimpleNamespace

    from selfi_ros.ros.frame_queue import MapRestarts, ThinningQueue
    from selfi_ros.ros.input import InputEvent

    r, calls = MapRestarts(warn_s=30.0), []
    fr = [SimpleNamespace(stamp_ns=s) for s in (10, 11, 12, 0, 1)]
    for f in fr[:3]:
        r.queued(f)
    r.request(InputEvent("restart", "time_jump", "back 10 s"), now_s=100.0)
    for f in fr[3:]:
        r.queued(f)
    parts = []
    for part in r.segments(fr, lambda why: calls.append(len(parts))):
        parts.append([f.stamp_ns for f in part])
    assert parts == [[10, 11, 12], [0, 1]] and calls == [1]  # reset after the first part, before the second
    assert r.warnings(110.0) == ["new map 10 s ago after time_jump: back 10 s"] and r.warnings(130.0) == []
    r.request(InputEvent("restart", "time_jump", ""), 0.0)
    a, b = SimpleNamespace(stamp_ns=5), SimpleNamespace(stamp_ns=6)
    r.queued(a)
    r.queued(b)
    r.forget(a)  # thinned away: b still starts the new map
    assert [[f.stamp_ns for f in p] for p in r.segments([b], lambda why: calls.append(why))] == [[6]] and calls[-1] == "time_jump"
    r.request(InputEvent("restart", "resolution_change", ""), 0.0)
    d = SimpleNamespace(stamp_ns=8)
    r.queued(d)
    assert list(r.segments([d], lambda why: calls.append(why))) == [[d]] and calls[-1] == "resolution_change"
    r.request(InputEvent("restart", "time_jump", ""), 0.0)
    r.reset()  # ~/reset: the pending restart is absorbed
    c = SimpleNamespace(stamp_ns=7)
    r.queued(c)
    n = len(calls)
    assert list(r.segments([c], lambda why: calls.append("c"))) == [[c]] and len(calls) == n
    q = ThinningQueue(4)
    for f in fr[:4]:
        assert q.put(f) is None
    assert q.put(fr[4]).stamp_ns == 11  # |12 - 10| = 2 is the smallest gap; a signed gap would drop 12 (-11)

"""Message conversions (selfi_ros.ros.conversions) against independent numpy / OpenCV / scipy constructions."""
import numpy as np
import pytest

pytest.importorskip("rclpy")
import cv2  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from selfi_ros.engine.types import PoseEstimate  # noqa: E402
from selfi_ros.ros import conversions as cv  # noqa: E402

RNG = np.random.default_rng(0)
H, W = 5, 7


def _msg(encoding, raw: np.ndarray, pad=3, bigendian=False):
    """Image message built byte by byte from an (H, W[, C]) array with `pad` junk bytes per row."""
    arr = raw.astype(raw.dtype.newbyteorder(">" if bigendian else "<"))
    rows = arr.reshape(H, -1).view(np.uint8).reshape(H, -1)
    junk = np.full((H, pad), 0xAB, np.uint8)
    data = np.hstack([rows, junk]).tobytes()
    m = Image(height=H, width=W, encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1] + pad)
    m.data = data
    return m


RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1"])
def test_image_encodings(encoding, bigendian):
    alpha = RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)
    grey16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    greyf = RNG.random((H, W), dtype=np.float32)
    raw, expect = {
        "rgb8": (RGB, RGB),
        "bgr8": (RGB[:, :, [2, 1, 0]], RGB),
        "rgba8": (np.concatenate([RGB, alpha], 2), RGB),
        "bgra8": (np.concatenate([RGB[:, :, [2, 1, 0]], alpha], 2), RGB),
        "mono8": (RGB[:, :, 0], np.stack([RGB[:, :, 0]] * 3, 2)),
        "mono16": (grey16, np.stack([(grey16 // 256).astype(np.uint8)] * 3, 2)),
        "16UC1": (grey16, np.stack([(grey16 // 256).astype(np.uint8)] * 3, 2)),
        "32FC1": (greyf, np.stack([np.round(greyf * 255).astype(np.uint8)] * 3, 2)),
    }[encoding]
    msg = _msg(encoding, raw, bigendian=bigendian)
    native = cv.image_to_array(msg)
    np.testing.assert_array_equal(native, raw)
    out = cv.image_to_rgb8(msg)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expect)


def test_image_errors():
    with pytest.raises(cv.ConversionError, match="unsupported image encoding"):
        cv.image_to_rgb8(_msg("64FC1", RGB))
    m = _msg("rgb8", RGB)
    m.step = 3 * W - 1
    with pytest.raises(cv.ConversionError, match="step"):
        cv.image_to_rgb8(m)
    m = _msg("rgb8", RGB)
    m.data = bytes(m.data)[:-10]
    with pytest.raises(cv.ConversionError, match="bytes"):
        cv.image_to_rgb8(m)
    with pytest.raises(cv.ConversionError, match="empty"):
        cv.image_to_rgb8(Image(height=0, width=4, encoding="rgb8", step=12))


def test_rgb8_to_image_round_trip():
    for enc in ("rgb8", "bgr8"):
        m = cv.rgb8_to_image(RGB, 1_500_000_123, "cam", encoding=enc)
        assert cv.stamp_to_ns(m.header.stamp) == 1_500_000_123 and m.header.frame_id == "cam"
        np.testing.assert_array_equal(cv.image_to_rgb8(m), RGB)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed(fmt):
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :24] = (200, 30, 10)  # red left half (RGB)
    img[:, 24:] = (10, 40, 220)  # blue right half
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", img[:, :, ::-1])  # OpenCV wants BGR
    m = CompressedImage(format=fmt)
    m.data = buf.tobytes()
    out = cv.compressed_to_rgb8(m)
    assert out.shape == img.shape
    if fmt == "png":
        np.testing.assert_array_equal(out, img)
    else:
        assert np.abs(out[4:-4, 4:20].astype(int) - (200, 30, 10)).max() < 12
        assert np.abs(out[4:-4, 28:-4].astype(int) - (10, 40, 220)).max() < 12
    # our own encoder round trip (png lossless)
    np.testing.assert_array_equal(cv.compressed_to_rgb8(cv.rgb8_to_compressed(img, 0, "c", "png")), img)


def test_compressed_16bit_png_and_errors():
    g = RNG.integers(0, 65536, (6, 9), dtype=np.uint16)
    ok, buf = cv2.imencode(".png", g)
    m = CompressedImage(format="png")
    m.data = buf.tobytes()
    np.testing.assert_array_equal(cv.compressed_to_rgb8(m)[:, :, 1], (g >> 8).astype(np.uint8))
    bad = CompressedImage(format="jpeg")
    bad.data = b"not a jpeg at all"
    with pytest.raises(cv.ConversionError, match="decode"):
        cv.compressed_to_rgb8(bad)
    with pytest.raises(cv.ConversionError, match="compressedDepth"):
        cv.compressed_to_rgb8(CompressedImage(format="16UC1; compressedDepth png"))


def test_camera_info():
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    ci = cv.K_to_camera_info(K, 640, 480, 5, "cam")
    model = cv.camera_info_to_model(ci)
    np.testing.assert_array_equal(model.K, K)
    assert (model.width, model.height) == (640, 480)
    for bad, match in [(np.zeros(9), "fx"), ([np.nan] + [0] * 8, "NaN"),
                       ([500, 0, 320, 0, 500, 240, 0, 0, 0], "upper-triangular"),
                       ([500, 0, 900, 0, 500, 240, 0, 0, 1], "principal point")]:
        ci.k = [float(v) for v in bad]
        with pytest.raises(cv.ConversionError, match=match):
            cv.camera_info_to_model(ci)


def test_frame_from_image():
    """Image message -> Frame goes through the node's input code (selfi_ros.ros.input)."""
    from selfi_ros.ros.input import FrameInput, InputConfig

    K = np.diag([100.0, 100.0, 1.0])
    fi = FrameInput(InputConfig(use_camera_info=False, fixed_K=K))
    evs = [e for s in (39, 40, 41, 42) for e in fi.add_image(cv.rgb8_to_image(RGB, s, "opt"), 0.0)]
    f = evs[-1].frame
    assert f.stamp_ns == 42 and f.frame_id == "opt" and f.index == 3
    np.testing.assert_array_equal(f.image, RGB)
    np.testing.assert_array_equal(f.K, K)


def test_pointcloud2_round_trip_and_layout():
    pts = RNG.normal(size=(50, 3)).astype(np.float32)
    col = RNG.integers(0, 256, (50, 3), dtype=np.uint8)
    for as_u32 in (False, True):
        msg = cv.points_to_pointcloud2(pts, col, 7, "map", rgb_as_uint32=as_u32)
        assert msg.header.frame_id == "map" and msg.width == 50 and msg.point_step == 16
        assert [(f.name, f.offset) for f in msg.fields] == [("x", 0), ("y", 4), ("z", 8), ("rgb", 12)]
        # independent decode: raw bytes with plain numpy
        raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(50, 16)
        np.testing.assert_array_equal(raw[:, :12].copy().view("<f4"), pts)
        packed = raw[:, 12:16].copy().view("<u4")[:, 0]
        np.testing.assert_array_equal(packed, col[:, 0].astype(np.uint32) * 65536 + col[:, 1].astype(np.uint32) * 256 + col[:, 2])
        xyz, rgb = cv.pointcloud2_to_points(msg)
        np.testing.assert_array_equal(xyz, pts)
        np.testing.assert_array_equal(rgb, col)
    xyz, rgb = cv.pointcloud2_to_points(cv.points_to_pointcloud2(pts, None, 0, "map"))
    np.testing.assert_array_equal(xyz, pts)
    assert rgb is None
    empty = cv.points_to_pointcloud2(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), 0, "map")
    assert cv.pointcloud2_to_points(empty)[0].shape == (0, 3)


def test_pointcloud2_foreign_layout():
    """A cloud as another driver would publish it: float64 xyz, padding, big endian, 2 rows."""
    from sensor_msgs.msg import PointCloud2, PointField

    pts = RNG.normal(size=(6, 3))
    dt = np.dtype({"names": ["x", "y", "z", "rgba"], "formats": [">f8", ">f8", ">f8", ">u4"],
                   "offsets": [0, 8, 16, 28], "itemsize": 40})
    arr = np.zeros(6, dt)
    arr["x"], arr["y"], arr["z"] = pts.T
    arr["rgba"] = 0xFF102030
    msg = PointCloud2(height=2, width=3, is_bigendian=True, point_step=40, row_step=120)
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in
                  [("x", 0, 8), ("y", 8, 8), ("z", 16, 8), ("rgba", 28, 6)]]
    msg.data = arr.tobytes()
    xyz, rgb = cv.pointcloud2_to_points(msg)
    np.testing.assert_allclose(xyz, pts.astype(np.float32))
    np.testing.assert_array_equal(rgb, np.tile([0x10, 0x20, 0x30], (6, 1)))


def test_transform_and_quaternion_order():
    R = Rotation.from_euler("zyx", [30, -20, 10], degrees=True)
    T = np.eye(4)
    T[:3, :3] = R.as_matrix()
    T[:3, 3] = [1.0, -2.0, 3.5]
    ts = cv.transform_stamped(T, "map", "camera", 1_234_000_000_567)
    assert ts.header.frame_id == "map" and ts.child_frame_id == "camera"
    assert (ts.header.stamp.sec, ts.header.stamp.nanosec) == (1234, 567)
    q = R.as_quat()  # scipy: x, y, z, w
    q = q if q[3] >= 0 else -q
    np.testing.assert_allclose([ts.transform.rotation.x, ts.transform.rotation.y, ts.transform.rotation.z,
                                ts.transform.rotation.w], q, atol=1e-12)
    np.testing.assert_allclose([ts.transform.translation.x, ts.transform.translation.y,
                                ts.transform.translation.z], [1.0, -2.0, 3.5])
    np.testing.assert_allclose(cv.transform_to_matrix(ts), T, atol=1e-12)
    # 90 deg about z: (x, y, z, w) = (0, 0, sin 45, cos 45)
    Tz = np.eye(4)
    Tz[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    rz = cv.transform_stamped(Tz, "a", "b", 0).transform.rotation
    np.testing.assert_allclose([rz.x, rz.y, rz.z, rz.w], [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)
    msg = cv.tf_message([ts, cv.transform_stamped(Tz, "a", "b", 0)])
    assert [t.child_frame_id for t in msg.transforms] == ["camera", "b"]
    S = T.copy()
    S[:3, :3] *= 2.0
    with pytest.raises(cv.ConversionError, match="rotation"):
        cv.transform_stamped(S, "map", "camera", 0)


def test_pose_estimate_messages():
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.1, 0.2, -0.3]).as_matrix()
    T[:3, 3] = [0.5, 0.0, -1.0]
    pose = PoseEstimate(stamp_ns=3_000_000_001, T_map_cam=T, confidence=0.5)
    T_base_cam = np.eye(4)
    T_base_cam[:3, 3] = [0.2, 0.0, 0.1]
    ps, od = cv.pose_estimate_to_msgs(pose, "map", "base_link", T_cam_child=np.linalg.inv(T_base_cam))
    assert ps.header.frame_id == "map" and od.child_frame_id == "base_link"
    assert cv.stamp_to_ns(od.header.stamp) == 3_000_000_001
    T_map_base = cv.pose_to_matrix(od.pose.pose)
    np.testing.assert_allclose(T_map_base @ T_base_cam, T, atol=1e-12)
    np.testing.assert_allclose(cv.pose_to_matrix(ps.pose), T_map_base, atol=1e-12)
    cov = np.array(od.pose.covariance).reshape(6, 6)
    assert cov[0, 0] == pytest.approx((0.05 / 0.5) ** 2) and cov[5, 5] == pytest.approx((0.02 / 0.5) ** 2)
    assert od.twist.covariance[0] == -1.0
    sample = cv.odometry_to_sample(od)
    np.testing.assert_allclose(sample.T_odom_base, T_map_base, atol=1e-12)

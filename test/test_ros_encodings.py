"""Camera encodings converted with OpenCV (selfi_ros.ros.conversions.image_to_rgb8): packed and planar YUV,
Bayer mosaics, 16-bit colour. Every message is built byte by byte here from planes whose colours are known,
and the decoded RGB is compared with values computed independently (the BT.601 formulas, the mosaic's own
samples), never with another call of the code under test."""
import numpy as np
import pytest

pytest.importorskip("rclpy")
from sensor_msgs.msg import Image  # noqa: E402

from selfi_ros.ros import conversions as cv  # noqa: E402
from selfi_ros.ros.conversions import K_to_camera_info  # noqa: E402
from selfi_ros.ros.input import FrameInput, InputConfig  # noqa: E402

RNG = np.random.default_rng(9)
PAD = 5  # junk bytes at the end of every row (step > row bytes)
YUV_TOL = 2  # levels: OpenCV's fixed-point BT.601 against the float formulas
# BT.601 limited-range (Y 16-235, chroma 16-240) codes of known colours, rounded to integers
KNOWN_YUV = {  # name: ((Y, U, V), RGB)
    "red": ((81, 90, 240), (255, 0, 0)),
    "green": ((145, 54, 34), (0, 255, 0)),
    "blue": ((41, 240, 110), (0, 0, 255)),
    "white": ((235, 128, 128), (255, 255, 255)),
    "black": ((16, 128, 128), (0, 0, 0)),
    "grey": ((126, 128, 128), (128, 128, 128)),
}


def _image(encoding, rows: np.ndarray, height, width, pad=PAD, bigendian=False):
    """Image message whose data are `rows` ((n_rows, row_bytes) uint8) each followed by `pad` junk bytes."""
    junk = np.full((rows.shape[0], pad), 0xAB, np.uint8)
    m = Image(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian),
              step=rows.shape[1] + pad)
    m.data = np.hstack([rows, junk]).tobytes()
    return m


def _bt601_rgb(Y, U, V):
    """Float BT.601 limited-range YUV -> RGB (ITU-R BT.601; the usual 1.164 / 1.596 / 0.813 / 0.391 / 2.018)."""
    y, u, v = (np.asarray(a, np.float64) for a in (Y, U, V))
    c = 1.164 * (y - 16)
    rgb = np.stack([c + 1.596 * (v - 128), c - 0.813 * (v - 128) - 0.391 * (u - 128), c + 2.018 * (u - 128)], -1)
    return np.clip(rgb, 0, 255)


def _yuv_message(encoding, Y, U, V):
    """Message in `encoding` from full-resolution Y (H, W) and chroma U, V at the encoding's resolution
    ((H, W/2) for 4:2:2, (H/2, W/2) for 4:2:0)."""
    h, w = Y.shape
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        quad = (np.stack([U, Y[:, 0::2], V, Y[:, 1::2]], -1) if encoding in ("yuv422", "uyvy")
                else np.stack([Y[:, 0::2], U, Y[:, 1::2], V], -1))  # UYVY: U Y0 V Y1, YUYV: Y0 U Y1 V
        return _image(encoding, quad.reshape(h, 2 * w).astype(np.uint8), h, w)
    first, second = (V, U) if encoding == "nv21" else (U, V)  # nv21: V first in the chroma plane
    chroma = np.stack([first, second], -1).reshape(h // 2, w)
    return _image(encoding, np.vstack([Y, chroma]).astype(np.uint8), h, w)


def _upsample(U, V, h, w):
    """Chroma at full resolution (each sample shared by its 2 or 2x2 pixels)."""
    ry, rx = h // U.shape[0], w // U.shape[1]
    return (np.repeat(np.repeat(U, ry, 0), rx, 1), np.repeat(np.repeat(V, ry, 0), rx, 1))


YUV_ENCODINGS = ["yuv422", "uyvy", "yuv422_yuy2", "yuyv", "nv21", "nv12"]


def _chroma_shape(encoding, h, w):
    return (h // 2, w // 2) if encoding in ("nv21", "nv12") else (h, w // 2)


@pytest.mark.parametrize("encoding", YUV_ENCODINGS)
def test_yuv_known_colours(encoding):
    """Flat patches of known colours (2x2-aligned) decode to those colours within 3 levels (the codes are
    rounded to integers)."""
    names = list(KNOWN_YUV)
    h, w = 4, 2 * len(names)  # one 2-pixel-wide column per colour, 4 rows
    ch, cw = _chroma_shape(encoding, h, w)
    Y = np.zeros((h, w), np.uint8)
    U, V = np.zeros((ch, cw), np.uint8), np.zeros((ch, cw), np.uint8)
    for i, name in enumerate(names):
        (y, u, v), _ = KNOWN_YUV[name]
        Y[:, 2 * i:2 * i + 2] = y
        U[:, i], V[:, i] = u, v
    out = cv.image_to_rgb8(_yuv_message(encoding, Y, U, V))
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    for i, name in enumerate(names):
        want = np.array(KNOWN_YUV[name][1])
        err = np.abs(out[:, 2 * i:2 * i + 2].astype(int) - want).max()
        assert err <= 3, f"{encoding} {name}: {out[0, 2 * i]} vs {want}"


@pytest.mark.parametrize("encoding", YUV_ENCODINGS)
def test_yuv_random_against_bt601(encoding):
    """Random Y per pixel and random chroma per 2 (4:2:2) or 2x2 (4:2:0) pixels: every pixel within
    YUV_TOL of the float BT.601 formulas (a swapped U/V, Y order or chroma plane would be off by far more)."""
    h, w = 6, 10
    ch, cw = _chroma_shape(encoding, h, w)
    Y = RNG.integers(16, 236, (h, w), dtype=np.uint8)
    U = RNG.integers(16, 241, (ch, cw), dtype=np.uint8)
    V = RNG.integers(16, 241, (ch, cw), dtype=np.uint8)
    out = cv.image_to_rgb8(_yuv_message(encoding, Y, U, V))
    want = _bt601_rgb(Y, *_upsample(U, V, h, w))
    err = np.abs(out.astype(np.float64) - want)
    assert err.max() <= YUV_TOL, f"{encoding}: max error {err.max():.2f} levels"


BAYER = ["rggb", "bggr", "gbrg", "grbg"]
CHANNEL = {"r": 0, "g": 1, "b": 2}


def _mosaic(pattern, rgb_image):
    """(H, W) Bayer mosaic of an (H, W, 3) image: pixel (y, x) keeps the channel that `pattern` (the 2x2
    tile at the top-left corner, row by row) names for (y % 2, x % 2)."""
    h, w, _ = rgb_image.shape
    m = np.zeros((h, w), rgb_image.dtype)
    for dy in range(2):
        for dx in range(2):
            m[dy::2, dx::2] = rgb_image[dy::2, dx::2, CHANNEL[pattern[2 * dy + dx]]]
    return m


@pytest.mark.parametrize("size", [(8, 10), (7, 9)])  # even and odd
@pytest.mark.parametrize("pattern", BAYER)
def test_bayer8_flat_colours(pattern, size):
    """A flat colour demosaics to itself at every pixel (bilinear interpolation of constants); with
    (200, 100, 50) every wrong pattern mapping gives another colour."""
    h, w = size
    for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 100, 50), (128, 128, 128)]:
        img = np.broadcast_to(np.array(colour, np.uint8), (h, w, 3))
        m = _mosaic(pattern, img)
        out = cv.image_to_rgb8(_image(f"bayer_{pattern}8", m, h, w))
        assert out.shape == (h, w, 3)
        np.testing.assert_array_equal(out, img, err_msg=f"{pattern} {colour}")


@pytest.mark.parametrize("pattern", BAYER)
def test_bayer8_keeps_native_samples(pattern):
    """On a random mosaic each interior pixel keeps its own sample in the channel the pattern names."""
    h, w = 12, 14
    m = RNG.integers(0, 256, (h, w), dtype=np.uint8)
    out = cv.image_to_rgb8(_image(f"bayer_{pattern}8", m, h, w))
    for dy in range(2):
        for dx in range(2):
            c = CHANNEL[pattern[2 * dy + dx]]
            got = out[dy::2, dx::2, c][1:-1, 1:-1]
            np.testing.assert_array_equal(got, m[dy::2, dx::2][1:-1, 1:-1], err_msg=f"{pattern} site {dy},{dx}")


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pattern", BAYER)
def test_bayer16_flat_colour_scaled(pattern, bigendian):
    """16-bit mosaic of the flat colour c * 256 + 77: RGB c (demosaiced, then >> 8), in either byte order."""
    h, w = 8, 10
    colour = np.array([200, 100, 50], np.uint16)
    img = np.broadcast_to(colour * 256 + 77, (h, w, 3)).astype(np.uint16)
    m = _mosaic(pattern, img).astype(">u2" if bigendian else "<u2")
    msg = _image(f"bayer_{pattern}16", m.view(np.uint8).reshape(h, 2 * w), h, w, bigendian=bigendian)
    np.testing.assert_array_equal(cv.image_to_rgb8(msg), np.broadcast_to(colour.astype(np.uint8), (h, w, 3)))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["rgb16", "bgr16", "rgba16", "bgra16"])
def test_colour16(encoding, bigendian):
    """16-bit colour: the high byte of each channel (>> 8, as cv_bridge), channels reordered, alpha dropped."""
    h, w = 5, 7
    rgb16 = RNG.integers(0, 65536, (h, w, 3), dtype=np.uint16)
    alpha = RNG.integers(0, 65536, (h, w, 1), dtype=np.uint16)
    planes = rgb16 if encoding.startswith("rgb") else rgb16[:, :, ::-1]
    if encoding in ("rgba16", "bgra16"):
        planes = np.concatenate([planes, alpha], 2)
    raw = np.ascontiguousarray(planes).astype(">u2" if bigendian else "<u2")
    msg = _image(encoding, raw.view(np.uint8).reshape(h, -1), h, w, bigendian=bigendian)
    np.testing.assert_array_equal(cv.image_to_rgb8(msg), (rgb16 // 256).astype(np.uint8))


def _err(msg, match):
    with pytest.raises(cv.ConversionError, match=match):
        cv.image_to_rgb8(msg)


def test_bad_sizes_are_conversion_errors():
    """Odd sizes, a too-short step and truncated data give a ConversionError, never an OpenCV crash."""
    Y = np.full((4, 6), 100, np.uint8)
    U = V = np.full((4, 3), 128, np.uint8)
    for enc in ("yuv422", "yuv422_yuy2"):
        good = _yuv_message(enc, Y, U, V)
        odd = _image(enc, np.zeros((4, 14), np.uint8), 4, 7)  # width 7: half a pixel pair
        _err(odd, "odd")
        short = _yuv_message(enc, Y, U, V)
        short.step = 2 * 6 - 1
        _err(short, "step")
        cut = _yuv_message(enc, Y, U, V)
        cut.data = bytes(cut.data)[:-PAD - 1]
        _err(cut, "bytes")
        assert cv.image_to_rgb8(good).shape == (4, 6, 3)
    for enc in ("nv21", "nv12"):
        good = _yuv_message(enc, Y, U[:2], V[:2])
        assert cv.image_to_rgb8(good).shape == (4, 6, 3)
        _err(_image(enc, np.zeros((4, 7), np.uint8), 3, 7), "odd")  # 7x3
        _err(_image(enc, np.zeros((7, 6), np.uint8), 6, 6), "bytes")  # 6 rows of Y, 1 of the 3 chroma rows
        short = _yuv_message(enc, Y, U[:2], V[:2])
        short.step = 5
        _err(short, "step")
    _err(_image("bayer_rggb8", np.zeros((1, 8), np.uint8), 1, 8), "2x2")
    cut = _image("bayer_rggb8", np.zeros((4, 6), np.uint8), 4, 6)
    cut.data = bytes(cut.data)[:20]
    _err(cut, "bytes")
    short = _image("rgb16", np.zeros((4, 18), np.uint8), 4, 6, pad=0)
    short.step = 3 * 6  # 8-bit row length for a 16-bit image
    _err(short, "step")
    _err(_image("yuv444", np.zeros((4, 18), np.uint8), 4, 6), "unsupported image encoding")


K = np.array([[50.0, 0, 5], [0, 50.0, 3], [0, 0, 1]])


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2", "nv21", "bayer_grbg8", "rgb16", "bgr16"])
def test_node_input_accepts(encoding):
    """The node's input code (FrameInput) accepts the new encodings as frames of the message's width x
    height (nv21's 3/2 rows are not mistaken for the image size), paired with a CameraInfo of that size."""
    h, w = 6, 10
    if encoding.startswith("yuv") or encoding.startswith("nv"):
        ch, cw = _chroma_shape(encoding, h, w)
        msg = _yuv_message(encoding, np.full((h, w), 126, np.uint8), np.full((ch, cw), 128, np.uint8),
                           np.full((ch, cw), 128, np.uint8))
        want = 128
    elif encoding.startswith("bayer"):
        msg = _image(encoding, np.full((h, w), 128, np.uint8), h, w)
        want = 128
    else:
        msg = _image(encoding, np.full((h, 3 * w), 0x8005, "<u2").view(np.uint8).reshape(h, -1), h, w)
        want = 0x80
    stamp = 1_000_000_000
    msg.header.stamp = cv.ns_to_stamp(stamp)
    msg.header.frame_id = "cam"
    fi = FrameInput(InputConfig())
    assert fi.add_camera_info(K_to_camera_info(K, w, h, stamp, "cam"), 0.0) == []
    ev = fi.add_image(msg, 0.01)
    assert [(e.kind, e.reason) for e in ev] == [("frame", "synced")], [e.detail for e in ev]
    img = ev[0].frame.image
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert np.abs(img.astype(int) - want).max() <= YUV_TOL


def _encoded_pair(encoding, stamp_ns, h=48, w=64):
    """(Image in `encoding`, matching CameraInfo) of a textured scene, for the node test."""
    rng = np.random.default_rng(stamp_ns % 1000)
    if encoding in YUV_ENCODINGS:
        ch, cw = _chroma_shape(encoding, h, w)
        msg = _yuv_message(encoding, rng.integers(16, 236, (h, w), dtype=np.uint8),
                           rng.integers(16, 241, (ch, cw), dtype=np.uint8),
                           rng.integers(16, 241, (ch, cw), dtype=np.uint8))
    elif encoding.startswith("bayer"):
        msg = _image(encoding, _mosaic(encoding[6:10], rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), h, w)
    else:
        raw = rng.integers(0, 65536, (h, 3 * w), dtype=np.uint16).astype("<u2")
        msg = _image(encoding, raw.view(np.uint8).reshape(h, -1), h, w)
    msg.header.stamp = cv.ns_to_stamp(stamp_ns)
    msg.header.frame_id = "cam_optical"
    Kn = np.array([[0.8 * w, 0, w / 2], [0, 0.8 * w, h / 2], [0, 0, 1.0]])
    return msg, K_to_camera_info(Kn, w, h, stamp_ns, "cam_optical")


NODE_ENCODINGS = ["yuv422", "yuv422_yuy2", "nv21", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
                  "rgb16", "bgr16"]


def test_node_over_dds_accepts_new_encodings(tmp_path):
    """selfi_node in its own process takes a frame of every encoding of issue 9 item 6 (none rejected) and
    builds windows from them."""
    pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_interfaces.sh)")
    status_mod = pytest.importorskip("selfi_ros.msg", reason="selfi_ros interfaces not built")
    from sensor_msgs.msg import CameraInfo
    from selfi_ros_testing import FAST_ENGINE_PARAMS, NodeProcess, RosClient, free_domain_id

    d = free_domain_id()
    node = NodeProcess(d, {"backend": "selfi_ros_testing:LineBackend", **FAST_ENGINE_PARAMS},
                       str(tmp_path / "node.log"))
    c = RosClient(d)
    try:
        c.record(status_mod.SelfiStatus, "/selfi_node/status")
        pi = c.publisher(Image, "/camera/image_raw")
        pc = c.publisher(CameraInfo, "/camera/camera_info")
        assert c.wait_subscribers(pi, node=node) and c.wait_subscribers(pc, node=node), node.log()[-2000:]
        c.wait_for(lambda: False, 0.5)
        stamp = 2_000_000_000_000
        for enc in NODE_ENCODINGS:
            im, ci = _encoded_pair(enc, stamp)
            pc.publish(ci)
            pi.publish(im)
            stamp += 100_000_000
            c.wait_for(lambda: False, 0.2)

        def last():
            s = c.get("/selfi_node/status")
            return s[-1] if s else None

        n = len(NODE_ENCODINGS)
        ok = c.wait_for(lambda: last() is not None and last().frames_in >= n and last().queue_depth == 0
                        and last().keyframes + last().frames_dropped + last().frames_rejected >= n, 15, node)
        st = last()
        assert ok, f"{st}\n{node.log()[-3000:]}"
        assert st.frames_in == n and st.frames_rejected == 0, f"{st}\n{node.log()[-3000:]}"
        assert st.keyframes >= n - st.frames_dropped and st.windows >= 1, st
        assert "bad_image" not in node.log() and node.alive()
    finally:
        c.close()
        node.stop()

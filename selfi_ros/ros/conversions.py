"""Conversions between ROS 2 messages and the engine's numpy types (sensor_msgs, geometry_msgs, nav_msgs,
tf2_msgs). Images and CameraInfo are converted here (messages become engine frames in
:mod:`selfi_ros.ros.input`), the geometry messages (PointCloud2, TF, poses, odometry) in
:mod:`selfi_ros.ros.spatial` and the stamps in :mod:`selfi_ros.ros.stamps`, both re-exported here so that
callers import one module.

Conventions: see :mod:`selfi_ros.geometry` (``T_a_b`` maps frame b into frame a, quaternions x,y,z,w,
camera frames REP-103 optical). Stamps are integer nanoseconds.

Images and point clouds are converted with numpy (exact, and tested against independent constructions):
``cv_bridge`` for ROS 2 is not on PyPI and the PyPI ``cv-bridge`` is the ROS 1 one (wrong for 16UC1), and
``sensor_msgs_py`` is not on PyPI either; the numpy paths below give the same results on a robot.
Compressed images are decoded with OpenCV (``cv2.imdecode``), YUV and Bayer encodings converted with
``cv2.cvtColor``.
"""
from __future__ import annotations

import numpy as np

from selfi_ros.data.camera_model import CameraModel, CameraModelError, Roi
from selfi_ros.ros.spatial import (
    odometry, odometry_to_sample, pack_rgb, pointcloud2_to_array, pointcloud2_to_points, points_to_pointcloud2,
    pose_covariance, pose_estimate_to_msgs, pose_stamped, pose_to_matrix, tf_message, transform_stamped,
    transform_to_matrix, unpack_rgb)
from selfi_ros.ros.stamps import ConversionError, bytes_view, ns_to_stamp, stamp_to_ns

__all__ = [  # this module's own names and the re-exported ones
    "ConversionError", "stamp_to_ns", "ns_to_stamp", "bytes_view", "IMAGE_ENCODINGS", "image_to_array",
    "image_to_rgb8", "compressed_to_rgb8", "rgb8_to_image", "rgb8_to_compressed", "CameraModel",
    "camera_info_to_model", "camera_model_to_camera_info", "K_to_camera_info",
    "odometry", "odometry_to_sample", "pack_rgb", "pointcloud2_to_array", "pointcloud2_to_points",
    "points_to_pointcloud2", "pose_covariance", "pose_estimate_to_msgs", "pose_stamped", "pose_to_matrix",
    "tf_message", "transform_stamped", "transform_to_matrix", "unpack_rgb"]


# ------------------------------------------------------------------------------------------- images

#: encoding -> (channels, numpy dtype, layout of the channels). ``channels`` x itemsize is the bytes per
#: pixel of a row (``step`` is checked against it); for ``nv21`` / ``nv12`` it is the Y plane's, the message
#: then holds ``height * 3 / 2`` rows of ``step`` bytes (Y plane, then the interleaved chroma plane at half
#: resolution). Names as in ``sensor_msgs/image_encodings.hpp`` (ROS 2): ``yuv422`` is UYVY and
#: ``yuv422_yuy2`` is YUYV (``uyvy`` / ``yuyv`` are their newer aliases); ``bayer_<pattern>`` gives the colours
#: of the 2x2 tile at the top-left corner, row by row.
IMAGE_ENCODINGS: dict[str, tuple[int, str, str]] = {
    "rgb8": (3, "u1", "rgb"),
    "bgr8": (3, "u1", "bgr"),
    "rgba8": (4, "u1", "rgba"),
    "bgra8": (4, "u1", "bgra"),
    "rgb16": (3, "u2", "rgb"),
    "bgr16": (3, "u2", "bgr"),
    "rgba16": (4, "u2", "rgba"),
    "bgra16": (4, "u2", "bgra"),
    "mono8": (1, "u1", "mono"),
    "8UC1": (1, "u1", "mono"),
    "8UC3": (3, "u1", "bgr"),  # OpenCV convention for untyped 3-channel images
    "mono16": (1, "u2", "mono"),
    "16UC1": (1, "u2", "mono"),
    "32FC1": (1, "f4", "mono"),
    "yuv422": (2, "u1", "uyvy"),
    "uyvy": (2, "u1", "uyvy"),
    "yuv422_yuy2": (2, "u1", "yuyv"),
    "yuyv": (2, "u1", "yuyv"),
    "nv21": (1, "u1", "nv21"),
    "nv12": (1, "u1", "nv12"),
    "bayer_rggb8": (1, "u1", "bayer_rggb"),
    "bayer_bggr8": (1, "u1", "bayer_bggr"),
    "bayer_gbrg8": (1, "u1", "bayer_gbrg"),
    "bayer_grbg8": (1, "u1", "bayer_grbg"),
    "bayer_rggb16": (1, "u2", "bayer_rggb"),
    "bayer_bggr16": (1, "u2", "bayer_bggr"),
    "bayer_gbrg16": (1, "u2", "bayer_gbrg"),
    "bayer_grbg16": (1, "u2", "bayer_grbg"),
}

#: layout -> OpenCV ``cvtColor`` code to RGB, resolved lazily (cv2 is imported only when needed). OpenCV
#: names a Bayer pattern by the second row's second and third pixels, i.e. shifted by one pixel diagonally
#: from the ROS name (ROS ``rggb`` is OpenCV ``BayerBG``); checked in test/test_ros_encodings.py with mosaics
#: of known colours.
_CV_CODES: dict[str, str] = {
    "uyvy": "COLOR_YUV2RGB_UYVY",
    "yuyv": "COLOR_YUV2RGB_YUY2",
    "nv21": "COLOR_YUV2RGB_NV21",
    "nv12": "COLOR_YUV2RGB_NV12",
    "bayer_rggb": "COLOR_BayerBG2RGB",
    "bayer_bggr": "COLOR_BayerRG2RGB",
    "bayer_gbrg": "COLOR_BayerGR2RGB",
    "bayer_grbg": "COLOR_BayerGB2RGB",
}


def image_to_array(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> numpy array in the message's own encoding, honouring ``step`` (row
    padding) and ``is_bigendian``.

    Returns:
        (H, W) for 1-channel encodings or (H, W, C) otherwise; dtype uint8, uint16 or float32 (native
        byte order), a copy independent of ``msg.data``. Packed YUV 4:2:2 (``yuv422``, ``yuv422_yuy2``,
        ``uyvy``, ``yuyv``) is (H, W, 2) uint8 in its byte order (e.g. U Y0 | V Y1 for UYVY); ``nv21`` /
        ``nv12`` is (H * 3 / 2, W) uint8 (the Y plane, then the interleaved V/U or U/V plane); Bayer
        encodings are the raw (H, W) mosaic.

    Raises:
        ConversionError: unknown encoding, zero size, ``step < width * bytes_per_pixel``,
            ``len(data) < rows * step`` (rows = ``height``, or ``height * 3 / 2`` for nv21/nv12), an odd width
            for YUV 4:2:2 or an odd width/height for nv21/nv12 (chroma is shared by 2 or 2x2 pixels), or a
            Bayer mosaic smaller than one 2x2 tile.
    """
    enc = msg.encoding
    if enc not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding {enc!r}; supported: {sorted(IMAGE_ENCODINGS)}")
    ch, kind, layout = IMAGE_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise ConversionError(f"empty image: height={h} width={w}")
    if layout in ("uyvy", "yuyv") and w % 2:
        raise ConversionError(f"{enc} image width {w} is odd (YUV 4:2:2 shares chroma between pixel pairs)")
    if layout in ("nv21", "nv12") and (w % 2 or h % 2):
        raise ConversionError(f"{enc} image size {w}x{h} is odd (4:2:0 chroma is shared by 2x2 pixels)")
    if layout.startswith("bayer_") and (w < 2 or h < 2):
        raise ConversionError(f"{enc} image size {w}x{h} is smaller than one 2x2 Bayer tile")
    dt = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = w * ch * dt.itemsize
    if step < row_bytes:
        raise ConversionError(f"image step {step} < width {w} x {ch} channels x {dt.itemsize} bytes = {row_bytes}")
    n_rows = h + h // 2 if layout in ("nv21", "nv12") else h
    buf = bytes_view(msg.data)
    if buf.size < n_rows * step:
        what = f"{h} x 3/2 rows" if n_rows != h else f"height {h}"
        raise ConversionError(f"image data has {buf.size} bytes, expected {what} x step {step} = {n_rows * step}")
    rows = buf[: n_rows * step].reshape(n_rows, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dt).reshape((n_rows, w) if ch == 1 else (n_rows, w, ch))
    return arr.astype(dt.newbyteorder("="), copy=True)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """uint8 unchanged; uint16 -> >> 8 (full 16-bit range to 8 bits); float -> [0, 1] intensity x 255,
    NaN/inf -> 0."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    a = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


def image_to_rgb8(msg) -> np.ndarray:
    """``sensor_msgs/Image`` (any of :data:`IMAGE_ENCODINGS`) -> (H, W, 3) uint8 RGB.

    Rules: bgr/bgra reordered to RGB, alpha dropped; mono replicated to 3 channels; 16-bit
    (mono16, 16UC1, rgb16, bgr16, rgba16, bgra16) scaled by 1/256 (``>> 8``, as ``cv_bridge`` does);
    32FC1 read as intensity in [0, 1] (clipped, NaN -> 0). YUV (``yuv422`` = UYVY, ``yuv422_yuy2`` = YUYV,
    ``nv21``, ``nv12``) is converted with OpenCV's ``cvtColor`` (``COLOR_YUV2RGB_UYVY`` / ``_YUY2`` /
    ``_NV21`` / ``_NV12``: ITU-R BT.601, limited "video" range Y 16-235, chroma 16-240, e.g.
    R = 1.164 (Y - 16) + 1.596 (V - 128)); Bayer mosaics are demosaiced with OpenCV's bilinear
    ``COLOR_Bayer*2RGB`` (16-bit mosaics demosaiced at 16 bit, then ``>> 8``). Sources: OpenCV
    ``imgproc/src/color_yuv.simd.hpp`` and ``demosaicing.cpp``; ROS ``sensor_msgs/image_encodings.hpp``
    for the names.

    Raises:
        ConversionError: see :func:`image_to_array`; also when OpenCV refuses the conversion.
    """
    arr = image_to_array(msg)
    layout = IMAGE_ENCODINGS[msg.encoding][2]
    if layout in _CV_CODES:
        import cv2

        try:
            arr = cv2.cvtColor(arr, getattr(cv2, _CV_CODES[layout]))
        except cv2.error as e:
            raise ConversionError(f"OpenCV could not convert {msg.encoding} {arr.shape}: {e}") from e
        return np.ascontiguousarray(_to_uint8(arr))
    arr = _to_uint8(arr)
    if layout == "mono":
        return np.repeat(arr[:, :, None], 3, axis=2)
    if layout in ("bgr", "bgra"):
        return np.ascontiguousarray(arr[:, :, 2::-1])
    return np.ascontiguousarray(arr[:, :, :3])


def compressed_to_rgb8(msg) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg or png, as published by image_transport ``compressed``) ->
    (H, W, 3) uint8 RGB, decoded with OpenCV. 16-bit PNGs are scaled by 1/256, grey is replicated.

    Raises:
        ConversionError: ``compressedDepth`` or another unsupported format, or undecodable data.
    """
    import cv2

    fmt = (msg.format or "").lower()
    if "compresseddepth" in fmt:
        raise ConversionError(f"unsupported CompressedImage format {msg.format!r} (compressedDepth)")
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ConversionError(f"unsupported CompressedImage format {msg.format!r}; expected jpeg or png")
    data = bytes_view(msg.data)
    if data.size == 0:
        raise ConversionError("empty CompressedImage data")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ConversionError(f"could not decode CompressedImage ({msg.format!r}, {data.size} bytes)")
    img = _to_uint8(img)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, 2::-1] if img.shape[2] >= 3 else np.repeat(img[:, :, :1], 3, axis=2))


def rgb8_to_image(rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = "rgb8"):
    """(H, W, 3) uint8 RGB -> ``sensor_msgs/Image`` in ``rgb8``, ``bgr8`` or ``mono8`` (for publishers,
    bags and tests)."""
    from sensor_msgs.msg import Image

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ConversionError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if encoding == "rgb8":
        arr = rgb
    elif encoding == "bgr8":
        arr = rgb[:, :, ::-1]
    elif encoding == "mono8":
        arr = np.rint(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    else:
        raise ConversionError(f"rgb8_to_image: unsupported encoding {encoding!r}")
    arr = np.ascontiguousarray(arr)
    msg = Image()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.strides[0])
    msg.data = arr.tobytes()
    return msg


def rgb8_to_compressed(rgb: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = "jpeg", quality: int = 90):
    """(H, W, 3) uint8 RGB -> ``sensor_msgs/CompressedImage`` (``jpeg`` or ``png``) with OpenCV."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt)
    if ext is None:
        raise ConversionError(f"unsupported compression {fmt!r}; expected jpeg or png")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ConversionError("cv2.imencode failed")
    msg = CompressedImage()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.format = "jpeg" if ext == ".jpg" else "png"
    msg.data = buf.tobytes()
    return msg


def camera_info_to_model(msg) -> CameraModel:
    """``sensor_msgs/CameraInfo`` -> :class:`~selfi_ros.data.camera_model.CameraModel` (K, D, R, P,
    ``distortion_model``, binning and ROI of the message; R / P left all zero by a driver become I / [K | 0]),
    validated. An unknown distortion model is kept (its :class:`~selfi_ros.data.camera_model.Rectifier`
    refuses it).

    Raises:
        ConversionError: non-finite K, fx or fy <= 0 (``K[0] == 0`` marks an uncalibrated camera),
            ``K[8] != 1``, principal point outside the image, a negative/huge size, a D length the model
            does not have, R not a rotation, P not a projection, an ROI outside the image.
    """
    r = msg.roi
    try:
        return CameraModel(width=int(msg.width), height=int(msg.height), distortion_model=str(msg.distortion_model),
                           K=np.asarray(msg.k, dtype=np.float64), D=np.asarray(msg.d, dtype=np.float64),
                           R=np.asarray(msg.r, dtype=np.float64), P=np.asarray(msg.p, dtype=np.float64),
                           binning_x=int(msg.binning_x), binning_y=int(msg.binning_y),
                           roi=Roi(int(r.x_offset), int(r.y_offset), int(r.width), int(r.height), bool(r.do_rectify)))
    except CameraModelError as e:
        raise ConversionError(f"CameraInfo {e}") from None


def camera_model_to_camera_info(model: CameraModel, stamp_ns: int, frame_id: str):
    """:class:`~selfi_ros.data.camera_model.CameraModel` -> ``sensor_msgs/CameraInfo`` (every field: size,
    distortion model, D, K, R, P, binning, ROI); :func:`camera_info_to_model` reads it back equal."""
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.width, msg.height = model.width, model.height
    msg.distortion_model = model.distortion_model
    msg.d = [float(v) for v in model.D]
    msg.k = model.K.ravel().tolist()
    msg.r = model.R.ravel().tolist()
    msg.p = model.P.ravel().tolist()
    msg.binning_x, msg.binning_y = model.binning_x, model.binning_y
    r = model.roi
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = r.x_offset, r.y_offset, r.width, r.height
    msg.roi.do_rectify = bool(r.do_rectify)
    return msg


def K_to_camera_info(K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str):
    """(3, 3) K -> ``sensor_msgs/CameraInfo`` (plumb_bob, zero distortion, P = [K | 0], R = I)."""
    from sensor_msgs.msg import CameraInfo

    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    msg = CameraInfo()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = K.ravel().tolist()
    msg.r = np.eye(3).ravel().tolist()
    msg.p = np.hstack([K, np.zeros((3, 1))]).ravel().tolist()
    return msg

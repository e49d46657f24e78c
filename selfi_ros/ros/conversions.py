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
Compressed images are decoded with OpenCV (``cv2.imdecode``).
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from selfi_ros.ros.spatial import (
    odometry, odometry_to_sample, pack_rgb, pointcloud2_to_array, pointcloud2_to_points, points_to_pointcloud2,
    pose_covariance, pose_estimate_to_msgs, pose_stamped, pose_to_matrix, tf_message, transform_stamped,
    transform_to_matrix, unpack_rgb)
from selfi_ros.ros.stamps import ConversionError, bytes_view, ns_to_stamp, stamp_to_ns

__all__ = [  # this module's own names and the re-exported ones
    "ConversionError", "stamp_to_ns", "ns_to_stamp", "bytes_view", "IMAGE_ENCODINGS", "image_to_array",
    "image_to_rgb8", "compressed_to_rgb8", "rgb8_to_image", "rgb8_to_compressed", "CameraModel",
    "camera_info_to_model", "K_to_camera_info",
    "odometry", "odometry_to_sample", "pack_rgb", "pointcloud2_to_array", "pointcloud2_to_points",
    "points_to_pointcloud2", "pose_covariance", "pose_estimate_to_msgs", "pose_stamped", "pose_to_matrix",
    "tf_message", "transform_stamped", "transform_to_matrix", "unpack_rgb"]


# ------------------------------------------------------------------------------------------- images

#: encoding -> (channels, numpy dtype, layout of the channels)
IMAGE_ENCODINGS: dict[str, tuple[int, str, str]] = {
    "rgb8": (3, "u1", "rgb"),
    "bgr8": (3, "u1", "bgr"),
    "rgba8": (4, "u1", "rgba"),
    "bgra8": (4, "u1", "bgra"),
    "mono8": (1, "u1", "mono"),
    "8UC1": (1, "u1", "mono"),
    "8UC3": (3, "u1", "bgr"),  # OpenCV convention for untyped 3-channel images
    "mono16": (1, "u2", "mono"),
    "16UC1": (1, "u2", "mono"),
    "32FC1": (1, "f4", "mono"),
}


def image_to_array(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> numpy array in the message's own encoding, honouring ``step`` (row
    padding) and ``is_bigendian``.

    Returns:
        (H, W) for 1-channel encodings or (H, W, C) otherwise; dtype uint8, uint16 or float32 (native
        byte order), a copy independent of ``msg.data``.

    Raises:
        ConversionError: unknown encoding, zero size, ``step < width * bytes_per_pixel`` or
            ``len(data) < height * step``.
    """
    enc = msg.encoding
    if enc not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding {enc!r}; supported: {sorted(IMAGE_ENCODINGS)}")
    ch, kind, _ = IMAGE_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise ConversionError(f"empty image: height={h} width={w}")
    dt = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = w * ch * dt.itemsize
    if step < row_bytes:
        raise ConversionError(f"image step {step} < width {w} x {ch} channels x {dt.itemsize} bytes = {row_bytes}")
    buf = bytes_view(msg.data)
    if buf.size < h * step:
        raise ConversionError(f"image data has {buf.size} bytes, expected height {h} x step {step} = {h * step}")
    rows = buf[: h * step].reshape(h, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dt).reshape((h, w) if ch == 1 else (h, w, ch))
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
    (mono16, 16UC1) scaled by 1/256 (``>> 8``); 32FC1 read as intensity in [0, 1] (clipped, NaN -> 0).

    Raises:
        ConversionError: see :func:`image_to_array`.
    """
    arr = image_to_array(msg)
    layout = IMAGE_ENCODINGS[msg.encoding][2]
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


@dataclass
class CameraModel:
    """Intrinsics from a ``sensor_msgs/CameraInfo``.

    Attributes:
        K: (3, 3) float64 pixels of a ``width x height`` image.
        width, height: calibrated image size (pixels; 0 when the driver left them unset).
        distortion_model: e.g. ``plumb_bob``; D: distortion coefficients (not applied by the engine).
    """

    K: np.ndarray
    width: int
    height: int
    distortion_model: str = ""
    D: tuple = ()


def camera_info_to_model(msg) -> CameraModel:
    """``sensor_msgs/CameraInfo`` -> :class:`CameraModel`, validated.

    Raises:
        ConversionError: non-finite K, fx or fy <= 0 (``K[0] == 0`` marks an uncalibrated camera),
            ``K[8] != 1``, principal point outside the image, or a negative/huge size.
    """
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise ConversionError(f"CameraInfo K has NaN/inf: {K.ravel().tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError(f"CameraInfo K has fx={K[0, 0]}, fy={K[1, 1]} (must be > 0; 0 = uncalibrated)")
    if abs(K[2, 2] - 1.0) > 1e-6 or np.any(K[2, :2] != 0) or K[1, 0] != 0:
        raise ConversionError(f"CameraInfo K is not an upper-triangular intrinsics matrix: {K.ravel().tolist()}")
    w, h = int(msg.width), int(msg.height)
    if w > 0 and h > 0 and not (0 <= K[0, 2] <= w and 0 <= K[1, 2] <= h):
        raise ConversionError(f"CameraInfo principal point ({K[0, 2]}, {K[1, 2]}) outside {w}x{h}")
    return CameraModel(K=K, width=w, height=h, distortion_model=str(msg.distortion_model), D=tuple(msg.d))


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

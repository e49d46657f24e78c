"""Conversions between ROS 2 messages and the engine's numpy types (sensor_msgs, geometry_msgs, nav_msgs,
tf2_msgs). The only module besides the node that touches message types.

Conventions: see :mod:`selfi_ros.geometry` (``T_a_b`` maps frame b into frame a, quaternions x,y,z,w,
camera frames REP-103 optical). Stamps are integer nanoseconds.

Images and point clouds are converted with numpy (exact, and tested against independent constructions):
``cv_bridge`` for ROS 2 is not on PyPI and the PyPI ``cv-bridge`` is the ROS 1 one (wrong for 16UC1), and
``sensor_msgs_py`` is not on PyPI either; the numpy paths below give the same results on a robot.
Compressed images are decoded with OpenCV (``cv2.imdecode``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from selfi_ros.geometry import as_4x4, matrix_to_quat_xyzw, quat_xyzw_to_matrix

from selfi_ros.engine.types import Frame, OdometrySample, PoseEstimate


class ConversionError(ValueError):
    """A message cannot be converted (unknown encoding, inconsistent sizes, bad intrinsics, ...)."""


# --------------------------------------------------------------------------------------------- time

def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int):
    """Integer nanoseconds (>= 0) -> ``builtin_interfaces/Time``."""
    from builtin_interfaces.msg import Time

    ns = int(ns)
    if ns < 0:
        raise ConversionError(f"negative stamp {ns} ns")
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


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
    buf = _bytes_view(msg.data)
    if buf.size < h * step:
        raise ConversionError(f"image data has {buf.size} bytes, expected height {h} x step {step} = {h * step}")
    rows = buf[: h * step].reshape(h, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dt).reshape((h, w) if ch == 1 else (h, w, ch))
    return arr.astype(dt.newbyteorder("="), copy=True)


def _bytes_view(data) -> np.ndarray:
    """uint8 view of a message's ``uint8[]`` field (array.array, bytes, memoryview or list)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


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
    data = _bytes_view(msg.data)
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


def camera_info_to_K(msg) -> np.ndarray:
    """``sensor_msgs/CameraInfo`` -> validated (3, 3) float64 K (see :func:`camera_info_to_model`)."""
    return camera_info_to_model(msg).K


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


def frame_from_image(msg, K: Optional[np.ndarray], index: int = 0, frame_id: str = "") -> Frame:
    """``sensor_msgs/Image`` or ``CompressedImage`` -> engine :class:`Frame` (stamp = header stamp).

    Raises:
        ConversionError: conversion failed (see :func:`image_to_rgb8`, :func:`compressed_to_rgb8`).
    """
    rgb = compressed_to_rgb8(msg) if hasattr(msg, "format") else image_to_rgb8(msg)
    try:
        return Frame(stamp_ns=stamp_to_ns(msg.header.stamp), image=rgb, K=K, index=index,
                     frame_id=frame_id or msg.header.frame_id or "camera")
    except ValueError as e:
        raise ConversionError(str(e)) from e


# ------------------------------------------------------------------------------------- point clouds

_PF = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}  # PointField datatypes
_FLOAT32 = 7
_UINT32 = 6


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB -> (N,) uint32 ``0x00RRGGBB`` (the PCL/RViz packed ``rgb`` layout)."""
    c = np.asarray(colors, dtype=np.uint32)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(N,) uint32 (or float32 reinterpreted) ``0x00RRGGBB`` -> (N, 3) uint8 RGB."""
    p = np.asarray(packed)
    if p.dtype != np.uint32:
        p = p.astype(np.float32).view(np.uint32) if p.dtype.kind == "f" else p.astype(np.uint32)
    return np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], axis=1).astype(np.uint8)


def points_to_pointcloud2(points: np.ndarray, colors: Optional[np.ndarray], stamp_ns: int, frame_id: str,
                          rgb_as_uint32: bool = False):
    """(N, 3) points (+ optional (N, 3) uint8 RGB) -> unorganised ``sensor_msgs/PointCloud2``.

    Layout: fields ``x, y, z`` float32 at offsets 0, 4, 8 and, with colours, ``rgb`` at 12 (packed
    0x00RRGGBB stored as float32 bits, as RViz and PCL expect, or as uint32 with ``rgb_as_uint32``);
    point_step 16 (or 12), height 1, little endian, is_dense when all points are finite.

    Raises:
        ConversionError: wrong shapes.
    """
    from sensor_msgs.msg import PointCloud2, PointField

    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3) if np.size(points) else np.zeros((0, 3), np.float32)
    if np.asarray(points).ndim != 2 and np.size(points):
        raise ConversionError(f"points must be (N, 3), got {np.shape(points)}")
    n = len(pts)
    names, formats, offsets = ["x", "y", "z"], ["<f4"] * 3, [0, 4, 8]
    fields = [PointField(name=k, offset=o, datatype=_FLOAT32, count=1) for k, o in zip(names, offsets)]
    if colors is not None:
        col = np.asarray(colors)
        if col.shape != (n, 3):
            raise ConversionError(f"colors must be (N, 3) uint8 matching points (N={n}), got {col.shape}")
        names.append("rgb")
        formats.append("<u4")
        offsets.append(12)
        fields.append(PointField(name="rgb", offset=12, datatype=_UINT32 if rgb_as_uint32 else _FLOAT32, count=1))
    step = 16 if colors is not None else 12
    arr = np.zeros(n, dtype=np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step}))
    arr["x"], arr["y"], arr["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors is not None:
        arr["rgb"] = pack_rgb(np.asarray(colors))
    msg = PointCloud2()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = 1, n
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = step
    msg.row_step = step * n
    msg.is_dense = bool(np.all(np.isfinite(pts)))
    msg.data = arr.tobytes()
    return msg


def pointcloud2_to_array(msg) -> np.ndarray:
    """``sensor_msgs/PointCloud2`` -> flat numpy structured array with one named field per PointField
    (count 1 fields only; any offsets, padding, row_step and endianness)."""
    endian = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in _PF:
            raise ConversionError(f"PointField {f.name!r} has unknown datatype {f.datatype}")
        names.append(f.name)
        formats.append(endian + _PF[f.datatype] if f.count <= 1 else (endian + _PF[f.datatype], (f.count,)))
        offsets.append(f.offset)
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step})
    h, w = int(msg.height), int(msg.width)
    if h * w == 0:
        return np.zeros(0, dtype=dt)
    buf = _bytes_view(msg.data)
    if msg.row_step < w * msg.point_step or buf.size < h * msg.row_step:
        raise ConversionError(f"PointCloud2 data {buf.size} B too short for {h}x{w} points, row_step {msg.row_step}")
    rows = buf[: h * msg.row_step].reshape(h, msg.row_step)[:, : w * msg.point_step]
    return np.ascontiguousarray(rows).view(dt).reshape(-1)


def pointcloud2_to_points(msg) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``sensor_msgs/PointCloud2`` -> ((N, 3) float32 xyz, (N, 3) uint8 RGB or None).

    Colour is read from a packed ``rgb`` or ``rgba`` field (float32 bits or uint32).

    Raises:
        ConversionError: no x/y/z fields or inconsistent sizes.
    """
    arr = pointcloud2_to_array(msg)
    names = arr.dtype.names or ()
    if not all(k in names for k in ("x", "y", "z")):
        raise ConversionError(f"PointCloud2 has no x, y, z fields: {names}")
    xyz = np.stack([arr["x"], arr["y"], arr["z"]], axis=1).astype(np.float32)
    cname = "rgb" if "rgb" in names else ("rgba" if "rgba" in names else None)
    rgb = None
    if cname is not None:
        raw = arr[cname]
        raw = raw.astype(raw.dtype.newbyteorder("="))
        rgb = unpack_rgb(raw.view(np.uint32) if raw.dtype.itemsize == 4 else raw.astype(np.uint32))
    return xyz, rgb


# -------------------------------------------------------------------------------------- transforms

def transform_stamped(T_parent_child: np.ndarray, parent: str, child: str, stamp_ns: int):
    """4x4 (or 3x4) rigid ``T_parent_child`` -> ``geometry_msgs/TransformStamped`` (header.frame_id =
    parent, child_frame_id = child; rotation quaternion x,y,z,w with w >= 0).

    Raises:
        ConversionError: non-finite input or a rotation block that is not orthonormal (a Sim(3) with
            scale != 1 cannot be a TF).
    """
    from geometry_msgs.msg import TransformStamped

    T = as_4x4(T_parent_child)
    if not np.all(np.isfinite(T)):
        raise ConversionError(f"non-finite transform {parent} -> {child}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) <= 0:
        raise ConversionError(f"rotation of {parent} -> {child} is not a proper rotation (det {np.linalg.det(R):.4f})")
    q = matrix_to_quat_xyzw(R)
    msg = TransformStamped()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = parent
    msg.child_frame_id = child
    t = msg.transform.translation
    t.x, t.y, t.z = (float(v) for v in T[:3, 3])
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


def transform_to_matrix(transform) -> np.ndarray:
    """``geometry_msgs/Transform`` (or TransformStamped) -> 4x4 float64 ``T_parent_child``."""
    tr = getattr(transform, "transform", transform)
    T = np.eye(4)
    T[:3, :3] = quat_xyzw_to_matrix(np.array([tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w]))
    T[:3, 3] = [tr.translation.x, tr.translation.y, tr.translation.z]
    return T


def pose_to_matrix(pose) -> np.ndarray:
    """``geometry_msgs/Pose`` -> 4x4 float64 (pose of the child in the header frame)."""
    T = np.eye(4)
    o = pose.orientation
    T[:3, :3] = quat_xyzw_to_matrix(np.array([o.x, o.y, o.z, o.w]))
    T[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return T


def tf_message(transforms: Sequence):
    """List of ``TransformStamped`` -> ``tf2_msgs/TFMessage`` (needs tf2_msgs: real, or built by
    scripts/build_interfaces.sh)."""
    from tf2_msgs.msg import TFMessage

    return TFMessage(transforms=list(transforms))


def _fill_pose(pose_msg, T: np.ndarray) -> None:
    q = matrix_to_quat_xyzw(T[:3, :3])
    pose_msg.position.x, pose_msg.position.y, pose_msg.position.z = (float(v) for v in T[:3, 3])
    o = pose_msg.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in q)


def pose_stamped(T_frame_child: np.ndarray, frame_id: str, stamp_ns: int):
    """4x4 pose of a child in ``frame_id`` -> ``geometry_msgs/PoseStamped``."""
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    _fill_pose(msg.pose, as_4x4(T_frame_child))
    return msg


def pose_covariance(confidence: float, position_sigma: float = 0.05, rotation_sigma: float = 0.02,
                    scale: float = 1.0) -> list[float]:
    """Diagonal 6x6 covariance (row-major 36 floats; x, y, z in m^2 then roll, pitch, yaw in rad^2) from
    a pose confidence in [0, 1]: sigma = base sigma / max(confidence, 0.05); position sigmas are in map
    units times ``scale`` (metres per map unit)."""
    c = max(float(confidence) if np.isfinite(confidence) else 0.0, 0.05)
    ps, rs = position_sigma * scale / c, rotation_sigma / c
    cov = np.zeros((6, 6))
    cov[[0, 1, 2], [0, 1, 2]] = ps * ps
    cov[[3, 4, 5], [3, 4, 5]] = rs * rs
    return cov.ravel().tolist()


def odometry(T_frame_child: np.ndarray, frame_id: str, child_frame_id: str, stamp_ns: int,
             confidence: float = 1.0, scale: float = 1.0, twist_known: bool = False):
    """Pose -> ``nav_msgs/Odometry`` with pose covariance from ``confidence`` (:func:`pose_covariance`);
    the twist is unknown (covariance[0] = -1 marks it, as REP-105 consumers expect) unless ``twist_known``."""
    from nav_msgs.msg import Odometry

    msg = Odometry()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    _fill_pose(msg.pose.pose, as_4x4(T_frame_child))
    msg.pose.covariance = pose_covariance(confidence, scale=scale)
    if not twist_known:
        cov = [0.0] * 36
        cov[0] = -1.0
        msg.twist.covariance = cov
    return msg


def pose_estimate_to_msgs(pose: PoseEstimate, map_frame: str, child_frame: str,
                          T_cam_child: Optional[np.ndarray] = None):
    """:class:`PoseEstimate` -> (``PoseStamped``, ``Odometry``) of ``child_frame`` in ``map_frame``,
    stamped with the image stamp. ``T_cam_child`` (default identity) re-expresses the camera pose as the
    pose of another frame rigidly attached to it (e.g. base_link: ``T_cam_base = inv(T_base_cam)``)."""
    T = as_4x4(pose.T_map_cam)
    if T_cam_child is not None:
        T = T @ as_4x4(T_cam_child)
    return (pose_stamped(T, map_frame, pose.stamp_ns),
            odometry(T, map_frame, child_frame, pose.stamp_ns, confidence=pose.confidence))


def odometry_to_sample(msg) -> OdometrySample:
    """``nav_msgs/Odometry`` -> :class:`OdometrySample` (``T_odom_base`` from the pose, stamp in ns)."""
    return OdometrySample(stamp_ns=stamp_to_ns(msg.header.stamp), T_odom_base=pose_to_matrix(msg.pose.pose))

"""Conversions of geometry messages: ``sensor_msgs/PointCloud2`` (xyz + packed rgb), ``geometry_msgs``
transforms and poses, ``tf2_msgs/TFMessage``, ``nav_msgs/Odometry`` (with covariance from a confidence).

Conventions: see :mod:`selfi_ros.geometry` (``T_a_b`` maps frame b into frame a, quaternions x,y,z,w,
camera frames REP-103 optical). Stamps are integer nanoseconds. Point clouds are converted with numpy
(``sensor_msgs_py`` is not on PyPI; the layout is the one RViz and PCL read). Re-exported by
:mod:`selfi_ros.ros.conversions`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from selfi_ros.engine.types import OdometrySample, PoseEstimate
from selfi_ros.geometry import as_4x4, matrix_to_quat_xyzw, quat_xyzw_to_matrix
from selfi_ros.ros.stamps import ConversionError, bytes_view, ns_to_stamp, stamp_to_ns


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
    buf = bytes_view(msg.data)
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
    tr = transform.transform if hasattr(transform, "transform") else transform
    T = np.eye(4)
    T[:3, :3] = quat_xyzw_to_matrix(np.array([tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w]))
    T[:3, 3] = [tr.translation.x, tr.translation.y, tr.translation.z]
    return T


def transform_points(T_a_b: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) points in frame b -> (N, 3) float32 in frame a (``T_a_b`` 4x4 rigid; computed in float64)."""
    T = as_4x4(T_a_b)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return (p @ T[:3, :3].T + T[:3, 3]).astype(np.float32)


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

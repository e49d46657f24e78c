"""Output files of the engine, each written atomically (temporary file in the same folder + ``os.replace``),
so a reader (or a crash) never sees a half-written file.

- ``map.ply``: binary little-endian PLY, vertices ``x y z`` float32 + ``red green blue`` uchar.
- ``trajectory.tum``: TUM RGB-D format, one line per pose ``stamp_s tx ty tz qx qy qz qw`` (camera-to-map,
  quaternion x y z w), readable by evo.
- ``cameras.json``: per frame: stamp, image (file name or index), extrinsics camera-from-world 3x4 (world =
  map), intrinsics 3x3, width, height, kind, window, confidence.
- ``metadata.json``: backend, random-weights warning, units and scale, frame convention, the engine's status
  counters and configuration (:func:`save_outputs`).
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Optional, Sequence

import numpy as np

from selfi_ros.atomic import atomic_write_bytes, atomic_write_text  # noqa: F401  (re-exported)
from selfi_ros.geometry.se3 import invert_transform, matrix_to_quat_xyzw, quat_xyzw_to_matrix
from selfi_ros.engine.types import PoseEstimate, PoseKind


def ply_bytes(points: np.ndarray, colors: Optional[np.ndarray] = None, comments: Sequence[str] = ()) -> bytes:
    """Binary little-endian PLY of (N, 3) points (float32) with optional (N, 3) uint8 colours and header
    ``comment`` lines (one per entry, newlines replaced by spaces; e.g. a random-weights warning)."""
    P = np.asarray(points, dtype="<f4").reshape(-1, 3)
    has_c = colors is not None
    header = ["ply", "format binary_little_endian 1.0"]
    header += ["comment " + " ".join(str(c).split()) for c in comments]
    header += [f"element vertex {len(P)}", "property float x", "property float y", "property float z"]
    if has_c:
        C = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
        if len(C) != len(P):
            raise ValueError(f"colors must be (N, 3) with N = {len(P)}, got {C.shape}")
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        rec = np.zeros(len(P), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"),
                                       ("b", "u1")])
        rec["r"], rec["g"], rec["b"] = C[:, 0], C[:, 1], C[:, 2]
    else:
        rec = np.zeros(len(P), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    rec["x"], rec["y"], rec["z"] = P[:, 0], P[:, 1], P[:, 2]
    header.append("end_header")
    return ("\n".join(header) + "\n").encode("ascii") + rec.tobytes()


def write_ply(path: str, points: np.ndarray, colors: Optional[np.ndarray] = None,
              comments: Sequence[str] = ()) -> str:
    """Atomic binary PLY (see :func:`ply_bytes`)."""
    return atomic_write_bytes(path, ply_bytes(points, colors, comments))


def read_ply(path: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Read any point-cloud PLY (ASCII or binary, as open3d reads it) -> ((N, 3) float32, (N, 3) uint8 or None).

    Raises:
        ValueError: the file holds no points or cannot be parsed.
    """
    import open3d as o3d  # imported here: only readers of PLY files pay for it

    pcd = o3d.io.read_point_cloud(str(path), format="ply")
    if not pcd.has_points() and os.path.getsize(path) > 0 and b"element vertex 0" not in open(path, "rb").read(512):
        raise ValueError(f"{path}: no points could be read")
    P = np.asarray(pcd.points, dtype=np.float32).reshape(-1, 3)
    C = np.clip(np.round(np.asarray(pcd.colors) * 255.0), 0, 255).astype(np.uint8) if pcd.has_colors() else None
    return P, C


def tum_lines(stamps_ns: Iterable[int], T_map_cam: Iterable[np.ndarray]) -> list[str]:
    """TUM lines ``stamp_s tx ty tz qx qy qz qw`` (stamp in seconds with ns precision, 9 decimals).

    Args:
        stamps_ns: stamps, int nanoseconds.
        T_map_cam: matching (4, 4) (or (3, 4)) camera-to-map poses; the quaternion is ROS order x, y, z, w.
    """
    lines = []
    for stamp, T in zip(stamps_ns, T_map_cam):
        T = np.asarray(T, dtype=np.float64)
        q = matrix_to_quat_xyzw(T[:3, :3])
        s, ns = divmod(int(stamp), 1_000_000_000)
        t = T[:3, 3]
        lines.append(f"{s}.{ns:09d} {t[0]:.9f} {t[1]:.9f} {t[2]:.9f} {q[0]:.9f} {q[1]:.9f} {q[2]:.9f} {q[3]:.9f}")
    return lines


def _tum_text(stamps_ns: Iterable[int], T_map_cam: Iterable[np.ndarray], comments: Sequence[str]) -> str:
    """Optional ``# comment`` lines (skipped by :func:`read_tum` and evo), then :func:`tum_lines`."""
    lines = ["# " + " ".join(str(c).split()) for c in comments] + tum_lines(stamps_ns, T_map_cam)
    return "\n".join(lines) + ("\n" if lines else "")


def tum_text(poses: Iterable[PoseEstimate], comments: Sequence[str] = ()) -> str:
    """TUM text of ``poses`` (see :func:`tum_lines`) after optional ``# comment`` lines (skipped by
    :func:`read_tum` and evo)."""
    poses = list(poses)
    return _tum_text((p.stamp_ns for p in poses), (p.T_map_cam for p in poses), comments)


def write_tum_matrices(path: str, stamps_ns: Sequence[int], T_map_cam: Sequence[np.ndarray],
                       comments: Sequence[str] = ()) -> str:
    """Atomic TUM trajectory from stamps (ns) and camera-to-map matrices (see :func:`tum_lines`)."""
    return atomic_write_text(path, _tum_text(stamps_ns, T_map_cam, comments))


def write_tum(path: str, poses: Iterable[PoseEstimate], comments: Sequence[str] = ()) -> str:
    """Atomic TUM trajectory (see :func:`tum_text`)."""
    return atomic_write_text(path, tum_text(poses, comments))


def read_tum(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM file -> ((N,) int64 stamps in ns, (N, 4, 4) float64 camera-to-map poses)."""
    stamps, Ts = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            v = line.split()
            if "." in v[0]:
                a, b = v[0].split(".")
                stamps.append(int(a) * 1_000_000_000 + int((b + "000000000")[:9]))
            else:
                stamps.append(int(v[0]) * 1_000_000_000)
            T = np.eye(4)
            T[:3, 3] = [float(x) for x in v[1:4]]
            T[:3, :3] = quat_xyzw_to_matrix(np.array([float(x) for x in v[4:8]]))
            Ts.append(T)
    return np.asarray(stamps, dtype=np.int64), np.asarray(Ts).reshape(-1, 4, 4)


def cameras_entries(poses: Sequence[PoseEstimate]) -> list[dict]:
    """One JSON-ready dict per pose: extrinsics = camera-from-map 3x4 (map units of the pose)."""
    out = []
    for p in poses:
        E = invert_transform(p.T_map_cam)[:3, :]
        out.append({
            "stamp_ns": int(p.stamp_ns),
            "timestamp": int(p.stamp_ns) * 1e-9,
            "frame_index": int(p.frame_index),
            "image": p.source or int(p.frame_index),
            "extrinsics": E.tolist(),
            "intrinsics": None if p.K is None else np.asarray(p.K, float).tolist(),
            "width": int(p.width),
            "height": int(p.height),
            "kind": PoseKind(p.kind).value,
            "window_id": int(p.window_id),
            "confidence": float(p.confidence),
            "metric": bool(p.metric),
        })
    return out


def write_json(path: str, obj) -> str:
    """Atomic JSON (NaN written as null)."""
    def clean(o):
        if isinstance(o, float) and not np.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        if isinstance(o, (np.floating,)):
            return clean(float(o))
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, np.bool_):
            return bool(o)
        return o
    return atomic_write_text(path, json.dumps(clean(obj), indent=1))


def save_outputs(out_dir: str, poses: Sequence[PoseEstimate], points: np.ndarray, colors: np.ndarray, status,
                 config) -> dict:
    """Write map.ply, trajectory.tum, cameras.json and metadata.json into ``out_dir``; returns their paths.

    Args:
        poses: the trajectory (output units); points, colors: (N, 3) float32 map cloud and (N, 3) uint8 RGB.
        status: the engine's :class:`~selfi_ros.engine.status.EngineStatus`; config: its
            :class:`~selfi_ros.engine.config.EngineConfig` (both written into metadata.json).

    With a random-weights backend every file carries the warning (metadata.json ``WARNING`` and
    ``random_weights``, cameras.json ``random_weights``, a PLY header comment, a TUM ``#`` line).
    """
    from dataclasses import asdict

    st = status
    meta = {
        "backend": st.backend,
        "random_weights": st.random_weights,
        "WARNING": ("outputs come from a RANDOMLY INITIALISED model: plumbing only, not a reconstruction"
                    if st.random_weights else ""),
        "metric": st.metric,
        "units": "metres" if st.metric else "up to scale (map units of the first window)",
        "scale_m_per_unit": st.scale,
        "scale_std": st.scale_std,
        "frame_convention": "T_map_cam camera-to-map, OpenCV optical axes; extrinsics camera-from-map",
        "status": asdict(st),
        "config": asdict(config),
    }
    notes = [f"selfi_ros {st.backend}: {meta['WARNING']}"] if st.random_weights else []
    paths = {
        "map": write_ply(os.path.join(out_dir, "map.ply"), points, colors, comments=notes),
        "trajectory": write_tum(os.path.join(out_dir, "trajectory.tum"), poses, comments=notes),
        "cameras": write_json(os.path.join(out_dir, "cameras.json"),
                              {"metric": st.metric, "random_weights": st.random_weights,
                               "frames": cameras_entries(poses)}),
    }
    paths["metadata"] = write_json(os.path.join(out_dir, "metadata.json"), meta)
    return paths

"""Putting a reconstructed window into the map: shape checks, point maps, the Sim(3) window -> map (chained
on shared anchors, or guessed for a new segment), the anchor records kept for chaining the next window,
and the window's subsampled coloured cloud: pure functions of their arguments, and
:class:`WindowIntegration`, the engine's steps that use them on its state.

Frames: window frame = the backend's frame of a window (up to scale); map frame = the first window's.
Poses are ``T_map_cam`` camera-to-map (4x4 float64, map units), extrinsics camera-from-window.
Chaining overlapping windows by Sim(3) on shared frames follows VGGT-SLAM (Maggio et al., 2025: Sim(3)
submaps on shared frames) in spirit; the fit itself is :func:`selfi_ros.engine.chaining.chain_window`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from selfi_ros.geometry.camera import depth_to_points_cam, scale_intrinsics
from selfi_ros.geometry.se3 import invert_transform
from selfi_ros.geometry.sim3 import Sim3
from selfi_ros.engine.backend import BackendError
from selfi_ros.engine.chaining import ChainingError, SharedFrame, chain_window
from selfi_ros.engine.keyframes import Keyframe
from selfi_ros.engine.map import TrajectoryStore
from selfi_ros.engine.types import Frame, PoseKind, WindowReconstruction
from selfi_ros.engine.windows import anchor_coverage

log = logging.getLogger("selfi_ros.engine")


@dataclass
class AnchorRecord:
    """A current-window anchor, kept for chaining the next window.

    Attributes:
        kf: its keyframe (with its map pose).
        uv_norm: (N, 2) float64 normalised pixel coordinates in [0, 1) of the subsampled point-map samples.
        pts_map: (N, 3) float64 map-frame points of those samples (map units).
        conf: (N,) float64 their confidences.
    """

    kf: Keyframe
    uv_norm: np.ndarray
    pts_map: np.ndarray
    conf: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays."""
        return int(self.uv_norm.nbytes + self.pts_map.nbytes + self.conf.nbytes)


def window_point_maps(win: WindowReconstruction) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(S, H, W, 3) float64 window-frame point maps and (S, H, W) float64 confidences of a window.

    Uses ``points`` when given, else unprojects ``depth`` with the window's intrinsics/extrinsics;
    (None, None) for sparse-only backends. Confidence defaults to ones.
    """
    S = win.num_frames
    if win.points is not None:
        P = np.asarray(win.points, dtype=np.float64)
        conf = win.points_conf if win.points_conf is not None else win.depth_conf
    elif win.depth is not None:
        D = np.asarray(win.depth, dtype=np.float64)
        P = np.empty(D.shape + (3,))
        for i in range(S):
            Pc = depth_to_points_cam(D[i], win.intrinsics[i])
            E = np.asarray(win.extrinsics[i], dtype=np.float64)
            P[i] = (Pc - E[:3, 3]) @ E[:3, :3]
        conf = win.depth_conf
    else:
        return None, None
    if conf is None:
        conf = np.ones(P.shape[:-1], np.float32)
    return P, np.asarray(conf, dtype=np.float64)


def check_window(win: WindowReconstruction, n: int) -> None:
    """Shape checks of a backend's window of ``n`` anchors.

    Raises:
        ValueError: naming the member and the expected shape.
    """
    if not isinstance(win, WindowReconstruction):
        raise ValueError(f"backend returned {type(win).__name__}, expected WindowReconstruction")
    E = np.asarray(win.extrinsics)
    if E.shape != (n, 3, 4) and E.shape != (n, 4, 4):
        raise ValueError(f"window extrinsics must be ({n}, 3, 4), got {E.shape}")
    if not np.all(np.isfinite(E)):
        raise ValueError("window extrinsics are not finite")
    if np.asarray(win.intrinsics).shape != (n, 3, 3):
        raise ValueError(f"window intrinsics must be ({n}, 3, 3), got {np.asarray(win.intrinsics).shape}")
    H, W = (int(x) for x in win.image_size_hw)
    for name, tail in (("points", (3,)), ("depth", ()), ("points_conf", ()), ("depth_conf", ()),
                       ("colors", (3,))):
        a = getattr(win, name)
        if a is not None and np.asarray(a).shape != (n, H, W) + tail:
            raise ValueError(f"window {name} must be {(n, H, W) + tail}, got {np.asarray(a).shape}")
    if win.sparse_points is not None and np.asarray(win.sparse_points).reshape(-1).size % 3:
        raise ValueError(f"window sparse_points must be (N, 3), got {np.asarray(win.sparse_points).shape}")


def anchor_intrinsics(win: WindowReconstruction, i: int, width: int, height: int) -> np.ndarray:
    """(3, 3) float64 intrinsics of anchor ``i`` in pixels of its input image of ``width`` x ``height``:
    ``intrinsics_image`` when the backend gives it, else ``intrinsics`` rescaled by the size ratio."""
    H, W = win.image_size_hw
    if win.intrinsics_image is not None and np.shape(win.intrinsics_image) == (win.num_frames, 3, 3):
        return np.asarray(win.intrinsics_image[i], np.float64)
    return scale_intrinsics(win.intrinsics[i], width / W, height / H)


def anchor_record(kf: Keyframe, P_i: Optional[np.ndarray], conf_i: Optional[np.ndarray], S: Sim3,
                  points_per_anchor: int, min_confidence: float) -> AnchorRecord:
    """Record of anchor ``kf``: about ``points_per_anchor`` samples on a regular grid of its (H, W, 3)
    window-frame point map ``P_i`` (finite, confidence >= ``min_confidence``), moved into the map by ``S``.
    An empty record without a point map."""
    if P_i is None:
        return AnchorRecord(kf, np.zeros((0, 2)), np.zeros((0, 3)), np.zeros(0))
    H, W = P_i.shape[:2]
    n = max(1, points_per_anchor)
    step = max(1, int(np.sqrt(H * W / n)))
    v, u = np.mgrid[step // 2:H:step, step // 2:W:step]
    v, u = v.reshape(-1), u.reshape(-1)
    p = P_i[v, u]
    cf = conf_i[v, u]
    ok = np.isfinite(p).all(1) & np.isfinite(cf) & (cf >= min_confidence)
    uv = np.stack([(u[ok] + 0.5) / W, (v[ok] + 0.5) / H], 1)
    return AnchorRecord(kf, uv, S.apply(p[ok]), cf[ok])


def chain_to_map(anchors: Sequence[Keyframe], previous: Sequence[AnchorRecord], win: WindowReconstruction,
                 T_win_cam: np.ndarray, P: Optional[np.ndarray], conf: Optional[np.ndarray], centre_weight: float,
                 localized_weight: float, rng: np.random.Generator) -> tuple[Sim3, float]:
    """Sim(3) window -> map of a new window and its RMS residual (map units).

    Shared frames are the anchors with a map pose: previous-window anchors (weight 1, plus their recorded
    map points against this window's point map at the same pixels) and localized keyframes (weight
    ``localized_weight`` x their confidence).

    Args:
        anchors: the new window's anchors; ``T_win_cam``: (S, 4, 4) their window poses.
        previous: the current window's anchor records.
        P, conf: the new window's point maps / confidences (:func:`window_point_maps`) or None.

    Raises:
        selfi_ros.engine.chaining.ChainingError: too few shared frames or a bad fit.
    """
    prev = {a.kf.stamp_ns: a for a in previous}
    shared = []
    mp, wp, pw = [], [], []
    H, W = win.image_size_hw
    for i, kf in enumerate(anchors):
        if kf.T_map_cam is None:
            continue
        rec = prev.get(kf.stamp_ns)
        w = 1.0 if rec is not None else localized_weight * max(0.0, min(1.0, kf.confidence))
        if w <= 0:
            continue
        shared.append(SharedFrame(kf.T_map_cam, T_win_cam[i], w))
        if rec is not None and P is not None and len(rec.uv_norm):
            u = np.clip((rec.uv_norm[:, 0] * W).astype(int), 0, W - 1)
            v = np.clip((rec.uv_norm[:, 1] * H).astype(int), 0, H - 1)
            mp.append(rec.pts_map)
            wp.append(P[i, v, u])
            pw.append(np.minimum(rec.conf, conf[i, v, u]))
    kw = {}
    if mp:
        kw = dict(map_points=np.concatenate(mp), win_points=np.concatenate(wp), point_weights=np.concatenate(pw))
    res = chain_window(shared, centre_weight=centre_weight, rng=rng, **kw)
    log.info("window chained: s=%.4g residual=%.4g (%s, %d frames, %d points)", res.T_map_window.s,
             res.residual, res.method, res.num_frames, res.num_points)
    return res.T_map_window, res.residual


def window_cloud(win: WindowReconstruction, P: Optional[np.ndarray], conf: Optional[np.ndarray],
                 anchors: Sequence[Keyframe], min_confidence: float, max_points: int,
                 rng: np.random.Generator) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(N, 3) float64 window-frame points (finite, confidence >= ``min_confidence``, at most ``max_points``
    drawn at random when > 0) and (N, 3) uint8 RGB; dense point maps first, else the sparse points
    (grey without colours); (None, None) when the window has neither. Colours default to the anchor
    images resized to the point-map grid."""
    if P is not None:
        _, H, W = P.shape[:3]
        cols = win.colors
        if cols is None:
            cols = np.stack([cv2.resize(k.frame.image, (W, H), interpolation=cv2.INTER_AREA) for k in anchors])
        pts = P.reshape(-1, 3)
        cf = conf.reshape(-1)
        cols = np.asarray(cols, np.uint8).reshape(-1, 3)
        ok = np.isfinite(pts).all(1) & np.isfinite(cf) & (cf >= min_confidence)
        pts, cols = pts[ok], cols[ok]
    elif win.sparse_points is not None:
        pts = np.asarray(win.sparse_points, np.float64).reshape(-1, 3)
        cols = (np.full((len(pts), 3), 128, np.uint8) if win.sparse_colors is None
                else np.asarray(win.sparse_colors, np.uint8).reshape(-1, 3))
        ok = np.isfinite(pts).all(1)
        pts, cols = pts[ok], cols[ok]
    else:
        return None, None
    if len(pts) > max_points > 0:
        idx = np.sort(rng.choice(len(pts), max_points, replace=False))
        pts, cols = pts[idx], cols[idx]
    return pts, cols


def predict_pose(traj: TrajectoryStore, stamp_ns: int, min_baseline_s: float = 0.5,
                 max_ratio: float = 5.0) -> Optional[np.ndarray]:
    """Constant-velocity prediction of ``T_map_cam`` (4x4, map units) at ``stamp_ns`` from the last stored
    pose and the latest one at least ``min_baseline_s`` older: translation linear in time, rotation by the
    same fraction of the relative rotation (axis-angle); extrapolation limited to ``max_ratio`` times that
    baseline. The last pose when there is no older one; None without poses."""
    from scipy.spatial.transform import Rotation

    poses = traj.poses()
    if not poses:
        return None
    p2 = poses[-1]
    T2 = np.asarray(p2.T_map_cam, np.float64)
    p1 = next((p for p in reversed(poses[:-1]) if p2.stamp_ns - p.stamp_ns >= min_baseline_s * 1e9), None)
    if p1 is None or stamp_ns <= p2.stamp_ns:
        return T2.copy()
    T1 = np.asarray(p1.T_map_cam, np.float64)
    a = min(max_ratio, (stamp_ns - p2.stamp_ns) / float(p2.stamp_ns - p1.stamp_ns))
    rv = Rotation.from_matrix(T1[:3, :3].T @ T2[:3, :3]).as_rotvec()
    T = np.eye(4)
    T[:3, :3] = T2[:3, :3] @ Rotation.from_rotvec(a * rv).as_matrix()
    T[:3, 3] = T2[:3, 3] + a * (T2[:3, 3] - T1[:3, 3])
    return T


def segment_transform(anchors: Sequence[Keyframe], T_win_cam: np.ndarray, current: Optional[Sim3],
                      traj: TrajectoryStore) -> Sim3:
    """Sim(3) window -> map of a new map segment (nothing relates it to the map, so its placement is a guess).

    The newest anchor with a map pose keeps that pose; without one, the oldest anchor (the closest in time
    to the last pose) is placed at the constant-velocity prediction from the last poses
    (:func:`predict_pose`). The scale is the current window's ``current.s`` (backends normalise each window
    alike, e.g. colmap to a median depth of 1), 1 without one.
    """
    s = current.s if current is not None else 1.0
    idx = max((i for i, k in enumerate(anchors) if k.T_map_cam is not None), default=None)
    if idx is not None:
        T_ref = np.asarray(anchors[idx].T_map_cam, np.float64)
    else:
        idx = 0
        T_ref = predict_pose(traj, anchors[0].stamp_ns)
        if T_ref is None:
            return Sim3(s, np.eye(3), np.zeros(3))
    R = T_ref[:3, :3] @ T_win_cam[idx][:3, :3].T
    return Sim3(s, R, T_ref[:3, 3] - s * R @ T_win_cam[idx][:3, 3])


class WindowIntegration:
    """The engine's window steps (a base class of :class:`selfi_ros.engine.engine.Engine`, whose state it
    uses: backend, config, status, keyframe poses, trajectory, map, recovery, current window and anchors):
    one attempt from the recovery plan, and reconstruct -> check -> place (identity, chained or segment)
    -> anchor poses and records -> map cloud -> window database and pose graph (``_on_window_added``,
    :class:`selfi_ros.engine.loop_closure.LoopClosure`)."""

    def _coverage(self, T_map_cam: np.ndarray, K, frame: Frame) -> float:
        if K is None or not self._anchors:
            return float("nan")
        pts = np.concatenate([a.pts_map[:: max(1, len(a.pts_map) // 256)] for a in self._anchors])
        return anchor_coverage(pts, T_map_cam, K, frame.height, frame.width)

    def _scale_sample(self, kf: Keyframe) -> None:
        if not self.config.use_odometry_scale or kf.T_map_cam is None or not len(self.odom):
            return
        p = self.odom.position_at(kf.stamp_ns)
        if p is None:
            return
        was = self.metric
        self.scale.add(kf.stamp_ns, kf.T_map_cam[:3, 3], p)
        est = self.scale.update()
        self._status.scale_pairs = est.num_pairs
        if est.valid:  # the latest valid estimate is used; an invalid update keeps the previous one
            self._metric_scale = est
        if self.metric and not was:
            log.info("metric scale known: %.4g +- %.2g m per map unit (%d pairs); outputs are now in metres",
                     est.scale, est.std, est.num_pairs)

    def _first_window_step(self, frame: Frame, kf: Optional[Keyframe], out):
        """Before the first window: hold a non-keyframe (bounded) or try window 0 with a keyframe; returns
        ``out`` (the frame's :class:`~selfi_ros.engine.engine.EngineOutput`)."""
        c = self.config
        if kf is None:
            if c.localize_non_keyframes:
                self._held.append(frame)
                while len(self._held) > c.max_held_frames:
                    self._held.popleft()
                    self._status.held_dropped += 1
            return out
        pending = self.keyframes.since(self._cutoff_ns)
        if len(pending) >= c.window_size:
            anchors = pending[-c.window_size:]
            if self._new_window(anchors, out, first=True):
                held = list(self._held)
                self._held.clear()
                b = max(1, c.localize_batch_size)
                for i in range(0, len(held), b):
                    poses, _ = self._localize(held[i:i + b])
                    out.poses.extend(self._output_pose(p) for p in poses if p is not None)
            else:
                self._cutoff_ns = anchors[0].stamp_ns  # retry without the oldest keyframe
        out.poses.sort(key=lambda p: p.stamp_ns)
        out.metric = self.metric
        return out

    def _attempt_window(self, candidates: list[Keyframe], out, reason: str) -> bool:
        """One window attempt (the next plan of :class:`~selfi_ros.engine.recovery.WindowRecovery`); on
        failure the next keyframe tries the next fallback. Returns True when a window was made."""
        mode, anchors = self.recovery.plan([a.kf for a in self._anchors], candidates)
        if not anchors:
            return False
        log.info("new window (%s, %s) from %d anchors", reason, mode, len(anchors))
        if self._new_window(anchors, out, first=False, mode=mode):
            st = self._status
            if mode in ("other_overlap", "fresh"):
                st.window_recoveries += 1
            if mode == "segment":
                st.map_segments += 1
                log.warning("window %d starts a new map segment (discontinuity %d): windows could not be "
                            "chained; its pose is guessed from the last poses (constant velocity)", self._window_id,
                            st.map_segments)
            self.recovery.succeeded()
            return True
        self.recovery.failed(anchors, {a.kf.stamp_ns for a in self._anchors})
        return False

    def _new_window(self, anchors: list[Keyframe], out, first: bool, mode: str = "overlap") -> bool:
        """Reconstruct, chain and add a window; on success update state/outputs and return True.

        ``mode`` "segment": not chained (:func:`~selfi_ros.engine.integration.segment_transform`); its
        anchors' poses are output."""
        st = self._status
        c = self.config
        wid = self._next_window_id
        self._next_window_id += 1  # one id per attempt (a failed attempt's id is not reused)
        t0 = time.perf_counter()
        try:
            win = self.backend.reconstruct_window(wid, [k.frame for k in anchors])
            check_window(win, len(anchors))
        except Exception as e:  # noqa: BLE001 - BackendError, bad shapes (ValueError) or a backend crash
            if not isinstance(e, (BackendError, ValueError)):
                log.exception("backend.reconstruct_window raised %s", type(e).__name__)
            st.backend_errors += not isinstance(e, ValueError) or isinstance(e, BackendError)
            st.window_failures += 1
            st.last_error = f"reconstruct_window {wid}: {e}"
            log.warning("window %d failed: %s", wid, e)
            st.last_window_ms = 1e3 * (time.perf_counter() - t0)
            return False
        T_win_cam = invert_transform(np.asarray(win.extrinsics, dtype=np.float64))
        P, conf = window_point_maps(win)
        if first:
            S = Sim3.identity()
            residual = float("nan")
        elif mode == "segment":
            S = segment_transform(anchors, T_win_cam, self._T_map_window, self.traj)
            residual = float("nan")
        else:
            try:
                S, residual = chain_to_map(anchors, self._anchors, win, T_win_cam, P, conf,
                                           c.chain_centre_weight, c.localized_anchor_weight, self._rng)
            except ChainingError as e:
                st.chain_failures += 1
                st.window_failures += 1
                st.last_error = f"chaining window {wid}: {e}"
                log.warning("window %d not chained: %s", wid, e)
                st.last_window_ms = 1e3 * (time.perf_counter() - t0)
                return False
        win.T_map_window = S.matrix()
        win.chain_residual = residual
        prev_id, prev_S = self._window_id, self._T_map_window
        self._T_map_window = S
        self._window_id = wid
        st.windows += 1
        st.chain_residual = residual
        st.state = "mapping"
        self._consecutive_failures = 0
        # anchor poses and records
        self._anchors = []
        for i, kf in enumerate(anchors):
            T = S.transform_pose(T_win_cam[i])
            kf.T_map_cam = T
            kf.confidence = 1.0
            kf.window_id = wid
            fr = kf.frame
            pose = self._store_pose(fr, T, anchor_intrinsics(win, i, fr.width, fr.height), 1.0, PoseKind.ANCHOR)
            if first or mode == "segment":
                out.poses.append(self._output_pose(pose))
            self._scale_sample(kf)
            self._anchors.append(anchor_record(kf, None if P is None else P[i], None if conf is None else conf[i],
                                               S, c.chain_points_per_anchor, c.min_point_confidence))
        self._cutoff_ns = anchors[-1].stamp_ns
        # map
        pts, cols = window_cloud(win, P, conf, anchors, c.min_point_confidence, c.max_points_per_window,
                                 self._rng)
        if pts is not None and len(pts):
            pts_map = S.apply(pts)
            self.map.add(pts_map, cols)
            out.window_points = (pts_map * self._out_scale).astype(np.float32)
            out.window_colors = cols
        st.map_points = len(self.map)
        st.map_voxel_size = self.map.voxel_size
        out.window = win
        self._on_window_added(win, anchors, mode, first, prev_id, prev_S, pts, cols)
        st.last_window_ms = 1e3 * (time.perf_counter() - t0)
        return True


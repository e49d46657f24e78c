"""Oracle backend: returns what a learned backend would, computed from ground truth plus controlled noise.

For tests and benchmarks of the engine (windows, chaining, scale, map) without any model. Given the true
per-frame depth, pose and intrinsics, a window is returned in its first anchor's camera frame (the VGGT /
SAIL-Recon convention) multiplied by a random per-window scale (learned models normalise scale per
window), with Gaussian pose noise and multiplicative depth noise; queries are localized in the current
window's frame with the same scale and fresh pose noise.

Window memories (issue 10: relocalization, loop closure, map reuse): :class:`OracleWindowMemory` holds a
window's frame (the first anchor's true pose and the window scale) and its anchors' true poses and
intrinsics. ``localize_in`` gives a frame's noisy true pose in that window's frame when the frame *sees*
what the anchors saw: its ground-truth surface points (a coarse pixel grid) are projected into the anchor
cameras, and the number that land inside an anchor image is the frame's ``inliers`` (too few: failure),
a stand-in for the 2D-3D matches of a real backend. ``describe`` is a deterministic function of the
image (a coarse grey thumbnail, mean-removed, L2-normalised, optional noise), so revisits of the same view
retrieve each other.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

import cv2

import numpy as np
from scipy.spatial.transform import Rotation

from selfi_ros.geometry.camera import check_K, depth_to_points_cam
from selfi_ros.geometry.se3 import invert_transform
from selfi_ros.atomic import atomic_write_bytes, atomic_write_text
from selfi_ros.engine.backend import BackendBase, BackendError, WindowMemory
from selfi_ros.engine.types import Frame, LocalizationResult, WindowReconstruction


@dataclass
class OracleScene:
    """Ground truth keyed by ``Frame.index`` (or stamp_ns, see OracleBackend.key).

    Attributes:
        depth: key -> (H, W) float z-depth in metres (NaN or <= 0 where no surface).
        T_world_cam: key -> (4, 4) camera-to-world pose (metres, OpenCV optical axes).
        K: (3, 3) intrinsics shared by all frames, or key -> (3, 3); pixels of the depth maps.
    """

    depth: dict
    T_world_cam: dict
    K: Union[np.ndarray, dict] = field(default_factory=lambda: np.eye(3))

    def intrinsics(self, key) -> np.ndarray:
        return check_K(self.K[key] if isinstance(self.K, dict) else self.K)


@dataclass
class OracleWindowMemory:
    """What the oracle keeps of one window (a :class:`~selfi_ros.engine.backend.WindowMemory`).

    Attributes:
        window_id: the window it was exported from; backend: ``"oracle"``.
        scale: the window's scale (window units per metre).
        T_world_window: (4, 4) float64 true pose of the window frame (its first anchor's camera) in the world.
        anchor_T_world_cam: (S, 4, 4) float64 true camera-to-world poses of the anchors (metres); their poses
            in the window frame are ``inv(T_world_window) @ anchor_T_world_cam`` with translations x ``scale``.
        anchor_K: (S, 3, 3) float64 intrinsics in pixels of the ground-truth depth maps.
        anchor_hw: (S, 2) int64 (height, width) of those depth maps.
        stamps_ns: (S,) int64 anchor stamps.
        descriptors: (S, D) float32 L2-normalised anchor descriptors (:meth:`OracleBackend.describe`).
        anchor_depth: (S, h, w) float32 true depth maps subsampled by ``DEPTH_STRIDE`` (metres; NaN: none),
            for the occlusion test of ``localize_in``.
    """

    window_id: int
    scale: float
    T_world_window: np.ndarray
    anchor_T_world_cam: np.ndarray
    anchor_K: np.ndarray
    anchor_hw: np.ndarray
    stamps_ns: np.ndarray
    descriptors: np.ndarray
    anchor_depth: np.ndarray
    backend: str = "oracle"

    _ARRAYS = ("T_world_window", "anchor_T_world_cam", "anchor_K", "anchor_hw", "stamps_ns", "descriptors",
               "anchor_depth")
    DEPTH_STRIDE = 4

    def nbytes(self) -> int:
        """Bytes of the arrays."""
        return int(sum(np.asarray(getattr(self, a)).nbytes for a in self._ARRAYS))

    def save(self, directory: str) -> None:
        """``memory.npz`` (the arrays) and ``memory.json`` (id, backend, scale) into ``directory``, each file
        written atomically. Raises OSError."""
        import io

        buf = io.BytesIO()
        np.savez(buf, **{a: np.asarray(getattr(self, a)) for a in self._ARRAYS})
        atomic_write_bytes(os.path.join(directory, "memory.npz"), buf.getvalue())
        atomic_write_text(os.path.join(directory, "memory.json"), json.dumps(
            {"backend": self.backend, "window_id": int(self.window_id), "scale": float(self.scale)}))


def thumbnail_descriptor(image: np.ndarray, size: tuple = (8, 6)) -> np.ndarray:
    """Global descriptor of an RGB image: its grey thumbnail of ``size`` (width, height) px (area
    average), mean removed, L2-normalised: (width * height,) float32 (zeros for a uniform image). A classic
    baseline of place recognition ("tiny images", Torralba et al., TPAMI 2008)."""
    g = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    t = cv2.resize(g, tuple(int(x) for x in size), interpolation=cv2.INTER_AREA).reshape(-1)
    t = t - t.mean()
    n = float(np.linalg.norm(t))
    return (t / n if n > 1e-6 else np.zeros_like(t)).astype(np.float32)


class OracleBackend(BackendBase):
    """Ground truth + noise backend (see module docstring). Implements :class:`~selfi_ros.engine.backend.Backend`.

    Args:
        scene: the ground truth.
        rot_noise_deg: std of each rotation-vector component of the pose noise (deg).
        trans_noise_m: std of each translation component of the pose noise (m, before the window scale).
        depth_noise: relative std of multiplicative depth noise (unitless).
        scale_range: per-window scale drawn log-uniformly from this (lo, hi); (1, 1) for none.
        downsample: stride of the returned depth/point maps (pixels of the ground truth).
        fail_windows: window ids for which ``reconstruct_window`` raises BackendError.
        fail_frames: keys for which localization fails.
        confidence: confidence reported for every localization (unitless, [0, 1]).
        key: "index" (Frame.index) or "stamp" (Frame.stamp_ns) to look ground truth up.
        seed: noise seed.
        min_overlap: ``localize`` (current window) fails for a frame whose surface grid points are seen by
            the anchors in less than this fraction (0: never, the historical behaviour).
        relocalize_min_inliers: ``localize_in`` fails with fewer grid points seen by the memory's anchors
            (of the 16 x 12 grid: at most 192).
        fail_relocalize: keys for which ``localize_in`` fails (injected).
        descriptor_noise: std of Gaussian noise added to a descriptor before normalisation (unitless).
    """

    name = "oracle"
    random_weights = False
    supports_map = True
    #: pixel grid (columns, rows) sampled for the visibility test of localize / localize_in
    GRID = (16, 12)

    def __init__(self, scene: OracleScene, rot_noise_deg: float = 0.0, trans_noise_m: float = 0.0,
                 depth_noise: float = 0.0, scale_range: tuple = (0.5, 2.0), downsample: int = 1,
                 fail_windows: Sequence[int] = (), fail_frames: Sequence = (), confidence: float = 1.0,
                 key: str = "index", seed: int = 0, min_overlap: float = 0.0, relocalize_min_inliers: int = 20,
                 fail_relocalize: Sequence = (), descriptor_noise: float = 0.0):
        if key not in ("index", "stamp"):
            raise ValueError(f"key must be 'index' or 'stamp', got {key!r}")
        self.scene = scene
        self.rot_noise_deg = float(rot_noise_deg)
        self.trans_noise_m = float(trans_noise_m)
        self.depth_noise = float(depth_noise)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.downsample = max(1, int(downsample))
        self.fail_windows = set(fail_windows)
        self.fail_frames = set(fail_frames)
        self.confidence = float(confidence)
        self.key = key
        self.rng = np.random.default_rng(seed)
        self.window_scales: dict[int, float] = {}
        self.min_overlap = float(min_overlap)
        self.relocalize_min_inliers = int(relocalize_min_inliers)
        self.fail_relocalize = set(fail_relocalize)
        self.descriptor_noise = float(descriptor_noise)
        self.calls = {"reconstruct_window": 0, "localize": 0, "localize_in": 0, "describe": 0}
        self.reset()

    def reset(self) -> None:
        self._mem: Optional[tuple[int, float, np.ndarray]] = None  # (window id, scale, T_world_c0)
        self._current: Optional[OracleWindowMemory] = None

    def _key(self, f: Frame):
        return f.index if self.key == "index" else f.stamp_ns

    def _noisy_T_c0_c(self, T_world_c0: np.ndarray, T_world_c: np.ndarray, noisy: bool) -> np.ndarray:
        T = invert_transform(T_world_c0) @ T_world_c
        if noisy and self.rot_noise_deg > 0:
            dR = Rotation.from_rotvec(np.radians(self.rng.normal(0, self.rot_noise_deg, 3))).as_matrix()
            T[:3, :3] = T[:3, :3] @ dR
        if noisy and self.trans_noise_m > 0:
            T[:3, 3] += self.rng.normal(0, self.trans_noise_m, 3)
        return T

    def _gt(self, f: Frame):
        k = self._key(f)
        if k not in self.scene.T_world_cam:
            return None
        return k, np.asarray(self.scene.T_world_cam[k], np.float64)

    def reconstruct_window(self, window_id: int, anchors: Sequence[Frame]) -> WindowReconstruction:
        """Window in the first anchor's frame x a random scale (see class docstring).

        Raises BackendError for < 2 anchors, a missing ground truth, or a window id in ``fail_windows``.
        """
        self.calls["reconstruct_window"] += 1
        anchors = list(anchors)
        if len(anchors) < 2:
            raise BackendError(f"need >= 2 anchors, got {len(anchors)}")
        if window_id in self.fail_windows:
            raise BackendError(f"oracle: injected failure of window {window_id}")
        gts = [self._gt(f) for f in anchors]
        if any(g is None for g in gts):
            raise BackendError("oracle: an anchor has no ground truth")
        lo, hi = self.scale_range
        s = float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))
        T_w_c0 = gts[0][1]
        ds = self.downsample
        ext, Ks, deps, pts, cols = [], [], [], [], []
        for i, (f, (k, T_w_c)) in enumerate(zip(anchors, gts)):
            T = self._noisy_T_c0_c(T_w_c0, T_w_c, noisy=i > 0)
            T[:3, 3] *= s
            E = invert_transform(T)[:3, :]
            K = self.scene.intrinsics(k).copy()
            K[:2, :] /= ds  # pixel u' of the stride-ds map is pixel ds*u' of the ground truth
            d = np.asarray(self.scene.depth[k], np.float64)[::ds, ::ds] * s
            if self.depth_noise > 0:
                d = d * (1.0 + self.rng.normal(0, self.depth_noise, d.shape))
            d = np.where(np.isfinite(d) & (d > 0), d, np.nan)
            Pc = depth_to_points_cam(d, K)
            P = Pc @ T[:3, :3].T + T[:3, 3]
            img = f.image
            H, W = d.shape
            sy = max(1, img.shape[0] // max(1, H))
            sx = max(1, img.shape[1] // max(1, W))
            c = img[::sy, ::sx][:H, :W]
            if c.shape[:2] != (H, W):
                c = np.resize(c, (H, W, 3))
            ext.append(E)
            Ks.append(K)
            deps.append(d.astype(np.float32))
            pts.append(P.astype(np.float32))
            cols.append(c)
        self._mem = (window_id, s, T_w_c0)
        self.window_scales[window_id] = s
        desc = self.describe(anchors)
        self._current = OracleWindowMemory(
            window_id, s, T_w_c0.copy(), np.stack([g[1] for g in gts]), np.stack([self.scene.intrinsics(g[0])
                                                                                  for g in gts]),
            np.array([np.shape(self.scene.depth[g[0]])[:2] for g in gts], np.int64),
            np.array([f.stamp_ns for f in anchors], np.int64), desc,
            np.stack([np.asarray(self.scene.depth[g[0]], np.float32)[::OracleWindowMemory.DEPTH_STRIDE,
                                                                      ::OracleWindowMemory.DEPTH_STRIDE] for g in gts]))
        depth = np.stack(deps)
        conf = np.isfinite(depth).astype(np.float32)
        return WindowReconstruction(
            window_id=window_id, stamps_ns=np.array([f.stamp_ns for f in anchors], np.int64),
            frame_indices=np.array([f.index for f in anchors], np.int64), extrinsics=np.stack(ext),
            intrinsics=np.stack(Ks), image_size_hw=tuple(depth.shape[1:3]), depth=depth, depth_conf=conf,
            points=np.stack(pts), points_conf=conf, colors=np.stack(cols).astype(np.uint8), backend=self.name,
            intrinsics_image=np.stack([self.scene.intrinsics(g[0]) for g in gts]), descriptors=desc.copy())

    def localize(self, frames: Sequence[Frame]) -> list[LocalizationResult]:
        """Noisy true pose of each frame in the current window frame (window scale applied).

        Raises BackendError before any window was reconstructed.
        """
        self.calls["localize"] += 1
        if self._mem is None:
            raise BackendError("oracle: no window reconstructed yet")
        _, s, T_w_c0 = self._mem
        out = []
        for f in frames:
            g = self._gt(f)
            if g is None or g[0] in self.fail_frames:
                out.append(LocalizationResult(f.stamp_ns, f.index, None, reason="oracle: no ground truth"
                                              if g is None else "oracle: injected failure"))
                continue
            seen, valid = self._seen(g[0], g[1], self._current) if self.min_overlap > 0 else (0, 0)
            if self.min_overlap > 0 and not seen >= self.min_overlap * max(1, valid):
                out.append(LocalizationResult(f.stamp_ns, f.index, None, reason=f"oracle: the anchors see "
                                              f"{seen} of {valid} surface samples of the frame"))
                continue
            T = self._noisy_T_c0_c(T_w_c0, g[1], noisy=True)
            T[:3, 3] *= s
            out.append(LocalizationResult(f.stamp_ns, f.index, invert_transform(T)[:3, :],
                                          K=self.scene.intrinsics(g[0]) if f.K is None else f.K,
                                          confidence=self.confidence, inliers=int(seen)))
        return out

    # -- window memories ------------------------------------------------------------------------------
    def map_signature(self) -> Mapping[str, str]:
        """``backend`` and the descriptor kind (thumbnail size)."""
        return {"backend": self.name, "descriptor": "grey_thumbnail_8x6"}

    def _seen(self, key, T_world_cam: np.ndarray, mem: Optional[OracleWindowMemory]) -> tuple[int, int]:
        """(samples seen by an anchor of ``mem``, valid samples) of the frame's surface points on a
        :attr:`GRID` of its ground-truth depth map (visible = in front of an anchor, inside its image and
        not behind the anchor's own surface: depth within 5 % of the anchor's depth map there)."""
        if mem is None:
            return 0, 0
        d = np.asarray(self.scene.depth[key], np.float64)
        H, W = d.shape[:2]
        gx, gy = self.GRID
        v, u = np.meshgrid(np.linspace(0, H - 1, gy).round().astype(int), np.linspace(0, W - 1, gx).round()
                           .astype(int), indexing="ij")
        z = d[v, u].reshape(-1)
        ok = np.isfinite(z) & (z > 0)
        K = self.scene.intrinsics(key)
        uv = np.stack([u.reshape(-1)[ok], v.reshape(-1)[ok]], 1).astype(np.float64)
        Pc = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(uv))], 1) * z[ok, None]
        Pw = Pc @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
        seen = np.zeros(len(Pw), bool)
        st = OracleWindowMemory.DEPTH_STRIDE
        for T_wa, Ka, (Ha, Wa), Da in zip(mem.anchor_T_world_cam, mem.anchor_K, mem.anchor_hw, mem.anchor_depth):
            Pa = (Pw - T_wa[:3, 3]) @ T_wa[:3, :3]
            za = Pa[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                ua = Ka[0, 0] * Pa[:, 0] / za + Ka[0, 2]
                va = Ka[1, 1] * Pa[:, 1] / za + Ka[1, 2]
            inside = (za > 1e-3) & (ua >= 0) & (ua < Wa) & (va >= 0) & (va < Ha)
            iu = np.clip(np.nan_to_num(ua / st).astype(int), 0, Da.shape[1] - 1)
            iv = np.clip(np.nan_to_num(va / st).astype(int), 0, Da.shape[0] - 1)
            dz = Da[iv, iu]
            with np.errstate(invalid="ignore"):
                seen |= inside & np.isfinite(dz) & (za <= 1.05 * dz + 1e-3)
        return int(seen.sum()), int(ok.sum())

    def export_window(self) -> OracleWindowMemory:
        """A copy of the current window's memory. Raises BackendError before any window."""
        m = self._current
        if m is None:
            raise BackendError("oracle: no window reconstructed yet")
        return OracleWindowMemory(m.window_id, m.scale, *(np.array(getattr(m, a)) for a in m._ARRAYS))

    def load_window(self, directory: str) -> OracleWindowMemory:
        """Read a memory written by :meth:`OracleWindowMemory.save`. Raises BackendError naming the folder
        and the problem (missing or unreadable file, another backend, bad shapes)."""
        try:
            with open(os.path.join(directory, "memory.json")) as fh:
                meta = json.load(fh)
            with np.load(os.path.join(directory, "memory.npz")) as z:
                arrs = {a: np.array(z[a]) for a in OracleWindowMemory._ARRAYS}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BackendError(f"oracle: cannot read window memory in {directory}: {type(e).__name__}: {e}") from e
        if meta.get("backend") != self.name:
            raise BackendError(f"oracle: window memory in {directory} is from backend {meta.get('backend')!r}")
        S = len(arrs["stamps_ns"])
        if (arrs["anchor_T_world_cam"].shape != (S, 4, 4) or arrs["anchor_K"].shape != (S, 3, 3)
                or arrs["T_world_window"].shape != (4, 4) or len(arrs["descriptors"]) != S
                or arrs["anchor_depth"].ndim != 3 or len(arrs["anchor_depth"]) != S):
            raise BackendError(f"oracle: window memory in {directory} has inconsistent array shapes")
        return OracleWindowMemory(int(meta["window_id"]), float(meta["scale"]), **arrs)

    def localize_in(self, memory: WindowMemory, frames: Sequence[Frame]) -> list[LocalizationResult]:
        """Noisy true pose of each frame in ``memory``'s window frame (its scale applied) when the memory's
        anchors see at least ``relocalize_min_inliers`` of the frame's surface grid samples (``inliers`` =
        that count); otherwise a failure. Raises BackendError for a memory of another backend."""
        self.calls["localize_in"] += 1
        if not isinstance(memory, OracleWindowMemory):
            raise BackendError(f"oracle: cannot localize in a {type(memory).__name__}")
        out = []
        for f in frames:
            g = self._gt(f)
            if g is None or g[0] in self.fail_relocalize:
                out.append(LocalizationResult(f.stamp_ns, f.index, None, reason="oracle: no ground truth"
                                              if g is None else "oracle: injected relocalization failure"))
                continue
            seen, valid = self._seen(g[0], g[1], memory)
            if seen < self.relocalize_min_inliers:
                out.append(LocalizationResult(f.stamp_ns, f.index, None, reason=f"oracle: window {memory.window_id} "
                                              f"sees {seen} of {valid} surface samples", inliers=seen))
                continue
            T = self._noisy_T_c0_c(memory.T_world_window, g[1], noisy=True)
            T[:3, 3] *= memory.scale
            out.append(LocalizationResult(f.stamp_ns, f.index, invert_transform(T)[:3, :],
                                          K=self.scene.intrinsics(g[0]) if f.K is None else f.K,
                                          confidence=self.confidence * seen / max(1, valid), inliers=int(seen)))
        return out

    def describe(self, frames: Sequence[Frame]) -> np.ndarray:
        """(N, 48) float32 :func:`thumbnail_descriptor` of each frame (plus ``descriptor_noise``), rows
        L2-normalised."""
        self.calls["describe"] += 1
        D = np.zeros((len(frames), 48), np.float32)
        for i, f in enumerate(frames):
            d = thumbnail_descriptor(f.image).astype(np.float64)
            if self.descriptor_noise > 0:
                d = d + self.rng.normal(0, self.descriptor_noise, d.shape)
            n = float(np.linalg.norm(d))
            D[i] = d / n if n > 1e-12 else d
        return D


def _texture(points: np.ndarray, cell: float = 0.25) -> np.ndarray:
    """Deterministic random-colour cells (edge ``cell`` m) plus a smooth shading: (..., 3) uint8."""
    ijk = np.floor(points / cell).astype(np.int64)
    h = (ijk[..., 0] * 73856093) ^ (ijk[..., 1] * 19349663) ^ (ijk[..., 2] * 83492791)
    cols = np.stack([(h >> 3) & 255, (h >> 11) & 255, (h >> 19) & 255], -1).astype(np.float64)
    shade = 0.75 + 0.25 * np.sin(3.0 * points[..., 0]) * np.cos(2.0 * points[..., 2])
    return np.clip(cols * shade[..., None], 0, 255).astype(np.uint8)


def render_box_room(T_world_cam: np.ndarray, K: np.ndarray, height: int, width: int,
                    half_extent=(3.0, 1.5, 3.0)) -> tuple[np.ndarray, np.ndarray]:
    """Analytic render of the inside of an axis-aligned box room centred at the origin.

    Args:
        T_world_cam: (4, 4) camera-to-world (camera inside the box; world units metres).
        K: (3, 3) intrinsics; height, width: image size (px).
        half_extent: half side lengths (m) along world x, y, z.
    Returns:
        (H, W) float32 z-depth (m), (H, W, 3) uint8 RGB (procedural texture on the walls).
    """
    K = check_K(K)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays_c = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    R, o = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d = rays_c @ R.T
    h = np.asarray(half_extent, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axes = (np.sign(d) * h - o) / d
    t_axes = np.where(np.abs(d) > 1e-12, t_axes, np.inf)
    t = t_axes.min(-1)  # exit distance along the z=1 ray = z-depth
    pts = o + t[..., None] * d
    return t.astype(np.float32), _texture(pts)


def make_box_room_sequence(n_frames: int = 60, width: int = 64, height: int = 48, fov_deg: float = 70.0,
                           radius: float = 1.0, arc_rad: float = 1.5 * np.pi, dt_s: float = 0.1,
                           start_stamp_ns: int = 1_000_000_000, half_extent=(3.0, 1.5, 3.0)):
    """A synthetic sequence with exact ground truth: a camera moving on a circle inside a textured box room.

    The world is y-down (like the camera), the camera looks roughly along its direction of motion with
    a slow yaw oscillation. Returns ``(frames, scene)``: a list of :class:`Frame` (index i, stamp
    ``start + i*dt``, K set) and the :class:`OracleScene` (depth, T_world_cam, K) keyed by index.
    """
    f = (width / 2.0) / np.tan(np.radians(fov_deg) / 2.0)
    K = np.array([[f, 0, (width - 1) / 2.0], [0, f, (height - 1) / 2.0], [0, 0, 1.0]])
    frames, depth, poses = [], {}, {}
    for i in range(n_frames):
        th = arc_rad * i / max(1, n_frames - 1)
        c = np.array([radius * np.cos(th), 0.15 * np.sin(2 * th), radius * np.sin(th)])
        yaw = th + np.pi / 2 + 0.3 * np.sin(3 * th)
        z = np.array([np.cos(yaw), 0.0, np.sin(yaw)])
        y = np.array([0.0, 1.0, 0.0])
        x = np.cross(y, z)
        T = np.eye(4)
        T[:3, :3] = np.stack([x, y, z], 1)
        T[:3, 3] = c
        d, img = render_box_room(T, K, height, width, half_extent)
        depth[i], poses[i] = d, T
        frames.append(Frame(stamp_ns=start_stamp_ns + int(round(i * dt_s * 1e9)), image=img, K=K.copy(),
                            frame_id="camera_optical_frame", index=i, source=f"frame_{i:05d}.png"))
    return frames, OracleScene(depth=depth, T_world_cam=poses, K=K)

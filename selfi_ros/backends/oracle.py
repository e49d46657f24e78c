"""Oracle backend: returns what a learned backend would, computed from ground truth plus controlled noise.

For tests and benchmarks of the engine (windows, chaining, scale, map) without any model. Given the true
per-frame depth, pose and intrinsics, a window is returned in its first anchor's camera frame (the VGGT /
SAIL-Recon convention) multiplied by a random per-window scale (learned models normalise scale per
window), with Gaussian pose noise and multiplicative depth noise; queries are localized in the current
window's frame with the same scale and fresh pose noise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
from scipy.spatial.transform import Rotation

from selfi_ros.geometry.camera import check_K, depth_to_points_cam
from selfi_ros.geometry.se3 import invert_transform
from selfi_ros.engine.backend import BackendBase, BackendError
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
    """

    name = "oracle"
    random_weights = False

    def __init__(self, scene: OracleScene, rot_noise_deg: float = 0.0, trans_noise_m: float = 0.0,
                 depth_noise: float = 0.0, scale_range: tuple = (0.5, 2.0), downsample: int = 1,
                 fail_windows: Sequence[int] = (), fail_frames: Sequence = (), confidence: float = 1.0,
                 key: str = "index", seed: int = 0):
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
        self.calls = {"reconstruct_window": 0, "localize": 0}
        self.reset()

    def reset(self) -> None:
        self._mem: Optional[tuple[int, float, np.ndarray]] = None  # (window id, scale, T_world_c0)

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
        depth = np.stack(deps)
        conf = np.isfinite(depth).astype(np.float32)
        return WindowReconstruction(
            window_id=window_id, stamps_ns=np.array([f.stamp_ns for f in anchors], np.int64),
            frame_indices=np.array([f.index for f in anchors], np.int64), extrinsics=np.stack(ext),
            intrinsics=np.stack(Ks), image_size_hw=tuple(depth.shape[1:3]), depth=depth, depth_conf=conf,
            points=np.stack(pts), points_conf=conf, colors=np.stack(cols).astype(np.uint8), backend=self.name,
            intrinsics_image=np.stack([self.scene.intrinsics(g[0]) for g in gts]))

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
            T = self._noisy_T_c0_c(T_w_c0, g[1], noisy=True)
            T[:3, 3] *= s
            out.append(LocalizationResult(f.stamp_ns, f.index, invert_transform(T)[:3, :],
                                          K=self.scene.intrinsics(g[0]) if f.K is None else f.K,
                                          confidence=self.confidence))
        return out


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

"""Selfi alignment inside the VGGT backend: anchor feature store, pose check and window refinement.

Selfi (Deng et al. 2025, arXiv 2512.08930) trains a small adapter on a frozen VGGT so that its per-pixel
features match across views (Sec. "feature alignment"), and uses the matches for classical geometry
(Sec. "applications"). Here they serve two purposes:

1. **Pose check** (:func:`check_query`): a query frame's aligned features are matched to the current
   window's anchors (mutual NN, :mod:`selfi_ros.alignment.matching`); the matched anchor pixels give 3D
   points from the anchors' point maps, and PnP + RANSAC (OpenCV, :mod:`selfi_ros.alignment.localizer`)
   gives a geometric pose that confirms or refutes SAIL-Recon's learned pose.
2. **Window refinement** (:func:`refine_window`): matches between a window's anchors feed a bundle
   adjustment (poses + one shared focal multiplier, :mod:`selfi_ros.alignment.bundle_adjustment`), then
   Selfi's per-frame affine depth-drift correction (:mod:`selfi_ros.alignment.depth_correction`) is fitted
   on the sparse points the adjustment moved and applied to the dense depths.

Everything runs on a grid downsampled by ``downsample`` (average-pooled, re-normalised features; pooled
point maps and depths; intrinsics mapped to the coarse pixel centres) so that the stored anchor features
stay small: ``S x C x (H/s) x (W/s)`` float16 (24 channels, 518x392 input, s = 2: 2.4 MB per anchor).

Conventions: extrinsics camera-from-window (3x4, OpenCV axes), K in pixels of the grid it is used with,
pixels (x, y) at pixel centres, lengths in the window's (VGGT-normalised) units.

:class:`SelfiAlignment` is the backend's alignment state (adapter, swaps, counters, the current window's
anchor store) and the two uses above as the backend calls them; the features come from the same aggregator
tokens as the SAIL-Recon passes (token hooks of :func:`selfi_ros.model.scene_memory.run_anchor_pass` /
:func:`~selfi_ros.model.scene_memory.query_pass`), so the model runs once per pass.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from selfi_ros.alignment.bundle_adjustment import problem_from_matches, robust_bundle_adjust
from selfi_ros.alignment.depth_correction import correct_depths
from selfi_ros.alignment.localizer import AnchorView, PnPResult, check_pose, localize_query
from selfi_ros.alignment.matching import match_features
from selfi_ros.backends.config import VGGTBackendConfig
from selfi_ros.engine.types import LocalizationResult
from selfi_ros.model.vggt import autocast_off

log = logging.getLogger(__name__)


def downsample_features(feat: torch.Tensor, s: int) -> torch.Tensor:
    """(N, C, H, W) per-pixel features -> (N, C, H//s, W//s) average-pooled and L2-normalised (float32)."""
    f = feat.float()
    if s > 1:
        f = F.avg_pool2d(f, s, s)
    return F.normalize(f, dim=1)


def downsample_K(K: np.ndarray, s: int) -> np.ndarray:
    """Intrinsics (..., 3, 3) of a full grid -> the grid average-pooled by ``s`` (coarse pixel i covers fine
    pixels s*i .. s*i+s-1, centre s*i + (s-1)/2)."""
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[..., 0, 0] /= s
    K2[..., 1, 1] /= s
    K2[..., 0, 1] /= s
    K2[..., 0, 2] = (K2[..., 0, 2] + 0.5) / s - 0.5
    K2[..., 1, 2] = (K2[..., 1, 2] + 0.5) / s - 0.5
    return K2


def pool_maps(x: np.ndarray, s: int) -> np.ndarray:
    """(N, H, W[, C]) float map -> (N, H//s, W//s[, C]) block means."""
    if s == 1:
        return np.asarray(x, np.float32)
    t = torch.from_numpy(np.asarray(x, np.float32))
    chan = t.ndim == 4
    t = t.permute(0, 3, 1, 2) if chan else t[:, None]
    t = F.avg_pool2d(t, s, s)
    t = t.permute(0, 2, 3, 1) if chan else t[:, 0]
    return t.numpy()


def unproject_depth(depth: np.ndarray, K: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    """Window-frame point maps from z-depth.

    Args:
        depth: (N, H, W) z-depth; K: (N, 3, 3) pixels of that grid; extrinsics: (N, 3, 4) camera-from-window.
    Returns:
        (N, H, W, 3) float32 points ``R^T (z K^-1 [x, y, 1] - t)`` (NaN where depth is not positive/finite).
    """
    N, H, W = depth.shape
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    pix = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3)
    out = np.empty((N, H, W, 3), np.float32)
    for i in range(N):
        d = depth[i].reshape(-1).astype(np.float64)
        d = np.where((d > 0) & np.isfinite(d), d, np.nan)
        Xc = (pix @ np.linalg.inv(K[i]).T) * d[:, None]
        R, t = extrinsics[i][:, :3], extrinsics[i][:, 3]
        out[i] = ((Xc - t) @ R).reshape(H, W, 3)
    return out


def camera_centres(extrinsics: np.ndarray) -> np.ndarray:
    """(N, 3, 4) camera-from-window -> (N, 3) camera centres in the window frame."""
    E = np.asarray(extrinsics, np.float64)
    return -np.einsum("nji,nj->ni", E[:, :, :3], E[:, :, 3])


@dataclass
class AnchorFeatureStore:
    """The current window's anchors as the pose check needs them (bounded: one window, coarse grid).

    Attributes:
        features: (S, C, h, w) float16 aligned features on the coarse grid.
        points: (S, h, w, 3) float32 window-frame points (from depth and the anchors' cameras).
        valid: (S, h, w) bool: finite, positive depth, confidence above the anchor's ``conf_quantile``.
        centres: (S, 3) anchor camera centres (window frame).
        scene_scale: median anchor depth (window units): the unit of the relative translation threshold.
        downsample: the grid factor s.
    """

    features: torch.Tensor
    points: np.ndarray
    valid: np.ndarray
    centres: np.ndarray
    scene_scale: float
    downsample: int

    @property
    def nbytes(self) -> int:
        return int(self.features.numel() * self.features.element_size() + self.points.nbytes + self.valid.nbytes)


def make_anchor_store(features: torch.Tensor, depth: np.ndarray, depth_conf: Optional[np.ndarray],
                      K: np.ndarray, extrinsics: np.ndarray, downsample: int,
                      conf_quantile: float = 0.25) -> AnchorFeatureStore:
    """Build the :class:`AnchorFeatureStore` from full-grid features (S, C, H, W), depth (S, H, W), depth
    confidence (S, H, W) or None, K (S, 3, 3) and extrinsics (S, 3, 4) (all on the network grid)."""
    s = int(downsample)
    f = downsample_features(features, s).to(torch.float16).cpu()
    Kd = downsample_K(K, s)
    dd = pool_maps(depth, s)
    pts = unproject_depth(dd, Kd, extrinsics)
    valid = np.isfinite(pts).all(-1) & (dd > 0)
    if depth_conf is not None:
        c = pool_maps(depth_conf, s)
        for i in range(len(c)):
            ok = c[i][c[i] > 0]
            thr = np.quantile(ok, conf_quantile) if ok.size else np.inf
            valid[i] &= c[i] >= thr
    d_ok = depth[np.isfinite(depth) & (depth > 0)]
    scale = float(np.median(d_ok)) if d_ok.size else 1.0
    return AnchorFeatureStore(f, pts, valid, camera_centres(extrinsics), scale, s)


@dataclass
class QueryCheck:
    """Outcome of the pose check for one query.

    Attributes:
        check: "ok" (PnP confirms the learned pose), "flagged" / "rejected" (disagree; the action depends on
            the mode), or "unverified" (PnP failed: too few matches / inliers).
        pnp: the :class:`~selfi_ros.alignment.localizer.PnPResult` (extrinsics camera-from-window).
        rot_err_deg, trans_err_rel: learned-vs-geometric rotation (deg) and centre distance / scene scale.
        reason: text for logs / failure reasons.
    """

    check: str
    pnp: PnPResult
    rot_err_deg: float = float("nan")
    trans_err_rel: float = float("nan")
    reason: str = ""


def check_query(query_features: torch.Tensor, K_net: np.ndarray, learned: np.ndarray,
                store: AnchorFeatureStore, max_rot_deg: float, max_rel_trans: float, num_anchors: int = 4,
                stride: int = 4, reproj_px: float = 3.0, min_inliers: int = 12) -> QueryCheck:
    """Geometric check of one learned query pose against the current window (see the module docstring).

    Args:
        query_features: (C, h, w) coarse-grid aligned features of the query.
        K_net: (3, 3) query intrinsics in full network pixels (mapped to the coarse grid here).
        learned: (3, 4) learned camera-from-window extrinsics (SAIL-Recon query pass).
        store: the window's anchors; matching uses the ``num_anchors`` anchors whose centres are nearest to
            the learned pose's centre (a learned pose far off picks poor anchors and fails PnP: unverified).
        max_rot_deg, max_rel_trans: thresholds (degrees; centre distance divided by ``store.scene_scale``).
        stride, reproj_px, min_inliers: matching grid step, RANSAC threshold and minimum inliers (coarse px).
    """
    c = camera_centres(learned[None])[0]
    order = np.argsort(np.linalg.norm(store.centres - c, axis=1))[:max(1, int(num_anchors))]
    views = [AnchorView(store.features[i].float(), store.points[i], store.valid[i]) for i in order]
    K = downsample_K(K_net, store.downsample)
    pnp = localize_query(query_features.float(), views, K, stride=stride, reproj_px=reproj_px,
                         min_inliers=min_inliers)
    if not pnp.success:
        return QueryCheck("unverified", pnp, reason=pnp.reason)
    pc = check_pose(learned, pnp.extrinsics, max_rot_deg, max_rel_trans * store.scene_scale)
    rel = pc.trans_err / max(store.scene_scale, 1e-12)
    return QueryCheck("ok" if pc.ok else "flagged", pnp, pc.rot_err_deg, rel, pc.reason)


@dataclass
class RefineOutcome:
    """Result of :func:`refine_window`.

    Attributes:
        applied: True when the refinement passed the bounds and was applied.
        extrinsics: (S, 3, 4) camera-from-window (refined, or the input when not applied).
        K: (S, 3, 3) full-grid intrinsics (focal scaled when refined).
        depth: (S, H, W) float32 dense depths (affine-corrected when applied).
        focal_scale: the shared focal multiplier (1.0 when not applied / not refined).
        max_rot_change_deg, max_rel_trans_change: largest pose change the BA proposed (deg; / scene scale).
        initial_rms, final_rms: BA reprojection RMS (coarse px).
        depth_scales, depth_shifts: per-frame affine depth corrections (identity where the fit failed).
        reason: why it was not applied ("" when applied).
        stats: match counts.
    """

    applied: bool
    extrinsics: np.ndarray
    K: np.ndarray
    depth: np.ndarray
    focal_scale: float = 1.0
    max_rot_change_deg: float = float("nan")
    max_rel_trans_change: float = float("nan")
    initial_rms: float = float("nan")
    final_rms: float = float("nan")
    depth_scales: list = field(default_factory=list)
    depth_shifts: list = field(default_factory=list)
    reason: str = ""
    stats: dict = field(default_factory=dict)


def refine_window(features: torch.Tensor, depth: np.ndarray, depth_valid: np.ndarray, K: np.ndarray,
                  extrinsics: np.ndarray, downsample: int = 2, pair_span: int = 2, stride: int = 2,
                  max_per_pair: int = 200, init_gate_px: float = 8.0, refine_focal: bool = True,
                  max_rot_deg: float = 5.0, max_rel_trans: float = 0.1, max_depth_change: float = 0.3,
                  max_nfev: int = 30) -> RefineOutcome:
    """Selfi window refinement: aligned-feature matches -> bundle adjustment -> affine depth correction.

    Args:
        features: (S, C, H, W) aligned features of the anchors on the full network grid.
        depth: (S, H, W) dense z-depth; depth_valid: (S, H, W) bool (trusted depth, image content).
        K: (S, 3, 3) intrinsics (full network pixels); extrinsics: (S, 3, 4) camera-from-window, anchor 0
            the window frame (held fixed by the BA, as is the scale: see ``bundle_adjust``).
        downsample: work grid factor; pair_span: anchor i is matched with i+1 .. i+pair_span.
        stride, max_per_pair, init_gate_px: matching grid step, match cap per pair, and the gate on a
            match's initial reprojection error (coarse px) before BA.
        refine_focal: refine one focal multiplier shared by all anchors (principal points fixed).
        max_rot_deg, max_rel_trans: bounds on every camera's change (degrees; centre shift / median depth);
            a BA proposing more, or ending with a larger RMS than it started with, is not applied.
        max_depth_change: bound on the median relative change of any frame's dense depth by the affine
            correction (a BA that drifted into a depth ambiguity rescales depths wholesale: not applied).
    Returns:
        :class:`RefineOutcome` (never raises for too few matches: ``applied=False`` with a reason).
    """
    S = len(extrinsics)
    E0 = np.asarray(extrinsics, np.float64)
    K0 = np.asarray(K, np.float64)
    d0 = np.asarray(depth, np.float32)
    keep_in = RefineOutcome(False, E0.copy(), K0.copy(), d0.copy())
    if S < 2:
        keep_in.reason = "fewer than 2 anchors"
        return keep_in
    s = int(downsample)
    f = downsample_features(features, s)
    dd = pool_maps(np.where(depth_valid, d0, 0.0), s)
    vd = pool_maps(depth_valid.astype(np.float32), s) >= 1.0
    dd = np.where(vd, dd, 0.0)
    Kd = downsample_K(K0, s)
    matches = {}
    for i in range(S):
        for j in range(i + 1, min(S, i + 1 + int(pair_span))):
            matches[(i, j)] = match_features(f[i], f[j], stride=stride, mask0=torch.from_numpy(vd[i]))
    stats: dict = {}
    try:
        prob = problem_from_matches(matches, dd, E0, Kd, max_init_reproj_px=init_gate_px,
                                    max_per_pair=max_per_pair, stats=stats)
    except ValueError as e:
        keep_in.reason = f"no usable matches: {e}"
        keep_in.stats = stats
        return keep_in
    if len(prob.points) < 20:
        keep_in.reason = f"too few matches for BA ({len(prob.points)})"
        keep_in.stats = stats
        return keep_in
    res, kept = robust_bundle_adjust(prob, reject_px=(4.0 * init_gate_px / 8.0, 2.0), refine_focal=refine_focal,
                                     max_nfev=max_nfev)
    E1 = res.extrinsics
    dR = E1[:, :, :3] @ np.swapaxes(E0[:, :, :3], 1, 2)
    rot = np.degrees(np.arccos(np.clip((np.trace(dR, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    d_ok = d0[depth_valid & (d0 > 0) & np.isfinite(d0)]
    scale = float(np.median(d_ok)) if d_ok.size else 1.0
    trans = np.linalg.norm(camera_centres(E1) - camera_centres(E0), axis=1) / max(scale, 1e-12)
    out = RefineOutcome(False, E0.copy(), K0.copy(), d0.copy(), float(res.focal_scale), float(rot.max()),
                        float(trans.max()), float(res.initial_rms), float(res.final_rms), stats=stats)
    if not (np.all(np.isfinite(E1)) and np.isfinite(res.final_rms)):
        out.reason = "non-finite BA result"
    elif rot.max() > max_rot_deg or trans.max() > max_rel_trans:
        out.reason = (f"BA change out of bounds (rotation {rot.max():.2f} deg > {max_rot_deg} or "
                      f"position {trans.max():.3f} > {max_rel_trans} of the scene depth)")
    elif res.final_rms > res.initial_rms:
        out.reason = f"BA did not reduce the error ({res.initial_rms:.3f} -> {res.final_rms:.3f} px)"
    if out.reason:
        return out
    obs = kept[prob.point_idx]
    # Selfi's depth-drift correction: per-frame affine map fitted on the sparse points the BA moved
    # (coarse-grid pixels index the coarse depth; the affine map is resolution-independent)
    _, fits = correct_depths(dd, E1, res.points, prob.cam_idx[obs], prob.point_idx[obs], prob.uv[obs])
    depth1 = np.stack([fit.apply(d0[i]) for i, fit in enumerate(fits)]).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = [np.nanmedian(np.abs(depth1[i] - d0[i])[depth_valid[i]] / d0[i][depth_valid[i]])
               if depth_valid[i].any() else 0.0 for i in range(S)]
    if max(rel) > max_depth_change:
        out.reason = f"depth correction out of bounds (median change {max(rel):.3f} > {max_depth_change})"
        return out
    K1 = K0.copy()
    K1[:, 0, 0] *= res.focal_scale
    K1[:, 1, 1] *= res.focal_scale
    out.applied, out.extrinsics, out.K, out.depth = True, E1.copy(), K1, depth1
    out.depth_scales = [fit.scale for fit in fits]
    out.depth_shifts = [fit.shift for fit in fits]
    return out


# ------------------------------------------------------------------------------------ backend state
@dataclass
class AlignmentCounters:
    """Counters of the Selfi alignment (same names and meanings as in
    :class:`~selfi_ros.engine.status.BackendStatus`)."""

    pose_checks: int = 0
    pose_check_ok: int = 0
    pose_check_flagged: int = 0
    pose_check_rejected: int = 0
    pose_check_unverified: int = 0
    refine_applied: int = 0
    refine_rejected: int = 0
    adapter_swaps: int = 0


def adapter_features(adapter, tokens: List[Optional[torch.Tensor]], images5: torch.Tensor, psi: int) -> torch.Tensor:
    """Selfi adapter features (B*S, C, H, W) float32 from aggregator outputs (list per layer of (B, S, P, 2C))
    and images (B, S, 3, H, W); only the adapter's layers are converted to float32, autocast off."""
    need = set(adapter.cfg.layers)
    toks = [t.float() if (t is not None and i in need) else None for i, t in enumerate(tokens)]
    with autocast_off(images5.device.type):
        f = adapter(toks, images5.float(), psi)
    return f.reshape(-1, *f.shape[2:])


class SelfiAlignment:
    """The VGGT backend's Selfi alignment: adapter (swappable), pose check and window refinement.

    Args:
        cfg: the backend's validated :class:`~selfi_ros.backends.config.VGGTBackendConfig` (``adapter`` set).
        model: the backbone (:class:`~selfi_ros.model.vggt.VGGT`); device: its device.
    Raises:
        ValueError: the adapter does not fit the backbone (width, layers; from ``load_adapter`` too).
    """

    def __init__(self, cfg: VGGTBackendConfig, model, device):
        from selfi_ros.alignment.adapter import load_adapter

        self.device = device
        self.adapter = load_adapter(cfg.adapter, device=device, expect_dim_in=2 * model.cfg.embed_dim)
        missing = [i for i in self.adapter.cfg.layers if not 0 <= i < model.cfg.depth]
        if missing:
            raise ValueError(f"adapter reads aggregator layers {missing} that the backbone (depth "
                             f"{model.cfg.depth}) does not have")
        log.info("VGGTBackend: Selfi adapter %s (layers %s, %d channels)", cfg.adapter,
                 list(self.adapter.cfg.layers), self.adapter.cfg.out_dim)
        self.pose_check = cfg.effective_pose_check()
        self.max_rot_deg = float(cfg.pose_check_max_rot_deg)
        self.max_rel_trans = float(cfg.pose_check_max_rel_trans)
        self.num_anchors = int(cfg.pose_check_anchors)
        self.downsample = int(cfg.feature_downsample)
        self.refine = bool(cfg.refine_window)
        self.refine_max_rot_deg = float(cfg.refine_max_rot_deg)
        self.refine_max_rel_trans = float(cfg.refine_max_rel_trans)
        self.counts = AlignmentCounters()
        self.anchor_store: Optional[AnchorFeatureStore] = None
        self.last_refinement: Optional[RefineOutcome] = None
        self._pending = None
        self._lock = threading.Lock()

    @property
    def wants_anchor_features(self) -> bool:
        """Anchor features are computed only when the pose check or the refinement uses them."""
        return self.pose_check != "off" or self.refine

    @property
    def keep_layers(self) -> list:
        """Aggregator layers the adapter reads."""
        return sorted(self.adapter.cfg.layers)

    def anchor_hook(self, tokens, images5: torch.Tensor, psi: int) -> torch.Tensor:
        """Token hook of the anchor pass: full-grid features (S, C, H, W) float32."""
        return adapter_features(self.adapter, tokens, images5, psi)

    def query_hook(self, tokens, images5: torch.Tensor, psi: int) -> torch.Tensor:
        """Token hook of the query pass: coarse-grid features (n, C, H/s, W/s) float32 on the CPU."""
        return downsample_features(adapter_features(self.adapter, tokens, images5, psi), self.downsample).cpu()

    # ------------------------------------------------------------------------------ adapter swaps
    def set_adapter(self, adapter) -> None:
        """Queue ``adapter`` (thread-safe); :meth:`apply_pending` swaps it in at the next window.

        Raises:
            ValueError: its token width differs from the current adapter's.
        """
        if adapter.cfg.dim_in != self.adapter.cfg.dim_in:
            raise ValueError(f"set_adapter: adapter token width {adapter.cfg.dim_in} != {self.adapter.cfg.dim_in}")
        with self._lock:
            self._pending = adapter

    def apply_pending(self, online=None) -> None:
        """Swap in the queued adapter, or the online trainer's new one (``online``: an
        :class:`~selfi_ros.backends.vggt_online.OnlineAdapterHook` or None); counted in ``adapter_swaps``."""
        with self._lock:
            if online is not None:
                new = online.take_adapter()
                if new is not None:
                    self._pending = new
            new, self._pending = self._pending, None
            if new is None or new is self.adapter:
                return
            self.adapter = new.to(self.device).eval()
            self.counts.adapter_swaps += 1
        log.info("VGGTBackend: adapter swapped (swap %d)", self.counts.adapter_swaps)

    # ------------------------------------------------------------------------------ window / queries
    def process_window(self, window_id: int, feats: torch.Tensor, depth: np.ndarray, dconf: Optional[np.ndarray],
                       Ks: np.ndarray, extr: np.ndarray, pts: Optional[np.ndarray], pconf: Optional[np.ndarray]):
        """Refine the window (when configured) and keep its anchors for the pose check.

        Args: full network grid: feats (S, C, H, W), depth / dconf (S, H, W), Ks (S, 3, 3) px, extr (S, 3, 4)
            camera-from-window, pts (S, H, W, 3) / pconf (S, H, W) or None (``pts``/``pconf`` modified in place).
        Returns:
            (extrinsics, K, depth, points, points_conf): refined and recomputed when the refinement was
            applied, else the inputs.
        """
        valid = np.isfinite(depth) & (depth > 0) & ((dconf > 0) if dconf is not None else True)
        if self.refine:
            extr, Ks, depth, pts = self._refine(window_id, feats, depth, valid, Ks, extr, pts)
            if pts is not None:  # recomputed from depth: no point where the depth is not valid
                bad = ~np.isfinite(pts).all(-1)
                pts[bad] = 0.0
                if pconf is not None:
                    pconf[bad] = 0.0
        self.anchor_store = make_anchor_store(feats, depth, dconf, Ks, extr, self.downsample)
        return extr, Ks, depth, pts, pconf

    def _refine(self, window_id, feats, depth, valid, Ks, extr, pts):
        r = refine_window(feats, depth, valid, Ks, extr, downsample=self.downsample,
                          max_rot_deg=self.refine_max_rot_deg, max_rel_trans=self.refine_max_rel_trans)
        self.last_refinement = r
        if not r.applied:
            self.counts.refine_rejected += 1
            log.info("VGGTBackend: window %d refinement not applied: %s", window_id, r.reason)
            return extr, Ks, depth, pts
        self.counts.refine_applied += 1
        log.info("VGGTBackend: window %d refined: BA RMS %.2f -> %.2f px, focal x%.4f, max change %.2f deg / "
                 "%.3f depth", window_id, r.initial_rms, r.final_rms, r.focal_scale, r.max_rot_change_deg,
                 r.max_rel_trans_change)
        return r.extrinsics, r.K, r.depth, (unproject_depth(r.depth, r.K, r.extrinsics) if pts is not None else None)

    def check_results(self, results: List[LocalizationResult], feats: torch.Tensor,
                      Ks_net: List[Optional[np.ndarray]], store: Optional[AnchorFeatureStore] = None) -> None:
        """Pose check of every successful result against ``store`` (default: the current anchors; in place):
        ``check``, ``geometric_extrinsics``, ``inliers`` (the PnP inliers when the check is "ok", else 0) and, for
        a disagreement, ``reason`` (and, in "reject" mode, a failure)."""
        store = self.anchor_store if store is None else store
        for i, r in enumerate(results):
            if r.extrinsics is None or Ks_net[i] is None:
                continue
            c = check_query(feats[i], Ks_net[i], r.extrinsics, store, self.max_rot_deg, self.max_rel_trans,
                            num_anchors=self.num_anchors)
            self.counts.pose_checks += 1
            r.geometric_extrinsics = c.pnp.extrinsics
            r.inliers = int(c.pnp.num_inliers) if c.check == "ok" else 0
            if c.check in ("ok", "unverified"):
                r.check = c.check
                if c.check == "ok":
                    self.counts.pose_check_ok += 1
                else:
                    self.counts.pose_check_unverified += 1
                continue
            msg = (f"pose check: learned pose differs from the PnP pose ({c.reason}; "
                   f"{int(c.pnp.num_inliers)} inliers)")
            if self.pose_check == "reject":
                r.check = "rejected"
                self.counts.pose_check_rejected += 1
                log.warning("VGGTBackend: frame %d rejected: %s", r.frame_index, msg)
                r.extrinsics, r.confidence, r.reason = None, 0.0, msg
            else:
                r.check = "flagged"
                self.counts.pose_check_flagged += 1
                log.warning("VGGTBackend: frame %d flagged: %s", r.frame_index, msg)
                r.reason = msg

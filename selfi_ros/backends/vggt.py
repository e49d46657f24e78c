"""VGGT / SAIL-Recon backend: anchors reconstructed jointly, other frames localized against a scene memory.

``reconstruct_window`` = SAIL-Recon anchor pass (one joint VGGT forward over the anchors that also caches
per-layer anchor K/V, :func:`selfi_ros.model.scene_memory.run_anchor_pass`) + camera / depth / point heads.
``localize`` = SAIL-Recon query pass (:func:`selfi_ros.model.scene_memory.query_pass`), in batches of
``query_batch_size``; each query sees only the anchors and itself.

Frames and units: the window frame is the first anchor's camera (OpenCV axes), up to VGGT's normalised
scale. ``WindowReconstruction.intrinsics`` are in pixels of its depth / point maps (the network input
grid, ``image_size_hw``); ``LocalizationResult.K`` is mapped back to the original image's pixels through
the preprocessing metadata (crop / pad / resize undone).

Selfi alignment (optional, ``adapter=``; Selfi, arXiv 2512.08930, Sec. "applications"): a trained feature
adapter (``selfi-ros train-adapter``) turns the aggregator layers of both passes into aligned per-pixel
features. The backend keeps the current window's anchor features (coarse grid, float16) and point maps
and, per query, matches the query to the nearest anchors, solves PnP + RANSAC and compares the geometric
pose with the learned one (``pose_check``: "flag" keeps a disagreeing pose and marks it, "reject" turns it
into a failure with reason "pose check: ..."; counted in :attr:`VGGTBackend.alignment_counts`). With
``refine_window`` the anchors' poses (and a shared focal) are refined by bundle adjustment on anchor-to-
anchor matches and the dense depths corrected by Selfi's affine depth-drift fit
(:mod:`selfi_ros.backends.vggt_alignment`).

Weights: SAIL-Recon (``HKUST-SAIL/SAIL-Recon``) gives trained relocalisation blocks; plain VGGT weights
(``facebook/VGGT-1B``) also work, with the anchors' own global-attention K/V (see
:mod:`selfi_ros.model.scene_memory`). Without weights construction fails with instructions, unless
``allow_random_weights=True`` (plumbing only: loud warning, every output flagged ``random_weights``).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from selfi_ros.model.config import VGGTConfig
from selfi_ros.model.errors import ModelOutOfMemoryError
from selfi_ros.model.loading import load_model
from selfi_ros.model.preprocessing import preprocess_images
from selfi_ros.model.scene_memory import (SceneMemory, _cat_results, anchor_pass, query_aggregate,
                                   query_heads, query_pass, run_anchor_pass)
from selfi_ros.model.vggt import autocast_dtype
from selfi_ros.engine.backend import BackendBase, BackendError
from selfi_ros.engine.types import Frame, LocalizationResult, WindowReconstruction
from selfi_ros.backends.memory_store import SceneMemoryStore
from selfi_ros.backends import vggt_alignment as va

log = logging.getLogger(__name__)

POSE_CHECK_MODES = ("auto", "off", "flag", "reject")
_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def _confidence(conf: Optional[torch.Tensor]) -> float:
    """Map VGGT's "expp1" confidences (>= 1) to [0, 1): 1 - 1 / median(conf)."""
    if conf is None:
        return 0.5
    c = float(torch.nan_to_num(conf.float(), nan=1.0).median())
    return float(np.clip(1.0 - 1.0 / max(c, 1.0), 0.0, 1.0))



def _oom_message(e: BaseException, what: str, images: torch.Tensor) -> str:
    """Message of a GPU out-of-memory error: frames, resolution and what to lower (see model.errors)."""
    if isinstance(e, ModelOutOfMemoryError):
        return str(e)
    return str(ModelOutOfMemoryError(what, images.shape[0], images.shape[-2], images.shape[-1], e))

class VGGTBackend(BackendBase):
    """Backend on VGGT / SAIL-Recon. Implements :class:`~selfi_ros.engine.backend.Backend`.

    Args:
        checkpoint: local .pt / .safetensors, a directory, or a Hugging Face repo id
            (``HKUST-SAIL/SAIL-Recon``, ``facebook/VGGT-1B``, ``facebook/VGGT-1B-Commercial``); None only
            with ``allow_random_weights``.
        allow_random_weights: with no checkpoint, build an untrained model (plumbing only).
        model_config: "full" (VGGT-1B shape; SAIL layout when random) or "tiny" (random plumbing / CPU tests).
        device: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
        dtype: "auto" (official autocast: bf16 on compute capability >= 8, fp16 below; fp32 on CPU),
            "fp32" (no autocast), "bf16" or "fp16" (forced autocast dtype on CUDA).
        tokens_per_anchor: "all" (exact) or patch tokens kept per anchor and layer (SAIL-Recon: 300).
        query_batch_size: queries per forward in ``localize``.
        image_width: network input width (518 for the trained model; smaller multiples of 14 for CPU).
        preprocess_mode: "crop" or "pad" (official VGGT preprocessing).
        kv_source: "auto", "global_reloc_blocks" (SAIL) or "global_blocks" (plain VGGT).
        localize_depth / localize_points: also return per-query depth / point maps (costs DPT passes).
        memory_device: where the scene memory lives (default: the model's device).
        seed: seed for the anchor token subsets.
        memory_store_dir: "" (default, off) or a folder where a window's scene memory is written when a
            new window evicts it (:class:`~selfi_ros.backends.memory_store.SceneMemoryStore`), for
            relocalization later (:meth:`localize_in_window`). The store belongs to one map: it is
            emptied when the backend is built and on :meth:`reset` (window ids start again at 0).
        memory_store_windows: bound on the stored windows (oldest deleted first; >= 1).
        torch_threads: torch intra-op CPU threads for this process (0 = leave torch's default, one per
            core). On small or shared CPUs 1 is faster and far steadier (benchmarks/results/query_cpu.md).
        adapter: path to a Selfi adapter (``adapter.safetensors`` from ``selfi-ros train-adapter``) or
            None; loaded strictly (keys, shapes, backbone width).
        pose_check: "auto" ("flag" with an adapter, "off" without), "off", "flag" or "reject" (the latter
            two need an adapter).
        pose_check_max_rot_deg: rotation disagreement threshold (degrees).
        pose_check_max_rel_trans: camera-centre disagreement threshold as a fraction of the window's median
            anchor depth (VGGT's scale is normalised, so an absolute threshold would mean nothing).
        pose_check_anchors: anchors matched per query (those nearest the learned pose).
        feature_downsample: grid factor for stored anchor features, matching and PnP / BA (>= 1).
        refine_window: bundle-adjust each window's anchors on aligned-feature matches and correct the dense
            depths (needs an adapter); the window's ``points`` are then recomputed from the corrected
            depths and refined cameras.
        refine_max_rot_deg, refine_max_rel_trans: bounds on the BA's pose change per anchor (degrees;
            centre shift / median depth); a refinement outside them is not applied (counted).

    Memory: only the current window's scene memory is held in RAM; reconstructing a new window releases
    the previous one (after writing it to the store when one is configured), so RAM does not grow with the
    length of the run.
    """

    name = "vggt"

    def __init__(self, checkpoint: Union[None, str] = None, allow_random_weights: bool = False,
                 model_config: str = "full", device: str = "auto", dtype: str = "auto",
                 tokens_per_anchor: Union[str, int] = "all", query_batch_size: int = 8, image_width: int = 518,
                 preprocess_mode: str = "crop", kv_source: str = "auto", localize_depth: bool = True,
                 localize_points: bool = False, memory_device: Optional[str] = None, seed: int = 0,
                 memory_store_dir: str = "", memory_store_windows: int = 8, torch_threads: int = 0,
                 adapter: Optional[str] = None, pose_check: str = "auto", pose_check_max_rot_deg: float = 5.0,
                 pose_check_max_rel_trans: float = 0.1, pose_check_anchors: int = 4, feature_downsample: int = 2,
                 refine_window: bool = False, refine_max_rot_deg: float = 5.0, refine_max_rel_trans: float = 0.1):
        if model_config not in ("full", "tiny"):
            raise ValueError(f"model_config must be 'full' or 'tiny', got {model_config!r}")
        if preprocess_mode not in ("crop", "pad"):
            raise ValueError(f"preprocess_mode must be 'crop' or 'pad', got {preprocess_mode!r}")
        if image_width % 14 or image_width < 14:
            raise ValueError(f"image_width must be a positive multiple of 14, got {image_width}")
        if int(query_batch_size) < 1:
            raise ValueError(f"query_batch_size must be >= 1, got {query_batch_size}")
        if dtype not in ("auto", "fp32", "float32", *_DTYPES):
            raise ValueError(f"dtype must be auto, fp32, bf16 or fp16, got {dtype!r}")
        if int(torch_threads) < 0:
            raise ValueError(f"torch_threads must be >= 0, got {torch_threads}")
        if pose_check not in POSE_CHECK_MODES:
            raise ValueError(f"pose_check must be one of {', '.join(POSE_CHECK_MODES)}, got {pose_check!r}")
        if not adapter and (pose_check in ("flag", "reject") or refine_window):
            raise ValueError(f"pose_check={pose_check!r} / refine_window={refine_window} need an adapter "
                             "(adapter=path/to/adapter.safetensors, from `selfi-ros train-adapter`)")
        if int(feature_downsample) < 1 or int(pose_check_anchors) < 1:
            raise ValueError("feature_downsample and pose_check_anchors must be >= 1")
        if int(torch_threads) > 0:
            torch.set_num_threads(int(torch_threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if model_config == "tiny":
            cfg = VGGTConfig.tiny(sail_reloc=True)
        else:
            cfg = VGGTConfig.sail() if checkpoint is None else None
        self.model = load_model(checkpoint, config=cfg, device=self.device,
                                random_weights=checkpoint is None and allow_random_weights)
        self.random_weights = bool(self.model.random_weights)
        if self.random_weights:
            log.warning("VGGTBackend: RANDOM WEIGHTS - plumbing only; poses and maps are meaningless")
        self.amp_dtype = (None if dtype in ("fp32", "float32") or self.device.type != "cuda"
                          else autocast_dtype(self.device) if dtype == "auto" else _DTYPES[dtype])
        self.tokens_per_anchor = tokens_per_anchor
        self.query_batch_size = int(query_batch_size)
        self.image_width = int(image_width)
        self.preprocess_mode = preprocess_mode
        self.kv_source = kv_source
        self.localize_depth = localize_depth
        self.localize_points = localize_points
        self.memory_device = memory_device
        self.seed = int(seed)
        self._memory: Optional[SceneMemory] = None
        self._window_id: Optional[int] = None
        self._anchor_stamps: list[int] = []
        self.store: Optional[SceneMemoryStore] = (SceneMemoryStore(memory_store_dir, memory_store_windows)
                                                  if memory_store_dir else None)
        self.store_failures = 0
        if self.store is not None:
            n = self.store.clear()
            if n:
                log.info("VGGTBackend: removed %d scene memories of an earlier map from %s", n, memory_store_dir)
        self._fallback_K_count = 0
        # --- Selfi alignment
        self.adapter = None
        self.adapter_path = str(adapter) if adapter else ""
        if adapter:
            from selfi_ros.alignment.adapter import load_adapter

            self.adapter = load_adapter(adapter, device=self.device, expect_dim_in=2 * self.model.cfg.embed_dim)
            missing = [i for i in self.adapter.cfg.layers if not 0 <= i < self.model.cfg.depth]
            if missing:
                raise ValueError(f"adapter reads aggregator layers {missing} that the backbone (depth "
                                 f"{self.model.cfg.depth}) does not have")
            log.info("VGGTBackend: Selfi adapter %s (layers %s, %d channels)", adapter,
                     list(self.adapter.cfg.layers), self.adapter.cfg.out_dim)
        self.pose_check = ("flag" if adapter else "off") if pose_check == "auto" else pose_check
        self.pose_check_max_rot_deg = float(pose_check_max_rot_deg)
        self.pose_check_max_rel_trans = float(pose_check_max_rel_trans)
        self.pose_check_anchors = int(pose_check_anchors)
        self.feature_downsample = int(feature_downsample)
        self.refine_window = bool(refine_window)
        self.refine_max_rot_deg = float(refine_max_rot_deg)
        self.refine_max_rel_trans = float(refine_max_rel_trans)
        self._anchor_store: Optional[va.AnchorFeatureStore] = None
        self._pending_adapter = None
        self._adapter_lock = threading.Lock()
        self.alignment_counts: Dict[str, int] = dict(
            pose_checks=0, pose_check_ok=0, pose_check_flagged=0, pose_check_rejected=0,
            pose_check_unverified=0, refine_applied=0, refine_rejected=0, adapter_swaps=0)
        self.last_refinement: Optional[va.RefineOutcome] = None

    # ----------------------------------------------------------------------------------------------
    @property
    def memory(self) -> Optional[SceneMemory]:
        """The current scene memory (None before the first window)."""
        return self._memory

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the current scene memory (0 before the first window)."""
        return 0 if self._memory is None else int(self._memory.nbytes)

    def _amp(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _preprocess(self, frames: Sequence[Frame]):
        return preprocess_images([f.image for f in frames], mode=self.preprocess_mode, target=self.image_width)

    def _sanitize_K(self, K: np.ndarray, hw) -> Optional[np.ndarray]:
        """K if finite with positive focal lengths; random weights get a 60-degree-FoV stand-in; else None."""
        if np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0:
            return K
        if self.random_weights:
            self._fallback_K_count += 1
            H, W = hw
            f = (W / 2.0) / np.tan(np.radians(30.0))
            return np.array([[f, 0.0, W / 2.0], [0.0, f, H / 2.0], [0.0, 0.0, 1.0]])
        return None

    # ----------------------------------------------------------------------------------------------
    def reconstruct_window(self, window_id: int, anchors: Sequence[Frame]) -> WindowReconstruction:
        """Anchor pass + heads over ``anchors`` (first = window frame); becomes the current scene memory.

        Raises:
            BackendError: no anchors, or non-finite cameras (the previous memory stays valid).
        """
        if len(anchors) == 0:
            raise BackendError("reconstruct_window needs at least one anchor frame")
        images, metas = self._preprocess(anchors)
        self._apply_pending_adapter()
        feats = None
        try:
            if self.adapter is None or (self.pose_check == "off" and not self.refine_window):
                with self._amp():
                    memory, out = run_anchor_pass(self.model, images, self.tokens_per_anchor, seed=self.seed,
                                                  kv_source=self.kv_source, memory_device=self.memory_device,
                                                  autocast=False)
            else:
                memory, out, feats = self._anchor_pass_aligned(images)
        except (ModelOutOfMemoryError, torch.cuda.OutOfMemoryError) as e:
            raise BackendError(_oom_message(e, "reconstructing the anchor window of", images)) from e
        H, W = images.shape[-2:]
        extr = out.extrinsics()[0].double().cpu().numpy()
        Ks = out.intrinsics()[0].double().cpu().numpy()
        if not np.all(np.isfinite(extr)):
            raise BackendError(f"window {window_id}: non-finite camera extrinsics")
        Ks_ok = []
        for i, K in enumerate(Ks):
            K2 = self._sanitize_K(K, (H, W))
            if K2 is None:
                raise BackendError(f"window {window_id}: invalid intrinsics for anchor {i}: {K.tolist()}")
            Ks_ok.append(K2)
        depth = out.depth[0, ..., 0].float().cpu().numpy() if out.depth is not None else None
        dconf = out.depth_conf[0].float().cpu().numpy() if out.depth_conf is not None else None
        pts = out.world_points[0].float().cpu().numpy() if out.world_points is not None else None
        pconf = out.world_points_conf[0].float().cpu().numpy() if out.world_points_conf is not None else None
        colors = (images.permute(0, 2, 3, 1).clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
        for i, m in enumerate(metas):  # padding carries no image content: zero confidence there
            top, left, bottom, right = m.valid_region_net()
            for c in (dconf, pconf):
                if c is not None:
                    keep = np.zeros(c.shape[1:], bool)
                    keep[top:bottom, left:right] = True
                    c[i][~keep] = 0.0
        Ks_net = np.stack(Ks_ok)
        if feats is not None and depth is not None:
            valid = np.isfinite(depth) & (depth > 0) & ((dconf > 0) if dconf is not None else True)
            if self.refine_window:
                extr, Ks_net, depth, pts = self._refine(window_id, feats, depth, valid, Ks_net, extr, pts)
                if pts is not None:  # recomputed from depth: no point where the depth is not valid
                    bad = ~np.isfinite(pts).all(-1)
                    pts[bad] = 0.0
                    if pconf is not None:
                        pconf[bad] = 0.0
            self._anchor_store = va.make_anchor_store(feats, depth, dconf, Ks_net, extr, self.feature_downsample)
        else:
            self._anchor_store = None
        self._evict()
        self._memory = memory
        self._window_id = int(window_id)
        self._anchor_stamps = [int(f.stamp_ns) for f in anchors]
        return WindowReconstruction(
            window_id=int(window_id),
            stamps_ns=np.array([f.stamp_ns for f in anchors], dtype=np.int64),
            frame_indices=np.array([f.index for f in anchors], dtype=np.int64),
            extrinsics=extr, intrinsics=Ks_net, image_size_hw=(int(H), int(W)),
            intrinsics_image=np.stack([m.K_net_to_orig(K) for m, K in zip(metas, Ks_net)]),
            depth=depth, depth_conf=dconf, points=pts, points_conf=pconf, colors=colors,
            backend=self.name, random_weights=self.random_weights)

    # ---------------------------------------------------------------------------- Selfi alignment
    def set_adapter(self, adapter) -> None:
        """Swap in another adapter (e.g. from online training; thread-safe). It takes effect at the next
        :meth:`reconstruct_window`, so that anchors and queries of one window always share an adapter.

        Raises:
            ValueError: no adapter was configured at construction, or the adapter's token width differs.
        """
        if self.adapter is None:
            raise ValueError("set_adapter: this backend was built without an adapter")
        if adapter.cfg.dim_in != self.adapter.cfg.dim_in:
            raise ValueError(f"set_adapter: adapter token width {adapter.cfg.dim_in} != {self.adapter.cfg.dim_in}")
        with self._adapter_lock:
            self._pending_adapter = adapter

    def _apply_pending_adapter(self) -> None:
        with self._adapter_lock:
            new, self._pending_adapter = self._pending_adapter, None
        if new is not None and new is not self.adapter:
            self.adapter = new.to(self.device).eval()
            self.alignment_counts["adapter_swaps"] += 1
            log.info("VGGTBackend: adapter swapped (swap %d)", self.alignment_counts["adapter_swaps"])

    def _adapter_features(self, outputs, images5: torch.Tensor, psi: int) -> torch.Tensor:
        """Adapter features (B*S, C, H, W) float32 from aggregator outputs (list of (B, S, P, 2C)) and
        images (B, S, 3, H, W); only the adapter's layers are converted to float32."""
        need = set(self.adapter.cfg.layers)
        toks = [t.float() if (t is not None and i in need) else None for i, t in enumerate(outputs)]
        dev = images5.device.type
        with torch.autocast(device_type=dev, enabled=False) if dev in ("cuda", "cpu") else contextlib.nullcontext():
            f = self.adapter(toks, images5.float(), psi)
        return f.reshape(-1, *f.shape[2:])

    def _keep_layers(self) -> list:
        return sorted(set(self.model.aggregator._resolve_keep(None)) | set(self.adapter.cfg.layers))

    def _anchor_pass_aligned(self, images: torch.Tensor):
        """:func:`~selfi_ros.model.scene_memory.run_anchor_pass` (same memory, same heads, same seed) that
        also keeps the adapter's aggregator layers and returns the anchors' aligned features
        (S, C, H, W) float32 (backend-side: the model code is unchanged)."""
        device = next(self.model.parameters()).device
        images5 = images.unsqueeze(0).to(device)
        gen = torch.Generator().manual_seed(self.seed)
        with torch.inference_mode():
            with self._amp():
                memory, outs, psi = anchor_pass(self.model, images5, self.tokens_per_anchor, gen, self.kv_source,
                                                self.memory_device, None, keep_layers=self._keep_layers())
            out = self.model.run_heads(outs, images5, psi)
            feats = self._adapter_features(outs, images5, psi)
        return memory, out, feats

    def _query_pass_aligned(self, memory: SceneMemory, images: torch.Tensor):
        """:func:`~selfi_ros.model.scene_memory.query_pass` that also returns the queries' aligned features
        on the coarse grid (S_q, C, H/s, W/s) float32."""
        device = next(self.model.parameters()).device
        images = images.to(device)
        parts, feats = [], []
        keep = self._keep_layers()
        for b0 in range(0, images.shape[0], self.query_batch_size):
            chunk = images[b0:b0 + self.query_batch_size]
            with torch.inference_mode():
                with self._amp():
                    outs, psi = query_aggregate(self.model, memory, chunk, keep_layers=keep)
                parts.append(query_heads(self.model, memory, outs, chunk, psi, self.localize_depth,
                                         self.localize_points))
                f = self._adapter_features(outs, chunk.unsqueeze(1), psi)
                feats.append(va.downsample_features(f, self.feature_downsample).cpu())
        return _cat_results(parts), torch.cat(feats)

    def _refine(self, window_id, feats, depth, valid, Ks, extr, pts):
        """Selfi window refinement (see :func:`~selfi_ros.backends.vggt_alignment.refine_window`);
        returns (extrinsics, K, depth, points), unchanged when the refinement is not applied."""
        r = va.refine_window(feats, depth, valid, Ks, extr, downsample=self.feature_downsample,
                             max_rot_deg=self.refine_max_rot_deg, max_rel_trans=self.refine_max_rel_trans)
        self.last_refinement = r
        if not r.applied:
            self.alignment_counts["refine_rejected"] += 1
            log.info("VGGTBackend: window %d refinement not applied: %s", window_id, r.reason)
            return extr, Ks, depth, pts
        self.alignment_counts["refine_applied"] += 1
        log.info("VGGTBackend: window %d refined: BA RMS %.2f -> %.2f px, focal x%.4f, max change %.2f deg / "
                 "%.3f depth", window_id, r.initial_rms, r.final_rms, r.focal_scale, r.max_rot_change_deg,
                 r.max_rel_trans_change)
        return r.extrinsics, r.K, r.depth, (va.unproject_depth(r.depth, r.K, r.extrinsics) if pts is not None else None)

    def _check_results(self, results: List[LocalizationResult], feats: torch.Tensor,
                       Ks_net: List[Optional[np.ndarray]]) -> None:
        """Pose check of every successful result against the current anchors (in place)."""
        store = self._anchor_store
        for i, r in enumerate(results):
            if r.extrinsics is None or Ks_net[i] is None:
                continue
            c = va.check_query(feats[i], Ks_net[i], r.extrinsics, store, self.pose_check_max_rot_deg,
                               self.pose_check_max_rel_trans, num_anchors=self.pose_check_anchors)
            self.alignment_counts["pose_checks"] += 1
            r.geometric_extrinsics = c.pnp.extrinsics
            if c.check in ("ok", "unverified"):
                r.check = c.check
                self.alignment_counts[f"pose_check_{c.check}"] += 1
                continue
            msg = (f"pose check: learned pose differs from the PnP pose ({c.reason}; "
                   f"{int(c.pnp.num_inliers)} inliers)")
            if self.pose_check == "reject":
                r.check = "rejected"
                self.alignment_counts["pose_check_rejected"] += 1
                log.warning("VGGTBackend: frame %d rejected: %s", r.frame_index, msg)
                r.extrinsics, r.confidence, r.reason = None, 0.0, msg
            else:
                r.check = "flagged"
                self.alignment_counts["pose_check_flagged"] += 1
                log.warning("VGGTBackend: frame %d flagged: %s", r.frame_index, msg)
                r.reason = msg

    def _evict(self) -> None:
        """Release the current scene memory (written to the store first, when one is configured)."""
        if self._memory is not None and self.store is not None and self._window_id is not None:
            try:
                self.store.put(self._window_id, self._memory, {"anchor_stamps_ns": self._anchor_stamps})
            except (OSError, RuntimeError) as e:  # a full disk must not stop mapping
                self.store_failures += 1
                log.warning("VGGTBackend: could not store the scene memory of window %d: %s", self._window_id, e)
        self._memory = None

    def localize_in_window(self, frames: Sequence[Frame], window_id: int) -> List[LocalizationResult]:
        """Relocalize ``frames`` against window ``window_id``: the current one or one in the store.

        Results are as :meth:`localize`, in THAT window's frame (its first anchor's camera; the caller
        chains them with that window's ``T_map_window``).
        Raises:
            BackendError: unknown window (not current and not stored, or no store configured).
        """
        if self._memory is not None and window_id == self._window_id:
            return self.localize(frames)
        if self.store is None:
            raise BackendError(f"window {window_id} is not current and no memory_store_dir is configured")
        try:
            memory, _ = self.store.get(window_id, device=self.memory_device)
        except KeyError as e:
            raise BackendError(str(e)) from e
        return self._localize_with(memory, frames)

    def localize(self, frames: Sequence[Frame]) -> List[LocalizationResult]:
        """Query pass for ``frames`` against the current scene memory (window frame).

        Returns one :class:`LocalizationResult` per frame: extrinsics camera-from-window (3x4),
        K in the original image's pixels, confidence 1 - 1/median(depth confidence) (0.5 without depth),
        optional depth (H, W) / points (H, W, 3) at network resolution. Non-finite outputs give a failed
        result with a reason.
        Raises:
            BackendError: no window reconstructed yet.
        """
        if self._memory is None:
            raise BackendError("localize called before any window was reconstructed")
        return self._localize_with(self._memory, frames)

    def _localize_with(self, memory: SceneMemory, frames: Sequence[Frame]) -> List[LocalizationResult]:
        if len(frames) == 0:
            return []
        images, metas = self._preprocess(frames)
        checking = (self.adapter is not None and self.pose_check != "off" and memory is self._memory
                    and self._anchor_store is not None)
        feats = None
        try:
            if checking:
                res, feats = self._query_pass_aligned(memory, images)
            else:
                with self._amp():
                    res = query_pass(self.model, memory, images, batch_size=self.query_batch_size,
                                     with_depth=self.localize_depth, with_points=self.localize_points,
                                     autocast=False)
        except (ModelOutOfMemoryError, torch.cuda.OutOfMemoryError) as e:
            raise BackendError(_oom_message(e, "localizing", images)) from e
        H, W = images.shape[-2:]
        out = []
        Ks_net: List[Optional[np.ndarray]] = []
        for i, (f, m) in enumerate(zip(frames, metas)):
            extr = res.extrinsics[i].double().cpu().numpy()
            K = self._sanitize_K(res.intrinsics[i].double().cpu().numpy(), (H, W))
            conf = _confidence(res.depth_conf[i] if res.depth_conf is not None else None)
            depth = res.depth[i].float().cpu().numpy() if res.depth is not None else None
            pts = res.points[i].float().cpu().numpy() if res.points is not None else None
            Ks_net.append(K if np.all(np.isfinite(extr)) else None)
            if not np.all(np.isfinite(extr)):
                out.append(LocalizationResult(f.stamp_ns, f.index, None, confidence=0.0,
                                              reason="non-finite extrinsics from the query pass"))
                continue
            if K is None:
                out.append(LocalizationResult(f.stamp_ns, f.index, None, confidence=0.0,
                                              reason="invalid predicted intrinsics (FoV <= 0)"))
                continue
            out.append(LocalizationResult(f.stamp_ns, f.index, extr, K=m.K_net_to_orig(K), confidence=conf,
                                          depth=depth, points=pts))
        if checking:
            self._check_results(out, feats, Ks_net)
        return out

    def reset(self) -> None:
        """Drop the scene memory and empty the on-disk store, if any (its windows belong to the dropped map)."""
        self._memory = None
        self._anchor_store = None
        if self.store is not None:
            self.store.clear()
        self._window_id = None
        self._anchor_stamps = []

"""VGGT / SAIL-Recon backend: anchors reconstructed jointly, other frames localized against a scene memory.

``reconstruct_window`` = SAIL-Recon anchor pass (Deng et al., arXiv 2508.17972, Sec. 3; one joint VGGT
forward over the anchors that also caches per-layer anchor K/V,
:func:`selfi_ros.model.scene_memory.run_anchor_pass`) + VGGT's camera / depth / point heads (Wang et al.,
CVPR 2025, Sec. 3.3). ``localize`` = SAIL-Recon query pass (:func:`selfi_ros.model.scene_memory.query_pass`),
in batches of ``query_batch_size``; each query sees only the anchors and itself. This module only calls
those model functions: it preprocesses (once per frame, :mod:`selfi_ros.backends.vggt_preprocess`), converts
outputs to the engine's types and keeps the memory.

Frames and units: the window frame is the first anchor's camera (OpenCV axes), up to VGGT's normalised
scale. ``WindowReconstruction.intrinsics`` are in pixels of its depth / point maps (the network input
grid, ``image_size_hw``); ``LocalizationResult.K`` is mapped back to the original image's pixels through
the preprocessing metadata (crop / pad / resize undone).

Selfi alignment (optional, option ``adapter``; Selfi, arXiv 2512.08930, Sec. "applications"): a trained
feature adapter turns the aggregator tokens of both passes into aligned per-pixel features, used for a
learned-vs-PnP pose check and window refinement (:class:`selfi_ros.backends.vggt_alignment.SelfiAlignment`),
counted in :meth:`VGGTBackend.status`. With ``online_adapter_training`` the backend also trains the adapter
in the background on its own windows while its caller is idle
(:class:`selfi_ros.backends.vggt_online.OnlineAdapterHook`).

Weights: SAIL-Recon (``HKUST-SAIL/SAIL-Recon``) gives trained relocalisation blocks; plain VGGT weights
(``facebook/VGGT-1B``) also work, with the anchors' own global-attention K/V (see
:mod:`selfi_ros.model.scene_memory`). Without weights construction fails with instructions, unless
``allow_random_weights=True`` (plumbing only: loud warning, every output flagged ``random_weights``).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, replace
from types import MappingProxyType
from typing import List, Mapping, Optional, Sequence

import numpy as np
import torch

from selfi_ros.model.config import VGGTConfig
from selfi_ros.model.errors import ModelOutOfMemoryError
from selfi_ros.model.loading import load_model, resolve_checkpoint
from selfi_ros.model.scene_memory import SceneMemory, query_pass, run_anchor_pass
from selfi_ros.model.vggt import autocast_dtype
from selfi_ros.engine.backend import BackendBase, BackendError
from selfi_ros.engine.status import BackendStatus
from selfi_ros.engine.types import Frame, LocalizationResult, WindowReconstruction
from selfi_ros.backends.config import VGGTBackendConfig, with_options
from selfi_ros.backends.memory_store import SceneMemoryStore
from selfi_ros.backends.vggt_alignment import SelfiAlignment
from selfi_ros.backends.vggt_memory import (BackgroundSha256, DescriptorTap, VGGTWindowMemory, adapter_fingerprint,
                                            describe_images, load_window_memory, model_signature,
                                            signature_differences, window_memory)
from selfi_ros.backends.vggt_preprocess import PreprocessCache

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
        config: a :class:`~selfi_ros.backends.config.VGGTBackendConfig` (default: its defaults).
        **options: fields of :class:`VGGTBackendConfig` overriding ``config`` (cast and validated; an option
            given as None keeps the config's value; units and meanings are documented there). In short:
            ``checkpoint`` (a .pt / .safetensors file, folder or Hugging Face repo id such as
            ``HKUST-SAIL/SAIL-Recon``; "" = none, then only with
            ``allow_random_weights``), ``device`` ("auto" = CUDA when available, "cpu" = the CPU even when
            CUDA is present, "cuda", "cuda:N"), ``dtype`` (auto / fp32 / bf16 / fp16 autocast on CUDA),
            ``tokens_per_anchor`` (0 = all, exact; SAIL-Recon uses 300), ``memory_device`` ("" = the model's
            device), ``adapter`` ("" = none; Selfi pose check / refinement / online training need one),
            ``memory_store_dir`` ("" = off; evicted windows are written there as window memories, the format
            of :meth:`export_window`, for :meth:`localize_in_window`; emptied when the backend is built and on
            :meth:`reset`; the engine's window database does not need it).
    Raises:
        BackendConfigError (ValueError): bad options, or ``config`` not a VGGTBackendConfig.
        WeightsNotFoundError: no weights and no ``allow_random_weights``. ValueError: an adapter that does
        not fit the backbone.

    Memory: only the current window's scene memory is held in RAM; reconstructing a new window releases
    the previous one (after writing it to the store when one is configured), so RAM does not grow with the
    length of the run. Preprocessed frames are cached (uint8), at most max(16, 2 x the largest window) + one
    query batch of them (:class:`~selfi_ros.backends.vggt_preprocess.PreprocessCache`).

    Window memories (:mod:`selfi_ros.backends.vggt_memory`): :meth:`export_window` gives a detached copy of
    the current window (scene memory, anchor descriptors, poses, subsampled point maps), :meth:`localize_in`
    localizes against one, :meth:`describe` gives global descriptors (GeM of the DINOv2 patch tokens; the
    anchors' are in ``WindowReconstruction.descriptors`` at no extra forward), :meth:`map_signature` says
    which model, checkpoint (sha256 of the file, hashed in the background at construction) and input they
    need.
    """

    name = "vggt"
    supports_map = True

    def __init__(self, config: Optional[VGGTBackendConfig] = None, **options):
        cfg = with_options(VGGTBackendConfig, config, **{k: v for k, v in options.items() if v is not None})
        self.config = cfg
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        self.device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                                   else "cpu" if cfg.device == "auto" else cfg.device)
        if cfg.model_config == "tiny":
            mcfg = VGGTConfig.tiny(sail_reloc=True)
        else:
            mcfg = None if cfg.checkpoint else VGGTConfig.sail()
        self.checkpoint_path = str(resolve_checkpoint(cfg.checkpoint)) if cfg.checkpoint else None
        self.model = load_model(self.checkpoint_path, config=mcfg, device=self.device,
                                random_weights=not cfg.checkpoint and cfg.allow_random_weights)
        self._sha = BackgroundSha256(self.checkpoint_path) if self.checkpoint_path else None
        self.random_weights = bool(self.model.random_weights)
        if self.random_weights:
            log.warning("VGGTBackend: RANDOM WEIGHTS - plumbing only; poses and maps are meaningless")
        self.amp_dtype = (None if cfg.dtype == "fp32" or self.device.type != "cuda"
                          else autocast_dtype(self.device) if cfg.dtype == "auto" else _DTYPES[cfg.dtype])
        self.tokens_per_anchor = "all" if cfg.tokens_per_anchor == 0 else int(cfg.tokens_per_anchor)
        self.memory_device = cfg.memory_device or None
        self._memory: Optional[SceneMemory] = None
        self._window_id: Optional[int] = None
        self._anchor_stamps: list[int] = []
        self._current: Optional[VGGTWindowMemory] = None  # the current window (live scene memory)
        self._adapter_fp: tuple = (None, "")
        self._frames = PreprocessCache(capacity=16 + cfg.query_batch_size)
        self.store: Optional[SceneMemoryStore] = (SceneMemoryStore(cfg.memory_store_dir, cfg.memory_store_windows)
                                                  if cfg.memory_store_dir else None)
        self.store_failures = 0
        if self.store is not None:
            n = self.store.clear()
            if n:
                log.info("VGGTBackend: removed %d scene memories of an earlier map from %s", n, cfg.memory_store_dir)
        self._fallback_K_count = 0
        self.alignment: Optional[SelfiAlignment] = (SelfiAlignment(cfg, self.model, self.device) if cfg.adapter
                                                    else None)
        self.pose_check = cfg.effective_pose_check()
        self.online = None
        if cfg.online_adapter_training:
            from selfi_ros.backends.vggt_online import OnlineAdapterHook

            self.online = OnlineAdapterHook(self.model, self.alignment.adapter, self.device,
                                            clip_len=cfg.online_clip_len, eval_every=cfg.online_eval_every,
                                            min_gain=cfg.online_min_gain)
            log.info("VGGTBackend: online adapter training on (clips of %d anchors, evaluation every %d steps, "
                     "swap on a held-out PCK@3 gain >= %g)", cfg.online_clip_len, cfg.online_eval_every,
                     cfg.online_min_gain)

    # ----------------------------------------------------------------------------------------------
    @property
    def adapter(self):
        """The Selfi adapter in use (None without one)."""
        return None if self.alignment is None else self.alignment.adapter

    @property
    def last_refinement(self):
        """:class:`~selfi_ros.backends.vggt_alignment.RefineOutcome` of the last refined window, or None."""
        return None if self.alignment is None else self.alignment.last_refinement

    @property
    def memory(self) -> Optional[SceneMemory]:
        """The current scene memory (None before the first window)."""
        return self._memory

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the current scene memory (0 before the first window)."""
        return 0 if self._memory is None else int(self._memory.nbytes)

    @property
    def preprocess_cache(self) -> PreprocessCache:
        """The cache of preprocessed frames (its ``misses`` count preprocessing calls)."""
        return self._frames

    @property
    def alignment_counts(self) -> Mapping[str, int]:
        """Read-only view of the alignment counters (all 0 without an adapter); :meth:`status` is the typed
        way to read them."""
        return MappingProxyType({k: v for k, v in asdict(self.status()).items()
                                 if k.startswith(("pose_check", "refine_", "adapter_"))})

    def status(self) -> BackendStatus:
        """Scene-memory bytes, Selfi alignment counters and online-training figures (a fresh object)."""
        st = BackendStatus(memory_bytes=self.memory_bytes,
                           **(asdict(self.alignment.counts) if self.alignment is not None else {}))
        if self.online is not None:
            self.online.fill_status(st)
        return st

    def set_idle(self, idle: bool) -> None:
        """Online adapter training (when on) runs only while the last call said ``idle=True``."""
        if self.online is not None:
            self.online.set_idle(bool(idle))

    def close(self) -> None:
        """Stop the online training thread, if any (idempotent)."""
        if self.online is not None:
            self.online.stop()

    def set_adapter(self, adapter) -> None:
        """Swap in another adapter (thread-safe). It takes effect at the next :meth:`reconstruct_window`, so
        that anchors and queries of one window always share an adapter.

        Raises:
            ValueError: no adapter was configured at construction, or the adapter's token width differs.
        """
        if self.alignment is None:
            raise ValueError("set_adapter: this backend was built without an adapter")
        self.alignment.set_adapter(adapter)

    def _preprocess(self, frames: Sequence[Frame]):
        return self._frames.get(frames, self.config.preprocess_mode, self.config.image_width)

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

        With online adapter training the result is also queued as a training clip.
        Raises:
            BackendError: no anchors, non-finite cameras, GPU out of memory (the previous memory stays valid).
        """
        if len(anchors) == 0:
            raise BackendError("reconstruct_window needs at least one anchor frame")
        self._frames.reserve(2 * len(anchors) + self.config.query_batch_size)
        images, metas = self._preprocess(anchors)
        al = self.alignment
        if al is not None:
            al.apply_pending(self.online)
        aligned = al is not None and al.wants_anchor_features
        try:
            with DescriptorTap(self.model) as tap:
                memory, out = run_anchor_pass(self.model, images, self.tokens_per_anchor, seed=self.config.seed,
                                              kv_source=self.config.kv_source, memory_device=self.memory_device,
                                              autocast=self.amp_dtype,
                                              keep_layers=al.keep_layers if aligned else None,
                                              token_hook=al.anchor_hook if aligned else None)
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
        if al is not None:
            if out.extra is not None and depth is not None:
                extr, Ks_net, depth, pts, pconf = al.process_window(int(window_id), out.extra, depth, dconf,
                                                                    Ks_net, extr, pts, pconf)
            else:
                al.anchor_store = None
        descriptors = tap.result()  # (S, D): the anchors' DINOv2 tokens of this very pass
        if descriptors is None:  # the patch embedding ran out of sight of the hook (e.g. a compiled model)
            descriptors = describe_images(self.model, images, self.amp_dtype, self.config.query_batch_size)
        store = al.anchor_store if al is not None else None
        current = window_memory(int(window_id), memory, descriptors, anchors, extr, Ks_net, (int(H), int(W)),
                                pts, pconf, depth, dconf, store, self._adapter_fingerprint() if store else "")
        self._evict()
        self._memory, self._current = memory, current
        self._window_id = int(window_id)
        self._anchor_stamps = [int(f.stamp_ns) for f in anchors]
        win = WindowReconstruction(
            window_id=int(window_id),
            stamps_ns=np.array([f.stamp_ns for f in anchors], dtype=np.int64),
            frame_indices=np.array([f.index for f in anchors], dtype=np.int64),
            extrinsics=extr, intrinsics=Ks_net, image_size_hw=(int(H), int(W)),
            intrinsics_image=np.stack([m.K_net_to_orig(K) for m, K in zip(metas, Ks_net)]),
            depth=depth, depth_conf=dconf, points=pts, points_conf=pconf, colors=colors,
            backend=self.name, random_weights=self.random_weights, descriptors=descriptors.copy())
        if self.online is not None:
            self.online.feed_window(win)
        return win

    def _evict(self) -> None:
        """Release the current scene memory (written to the store first, when one is configured)."""
        if self._current is not None and self.store is not None:
            try:
                self.store.put(self._current.window_id, replace(self._current, signature=self.map_signature()))
            except (OSError, RuntimeError) as e:  # a full disk must not stop mapping
                self.store_failures += 1
                log.warning("VGGTBackend: could not store the scene memory of window %d: %s", self._window_id, e)
        self._memory = None
        self._current = None

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
            path = self.store.require(window_id)
        except KeyError as e:
            raise BackendError(str(e)) from e
        return self.localize_in(self.load_window(path), frames)

    def localize(self, frames: Sequence[Frame]) -> List[LocalizationResult]:
        """Query pass for ``frames`` against the current scene memory (window frame).

        Returns one :class:`LocalizationResult` per frame: extrinsics camera-from-window (3x4),
        K in the original image's pixels, confidence 1 - 1/median(depth confidence) (0.5 without depth),
        optional depth (H, W) / points (H, W, 3) at network resolution. Non-finite outputs give a failed
        result with a reason. With an adapter and the pose check on, each pose is also checked
        (``check``, ``geometric_extrinsics``; "reject" mode turns a disagreement into a failure).
        Raises:
            BackendError: no window reconstructed yet; GPU out of memory.
        """
        if self._memory is None:
            raise BackendError("localize called before any window was reconstructed")
        return self._localize_with(self._memory, frames,
                                   self.alignment.anchor_store if self.alignment is not None else None)

    def _localize_with(self, memory: SceneMemory, frames: Sequence[Frame], store=None) -> List[LocalizationResult]:
        """Query pass against ``memory``; the pose check (adapter, pose check on) against ``store``, an
        :class:`~selfi_ros.backends.vggt_alignment.AnchorFeatureStore` of the same anchors (None: no check)."""
        if len(frames) == 0:
            return []
        images, metas = self._preprocess(frames)
        al = self.alignment
        checking = al is not None and al.pose_check != "off" and store is not None
        try:
            res = query_pass(self.model, memory, images, batch_size=self.config.query_batch_size,
                             with_depth=self.config.localize_depth, with_points=self.config.localize_points,
                             autocast=self.amp_dtype, keep_layers=al.keep_layers if checking else None,
                             token_hook=al.query_hook if checking else None)
        except (ModelOutOfMemoryError, torch.cuda.OutOfMemoryError) as e:
            raise BackendError(_oom_message(e, "localizing", images)) from e
        H, W = images.shape[-2:]
        out = []
        Ks_net: List[Optional[np.ndarray]] = []
        for i, (f, m) in enumerate(zip(frames, metas)):
            extr = res.extrinsics[i].double().cpu().numpy()
            K = self._sanitize_K(res.intrinsics[i].double().cpu().numpy(), (H, W))
            Ks_net.append(K)  # the pose check skips failed results
            if not np.all(np.isfinite(extr)):
                out.append(LocalizationResult(f.stamp_ns, f.index, None, confidence=0.0,
                                              reason="non-finite extrinsics from the query pass"))
                continue
            if K is None:
                out.append(LocalizationResult(f.stamp_ns, f.index, None, confidence=0.0,
                                              reason="invalid predicted intrinsics (FoV <= 0)"))
                continue
            conf = _confidence(res.depth_conf[i] if res.depth_conf is not None else None)
            depth = res.depth[i].float().cpu().numpy() if res.depth is not None else None
            pts = res.points[i].float().cpu().numpy() if res.points is not None else None
            out.append(LocalizationResult(f.stamp_ns, f.index, extr, K=m.K_net_to_orig(K), confidence=conf,
                                          depth=depth, points=pts))
        if checking:
            al.check_results(out, res.extra, Ks_net, store)
        return out

    # ------------------------------------------------------------------------------------- window memories
    def _adapter_fingerprint(self) -> str:
        """Fingerprint of the adapter in use, computed once per adapter object ("" without one)."""
        a = self.adapter
        if self._adapter_fp[0] is not a:
            self._adapter_fp = (a, adapter_fingerprint(a))
        return self._adapter_fp[1]

    def map_signature(self) -> Mapping[str, str]:
        """What a saved map or window memory needs to be reused here (all str): ``backend`` "vggt", the network
        shape (``model_*``), ``checkpoint_sha256`` (sha256 of the weights file; "random" for random weights),
        ``adapter`` ("present" / "none"), ``descriptor`` (kind of :meth:`describe`), ``image_width`` and
        ``preprocess_mode`` (the network input the anchor tokens were computed at). Waits for the background
        hash of the checkpoint the first time."""
        return model_signature(self.model, "random" if self._sha is None else self._sha.result(),
                               self.alignment is not None, self.config.image_width, self.config.preprocess_mode)

    def export_window(self) -> VGGTWindowMemory:
        """A :class:`~selfi_ros.backends.vggt_memory.VGGTWindowMemory` of the current window, deep-copied to the
        CPU (later windows, :meth:`reset` and the store do not change it), with :meth:`map_signature`.

        Raises:
            BackendError: no window reconstructed yet.
        """
        if self._current is None:
            raise BackendError("export_window: no window reconstructed yet")
        return replace(self._current, signature=dict(self.map_signature())).detached("cpu")

    def load_window(self, directory: str) -> VGGTWindowMemory:
        """Read a window memory folder (:meth:`VGGTWindowMemory.save`) into the CPU.

        Raises:
            BackendError: one line naming the folder / file: missing, truncated or corrupt, or made by another
                model, checkpoint, adapter presence or network input (the differing signature keys).
        """
        return load_window_memory(str(directory), self.map_signature(), self.model.cfg, device="cpu")

    def localize_in(self, memory: VGGTWindowMemory, frames: Sequence[Frame]) -> List[LocalizationResult]:
        """SAIL-Recon query pass of ``frames`` against ``memory`` (any window: exported, loaded or stored),
        leaving the current window unchanged. Results as :meth:`localize`, camera-from-window of THAT window.
        With an adapter and the pose check on, poses are checked against the memory's anchor features when the
        same adapter computed them; ``inliers`` is then the PnP inlier count of an "ok" check, else 0.

        Raises:
            BackendError: not a vggt window memory, or one of another model (its signature differs); GPU out
                of memory.
        """
        if not isinstance(memory, VGGTWindowMemory):
            raise BackendError(f"localize_in: not a vggt window memory ({type(memory).__name__} of backend "
                               f"{getattr(memory, 'backend', None)!r})")
        diff = signature_differences(memory.signature, self.map_signature()) if memory.signature else []
        if diff:
            raise BackendError(f"localize_in: window {memory.window_id} was made by another model or "
                               "configuration (" + "; ".join(diff) + ")")
        store = None
        if (self.alignment is not None and memory.anchor_store is not None
                and memory.adapter_fingerprint == self._adapter_fingerprint()):
            store = memory.anchor_store
        return self._localize_with(memory.scene, frames, store)

    def describe(self, frames: Sequence[Frame]) -> np.ndarray:
        """Global descriptors of ``frames`` for place recognition: (N, 2C) float32, rows unit norm (GeM of the
        DINOv2 patch tokens, :func:`~selfi_ros.backends.vggt_memory.gem_descriptor`); only the patch embedding
        runs, ``query_batch_size`` frames at a time. Equals an anchor's ``WindowReconstruction.descriptors``
        row for the same image (up to rounding).

        Raises:
            BackendError: GPU out of memory. ValueError: a malformed image (from the preprocessing).
        """
        if len(frames) == 0:
            return np.zeros((0, 2 * self.model.cfg.embed_dim), np.float32)
        images, _ = self._preprocess(frames)
        try:
            return describe_images(self.model, images, self.amp_dtype, self.config.query_batch_size)
        except (ModelOutOfMemoryError, torch.cuda.OutOfMemoryError) as e:
            raise BackendError(_oom_message(e, "describing", images)) from e

    def reset(self) -> None:
        """Drop the scene memory, the cached frames and the on-disk store, if any (its windows belong to
        the dropped map)."""
        self._memory = None
        if self.alignment is not None:
            self.alignment.anchor_store = None
        self._frames.clear()
        if self.store is not None:
            self.store.clear()
        self._window_id = None
        self._anchor_stamps = []
        self._current = None

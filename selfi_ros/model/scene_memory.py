"""SAIL-Recon scene memory: anchor pass and query (localization) pass.

Method: SAIL-Recon (Deng et al., "SAIL-Recon: Large SfM by Augmenting Scene Regression with
Localization", arXiv 2508.17972), Sec. 3 (anchor scene representation, localization of query frames);
official code: github HKUST-SAIL/sail-recon, ``sailrecon/models/sail_recon.py`` (``SailRecon.tmp_forward``
builds the anchor K/V cache, ``SailRecon.reloc`` localizes queries against it) and
``sailrecon/models/aggregator.py`` (relocalisation blocks). Checked numerically against that code by
``benchmarks/compare_official.py`` (mode ``sail``).

Anchor pass (:func:`anchor_pass`): one joint VGGT forward over the S_a anchor frames (first anchor = the
window frame). At every layer i, after ``frame_blocks[i]``, the 5 special tokens and ``tokens_per_anchor``
patch tokens of each anchor (all of them in the exact "all" mode; a seeded random subset otherwise,
keeping their RoPE positions) go through a K/V projection whose keys (after k-norm and RoPE) and raw
values are cached in a :class:`SceneMemory`; the anchor stream itself continues through the normal,
unmasked ``global_blocks[i]``, so the anchor outputs are exactly VGGT's.

K/V source:
- ``global_reloc_blocks`` (SAIL-Recon weights, the default when present): the trained relocalisation
  blocks; queries use ``camera_token_reloc`` / ``register_token_reloc``. This is SAIL-Recon.
- ``global_blocks`` (plain VGGT weights): the anchors' own global attention K/V; queries use the
  ordinary "other frame" tokens (index 1). In "all" mode a query's result is then exactly what VGGT
  would compute for [anchors + query] if the anchors could not see the query (a causal, one-way
  variant VGGT was not trained for: usable but less accurate than SAIL-Recon).

Query pass (:func:`query_pass`): each query frame is its own batch element; at layer i its tokens go
through ``frame_blocks[i]`` and then the K/V-source block whose keys/values are [cached anchor K/V ;
its own], so queries never see each other and anchors never see queries, with no scene-wide mask (the
official code builds an S·P x S·P boolean mask on the CPU). The camera head attends each query's camera
token to the anchors' last-layer camera tokens (anchors attend to anchors only). Results per query do not
depend on how queries are batched. Outputs are in the first anchor's camera frame, up to VGGT scale.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

import torch

from selfi_ros.model.aggregator import validate_images
from selfi_ros.model.errors import oom_guard
from selfi_ros.model.vggt import (AutocastSpec, autocast_context, autocast_off, pose_encoding_to_cameras,
                                  resolve_autocast)

TokensSpec = Union[str, int]
#: ``token_hook(tokens, images, patch_start_idx) -> Tensor``: called on the aggregator outputs of a pass (list
#: per layer of (B, S, P, 2C), None for layers not kept), its images (B, S, 3, H, W) and the first patch token
#: index, inside inference mode and outside autocast; the returned tensor (first dimension B*S) is stored in
#: the result's ``extra`` (e.g. Selfi adapter features computed from the same tokens)
TokenHook = Callable[[List[Optional[torch.Tensor]], torch.Tensor, int], torch.Tensor]


@dataclass
class SceneMemory:
    """Cached anchor keys/values per aggregator layer (SAIL-Recon scene representation).

    Attributes:
        keys, values: per layer i, (1, heads, M, head_dim) with M = num_anchors * tokens_per_anchor,
            anchor-major; K after k-norm and RoPE, V raw (dtype as computed: fp32 on CPU; under CUDA
            autocast K is fp32 and V bf16/fp16 unless ``store_dtype`` was given).
        positions: per layer, (M, 2) int64 RoPE positions (row, col) of the kept tokens (specials (0, 0)).
        anchor_camera_tokens: (S_a, 2C) last-layer camera tokens of the anchors (VGGT O_last[:, :, 0]).
        num_anchors: S_a.
        tokens_per_anchor: kept tokens per anchor and layer, including the 5 special tokens.
        num_patch_tokens: N_p of the anchor images (h*w).
        image_size_hw: (H, W) of the anchor network input.
        kv_source: "global_reloc_blocks" or "global_blocks".
        query_special: special tokens for queries, "reloc" (SAIL) or "other" (plain VGGT index 1).
    """

    keys: List[torch.Tensor]
    values: List[torch.Tensor]
    positions: List[torch.Tensor]
    anchor_camera_tokens: torch.Tensor
    num_anchors: int
    tokens_per_anchor: int
    num_patch_tokens: int
    image_size_hw: Tuple[int, int]
    kv_source: str
    query_special: str
    random_weights: bool = False

    @property
    def exact(self) -> bool:
        """True when every anchor patch token is kept (deterministic; the official code's ``fix_rank`` =
        number of patch tokens setting)."""
        return self.tokens_per_anchor == self.num_patch_tokens + 5

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache (K, V, positions, camera tokens)."""
        n = sum(t.numel() * t.element_size() for t in self.keys + self.values + self.positions)
        return int(n + self.anchor_camera_tokens.numel() * self.anchor_camera_tokens.element_size())

    @property
    def nbytes_per_anchor(self) -> float:
        """:attr:`nbytes` / num_anchors."""
        return self.nbytes / max(self.num_anchors, 1)

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "SceneMemory":
        """A copy with K/V (and camera tokens) moved / cast; positions stay int64."""
        cv = (lambda t: t.to(device=device, dtype=dtype)) if dtype else (lambda t: t.to(device=device))
        return SceneMemory([cv(k) for k in self.keys], [cv(v) for v in self.values],
                           [p.to(device=device) for p in self.positions], cv(self.anchor_camera_tokens),
                           self.num_anchors, self.tokens_per_anchor, self.num_patch_tokens, self.image_size_hw,
                           self.kv_source, self.query_special, self.random_weights)


@dataclass
class QueryResult:
    """Per-query outputs of :func:`query_pass` (S_q queries at H x W network resolution).

    Attributes:
        pose_enc: (S_q, 9); pose_enc_list: per camera-head iteration.
        extrinsics: (S_q, 3, 4) camera-from-window (window = first anchor's camera).
        intrinsics: (S_q, 3, 3) in network pixels.
        depth: (S_q, H, W) z-depth, depth_conf (S_q, H, W); None if the depth head is disabled.
        points: (S_q, H, W, 3) window-frame point map, points_conf (S_q, H, W); None if disabled/skipped.
        camera_tokens: (S_q, 2C) last-layer query camera tokens.
        extra: the ``token_hook`` outputs of :func:`query_pass`, concatenated over batches (None without).
    """

    pose_enc: torch.Tensor
    pose_enc_list: List[torch.Tensor]
    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    depth: Optional[torch.Tensor] = None
    depth_conf: Optional[torch.Tensor] = None
    points: Optional[torch.Tensor] = None
    points_conf: Optional[torch.Tensor] = None
    camera_tokens: Optional[torch.Tensor] = None
    random_weights: bool = False
    extra: Optional[torch.Tensor] = None


def _as_5d(images: torch.Tensor, patch: int) -> torch.Tensor:
    validate_images(images, patch, ndim=(4, 5))
    if images.dim() == 5:
        if images.shape[0] != 1:
            raise ValueError(f"scene memory works on one scene: expected [1, S, 3, H, W], got {tuple(images.shape)}")
        return images
    return images.unsqueeze(0)


def _kv_blocks(model, kv_source: str):
    agg = model.aggregator
    if kv_source == "auto":
        kv_source = "global_reloc_blocks" if model.cfg.sail_reloc else "global_blocks"
    if kv_source == "global_reloc_blocks":
        if not model.cfg.sail_reloc:
            raise ValueError("kv_source='global_reloc_blocks' needs SAIL-Recon weights (cfg.sail_reloc)")
        return kv_source, agg.global_reloc_blocks, "reloc"
    if kv_source == "global_blocks":
        return kv_source, agg.global_blocks, "other"
    raise ValueError(f"kv_source must be 'auto', 'global_reloc_blocks' or 'global_blocks', got {kv_source!r}")


def _num_kept(tokens_per_anchor: TokensSpec, n_patch: int) -> int:
    if tokens_per_anchor == "all" or tokens_per_anchor is None:
        return n_patch
    k = int(tokens_per_anchor)
    if k < 0:
        raise ValueError(f"tokens_per_anchor must be 'all' or >= 0, got {tokens_per_anchor!r}")
    return min(k, n_patch)


def anchor_pass(model, images: torch.Tensor, tokens_per_anchor: TokensSpec = "all",
                generator: Optional[torch.Generator] = None, kv_source: str = "auto",
                memory_device: Optional[Union[str, torch.device]] = None,
                store_dtype: Optional[torch.dtype] = None, keep_layers=None
                ) -> Tuple[SceneMemory, List[Optional[torch.Tensor]], int]:
    """Joint VGGT forward over the anchors that also fills a :class:`SceneMemory`.

    Call under ``torch.inference_mode()`` (and autocast if wanted); see :func:`run_anchor_pass`.

    Args:
        model: :class:`~selfi_ros.model.vggt.VGGT`.
        images: anchors [S_a, 3, H, W] or [1, S_a, 3, H, W], RGB in [0, 1]; anchor 0 defines the window frame.
        tokens_per_anchor: "all" (exact) or the number of patch tokens kept per anchor and layer (the
            SAIL-Recon default is 300); the 5 special tokens are always kept in addition.
        generator: CPU torch.Generator for the random subsets (seed it for determinism); one
            ``randperm(N_p)`` per (layer, anchor), layer-major.
        kv_source: "auto" (reloc blocks when present), "global_reloc_blocks" or "global_blocks".
        memory_device: where the cache lives (default: the images' device). store_dtype: optional cast.
        keep_layers: aggregator layers to return (default: what the enabled heads need).
    Returns:
        (memory, anchor aggregator outputs (list, None for layers not kept), patch_start_idx).
    """
    agg = model.aggregator
    images = _as_5d(images, model.cfg.patch_size)
    kv_source, blocks, qspecial = _kv_blocks(model, kv_source)
    _, S, _, H, W = images.shape
    keep = agg._resolve_keep(keep_layers)
    tokens, pos = agg.embed(images, "vggt")
    P, C = tokens.shape[2], tokens.shape[3]
    ns = agg.patch_start_idx
    n_patch = P - ns
    rank = _num_kept(tokens_per_anchor, n_patch)
    exact = rank == n_patch
    dev = memory_device if memory_device is not None else images.device
    keys, values, positions = [], [], []
    outputs: List[Optional[torch.Tensor]] = [None] * model.cfg.depth
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    gpos = pos.repeat(S, 1)
    for i in range(model.cfg.depth):
        f = agg.frame_attention(i, tokens, pos)
        if exact:
            sel, sel_pos = f.reshape(1, S * P, C), gpos
        else:
            idx = torch.stack([torch.cat([torch.arange(ns), ns + torch.randperm(n_patch, generator=g)[:rank]])
                               for _ in range(S)]).to(f.device)  # (S, ns + rank)
            sel = torch.gather(f[0], 1, idx[..., None].expand(-1, -1, C)).reshape(1, -1, C)
            sel_pos = pos[idx.reshape(-1)]
        k, v = blocks[i].cache_kv(sel, sel_pos)
        if store_dtype is not None:
            k, v = k.to(store_dtype), v.to(store_dtype)
        keys.append(k.to(dev))
        values.append(v.to(dev))
        positions.append(sel_pos.to(dev))
        tokens = agg.global_attention(i, f, pos, gpos)
        if i in keep or i == model.cfg.depth - 1:
            outputs[i] = torch.cat([f, tokens], dim=-1)
    cam = outputs[-1][0, :, 0].float()
    memory = SceneMemory(keys, values, positions, cam.to(dev), S, ns + rank, n_patch, (H, W), kv_source,
                         qspecial, bool(model.random_weights))
    return memory, outputs, ns


def query_aggregate(model, memory: SceneMemory, images: torch.Tensor, keep_layers=None
                    ) -> Tuple[List[Optional[torch.Tensor]], int]:
    """Query aggregator pass for n query frames, each its own batch element.

    Args:
        images: [n, 3, H, W] RGB in [0, 1].
    Returns:
        (list of per-layer (n, 1, P, 2C) outputs, None where not kept; patch_start_idx).

    Memory: per layer the anchor K/V (M tokens) are concatenated to each of the n queries' own K/V, a
    transient n x M x 2C buffer (e.g. 8 queries x 100 anchors x 305 tokens x 2048 x 2 B = 1 GB in bf16);
    lower ``batch_size`` in :func:`query_pass` to bound it.
    """
    agg = model.aggregator
    validate_images(images, model.cfg.patch_size, ndim=(4,))
    _, blocks, _ = _kv_blocks(model, memory.kv_source)
    n = images.shape[0]
    keep = agg._resolve_keep(keep_layers)
    tokens, pos = agg.embed(images.unsqueeze(1), memory.query_special)  # (n, 1, P, C)
    P, C = tokens.shape[2], tokens.shape[3]
    outputs: List[Optional[torch.Tensor]] = [None] * model.cfg.depth
    for i in range(model.cfg.depth):
        f = agg.frame_attention(i, tokens, pos)
        k = memory.keys[i].to(images.device)
        v = memory.values[i].to(images.device)
        g = blocks[i](f.reshape(n, P, C), pos=pos,
                      kv_prefix=(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)))
        tokens = g.reshape(n, 1, P, C)
        if i in keep or i == model.cfg.depth - 1:
            outputs[i] = torch.cat([f, tokens], dim=-1)
    return outputs, agg.patch_start_idx


def query_heads(model, memory: SceneMemory, outputs: List[Optional[torch.Tensor]], images: torch.Tensor,
                patch_start_idx: int, with_depth: bool = True, with_points: bool = True) -> QueryResult:
    """Run camera (with anchors), depth and point heads in fp32 on :func:`query_aggregate` outputs."""
    n, _, H, W = images.shape
    with autocast_off(images.device.type):
        tok32 = [t.float() if t is not None else None for t in outputs]
        q_cam = tok32[-1][:, 0, 0]  # (n, 2C)
        anchors = memory.anchor_camera_tokens.to(images.device).float()
        pose_list = model.camera_head.forward_with_anchors(q_cam[None], anchors[None])
        pose_list = [p.reshape(n, 9) for p in pose_list]
        extr, K = pose_encoding_to_cameras(pose_list[-1], (H, W))
        res = QueryResult(pose_list[-1], pose_list, extr, K, camera_tokens=q_cam,
                          random_weights=memory.random_weights)
        img5 = images.float().unsqueeze(1)
        if with_depth and model.depth_head is not None:
            d, dc = model.depth_head(tok32, images=img5, patch_start_idx=patch_start_idx)
            res.depth, res.depth_conf = d[:, 0, ..., 0], dc[:, 0]
        if with_points and model.point_head is not None:
            p, pc = model.point_head(tok32, images=img5, patch_start_idx=patch_start_idx)
            res.points, res.points_conf = p[:, 0], pc[:, 0]
    return res


def concat_query_results(parts: List[QueryResult]) -> QueryResult:
    """Concatenate per-batch :class:`QueryResult` objects along the query axis (a field is None in the result
    when it is None in any part).

    Raises:
        ValueError: no parts.
    """
    if not parts:
        raise ValueError("concat_query_results needs at least one result")

    def cat(name):
        vals = [getattr(p, name) for p in parts]
        return None if any(v is None for v in vals) else torch.cat(vals, dim=0)

    return QueryResult(cat("pose_enc"),
                       [torch.cat([p.pose_enc_list[j] for p in parts]) for j in range(len(parts[0].pose_enc_list))],
                       cat("extrinsics"), cat("intrinsics"), cat("depth"), cat("depth_conf"), cat("points"),
                       cat("points_conf"), cat("camera_tokens"), parts[0].random_weights, cat("extra"))


def query_pass(model, memory: SceneMemory, images: torch.Tensor, batch_size: int = 8,
               with_depth: bool = True, with_points: bool = True, autocast: AutocastSpec = True,
               keep_layers=None, token_hook: Optional[TokenHook] = None) -> QueryResult:
    """Localize query frames against ``memory`` (SAIL-Recon ``reloc``), ``batch_size`` at a time.

    Args:
        images: [S_q, 3, H, W] RGB in [0, 1] (moved to the model's device).
        batch_size: queries per forward (results do not depend on it).
        with_depth / with_points: run the DPT heads (the camera alone is much cheaper).
        autocast: True = the official CUDA autocast dtype (:func:`~selfi_ros.model.vggt.autocast_dtype`),
            False / None = none (fp32), or a dtype to force on CUDA; no effect on CPU.
        keep_layers: aggregator layers to keep in addition to those the heads need (for ``token_hook``).
        token_hook: see :data:`TokenHook`; called once per batch with images (n, 1, 3, H, W); its outputs,
            concatenated, are the result's ``extra``.
    Returns:
        :class:`QueryResult` in the first anchor's camera frame.
    Raises:
        ModelOutOfMemoryError: a batch did not fit on the GPU (names the batch size and resolution).
        RuntimeError: the model has no camera head. ValueError: ``batch_size`` < 1 or malformed images
            (TypeError: not a float tensor).
    """
    if model.camera_head is None:
        raise RuntimeError("query_pass needs a model with a camera head")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    validate_images(images, model.cfg.patch_size, ndim=(4,))
    device = next(model.parameters()).device
    images = images.to(device)
    dt = resolve_autocast(autocast, device)
    keep = _with_head_layers(model, keep_layers)
    parts = []
    for b0 in range(0, images.shape[0], batch_size):
        chunk = images[b0:b0 + batch_size]
        with oom_guard("localizing", chunk), torch.inference_mode():
            with autocast_context(dt):
                outs, psi = query_aggregate(model, memory, chunk, keep_layers=keep)
            part = query_heads(model, memory, outs, chunk, psi, with_depth, with_points)
            if token_hook is not None:
                part.extra = token_hook(outs, chunk.unsqueeze(1), psi)
            parts.append(part)
    return concat_query_results(parts)


def _with_head_layers(model, keep_layers):
    """None (the heads' layers) or the heads' layers plus ``keep_layers``."""
    if keep_layers is None:
        return None
    return sorted(set(model.cfg.needed_layers()) | {int(i) % model.cfg.depth for i in keep_layers})


def run_anchor_pass(model, images: torch.Tensor, tokens_per_anchor: TokensSpec = "all", seed: int = 0,
                    kv_source: str = "auto", memory_device=None, store_dtype=None, autocast: AutocastSpec = True,
                    keep_layers=None, token_hook: Optional[TokenHook] = None):
    """:func:`anchor_pass` under inference mode and autocast, followed by the VGGT heads (fp32).

    Args:
        images, tokens_per_anchor, kv_source, memory_device, store_dtype: see :func:`anchor_pass`.
        seed: seed of the CPU generator drawing the anchor token subsets.
        autocast: as in :func:`query_pass`.
        keep_layers: aggregator layers to keep in addition to those the heads need (for ``token_hook``).
        token_hook: see :data:`TokenHook`; called with images (1, S_a, 3, H, W); its output is ``out.extra``.
    Returns:
        (memory, :class:`~selfi_ros.model.vggt.VGGTOutput` of the anchors (camera head over the anchors
        alone = the anchor part of SAIL's camera head)).
    Raises:
        ModelOutOfMemoryError: the window did not fit on the GPU.
    """
    device = next(model.parameters()).device
    images = _as_5d(images, model.cfg.patch_size).to(device)
    dt = resolve_autocast(autocast, device)
    gen = torch.Generator().manual_seed(int(seed))
    with oom_guard("reconstructing the anchor window of", images), torch.inference_mode():
        with autocast_context(dt):
            memory, outs, psi = anchor_pass(model, images, tokens_per_anchor, gen, kv_source, memory_device,
                                            store_dtype, keep_layers=_with_head_layers(model, keep_layers))
        out = model.run_heads(outs, images, psi)
        if token_hook is not None:
            out.extra = token_hook(outs, images, psi)
    return memory, out

"""Soft-argmax correspondence loss and match-accuracy metrics (Selfi, Deng et al. 2025,
arXiv 2512.08930, Sec. "training objective").

For each source query point the feature is compared (cosine similarity) with every pixel of a target
feature map; similarities are multiplied by a temperature (100), a softmax over the target pixels gives a
distribution whose expectation is the predicted correspondence ``p_hat_t`` (soft-argmax). The loss is the
visibility-weighted squared pixel error ``V * ||p_hat_t - p_t||^2`` averaged over the weighted
correspondences (sum of weights). Selfi reports that a CLIP-style contrastive loss collapsed, which is why
this regression form is used.

Memory: the similarity volume is (queries x target pixels) per target frame; it is built in chunks of
queries (``chunk``) and, when gradients are needed, each chunk is recomputed in the backward pass
(``torch.utils.checkpoint``) so peak memory stays at one chunk's volume.

Pixel coordinates are ``(x, y)``, integer at pixel centres (see :mod:`.pseudo_gt`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from selfi_ros.alignment.pseudo_gt import Correspondences, sample_map

DEFAULT_TEMPERATURE = 100.0
PCK_THRESHOLDS_PX = (1.0, 3.0, 5.0)


@dataclass
class MatchMetrics:
    """Match accuracy of hard-argmax correspondences against (pseudo-)ground truth.

    Attributes:
        pck: threshold in px -> fraction of valid queries whose hard-argmax match is within it.
        epe_soft: mean end-point error (px) of the soft-argmax prediction over valid queries.
        num_valid: number of (query, target) pairs that counted.
    """

    pck: dict = field(default_factory=dict)
    epe_soft: float = float("nan")
    num_valid: int = 0

    def as_dict(self) -> dict:
        d = {f"pck@{t:g}": v for t, v in self.pck.items()}
        d["epe_soft"] = self.epe_soft
        d["num_valid"] = self.num_valid
        return d


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H*W, 2) pixel coordinates (x, y) in row-major order."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                            torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


def _chunk_soft_argmax(q: torch.Tensor, tgt_flat: torch.Tensor, grid: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """q (B, n, C), tgt_flat (B, C, HW), grid (HW, 2) -> expected coordinates (B, n, 2) in float32."""
    logits = torch.bmm(q, tgt_flat).float() * temperature  # (B, n, HW)
    prob = torch.softmax(logits, dim=-1)
    return prob @ grid


def soft_argmax_matches(
    src_feat: torch.Tensor,
    tgt_feat: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    chunk: int = 1024,
    want_hard: bool = False,
    use_checkpoint: Optional[bool] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Soft-argmax (and optionally hard-argmax) correspondences of query features in target maps.

    Args:
        src_feat: (B, N, C) query features (L2-normalised along C for cosine similarity).
        tgt_feat: (B, T, C, H, W) target feature maps (L2-normalised along C).
        temperature: multiplier applied to cosine similarities before the softmax (Selfi: 100).
        chunk: number of queries per similarity-volume chunk.
        want_hard: also return the hard argmax coordinates (no gradient).
        use_checkpoint: recompute chunks in backward; default: when gradients are enabled and needed.
    Returns:
        (soft (B, T, N, 2) float32, hard (B, T, N, 2) float32 or None), pixel coordinates (x, y).
    """
    if src_feat.ndim != 3 or tgt_feat.ndim != 5 or src_feat.shape[0] != tgt_feat.shape[0] \
            or src_feat.shape[2] != tgt_feat.shape[2]:
        raise ValueError(f"expected src_feat (B,N,C) and tgt_feat (B,T,C,H,W) with equal B and C, got "
                         f"{tuple(src_feat.shape)} and {tuple(tgt_feat.shape)}")
    B, N, C = src_feat.shape
    T, H, W = tgt_feat.shape[1], tgt_feat.shape[3], tgt_feat.shape[4]
    grid = pixel_grid(H, W, device=src_feat.device)
    if use_checkpoint is None:
        use_checkpoint = torch.is_grad_enabled() and (src_feat.requires_grad or tgt_feat.requires_grad)
    soft = []
    hard = [] if want_hard else None
    for t in range(T):
        tflat = tgt_feat[:, t].reshape(B, C, H * W)
        outs, houts = [], []
        for s in range(0, N, chunk):
            q = src_feat[:, s : s + chunk]
            if use_checkpoint:
                outs.append(checkpoint(_chunk_soft_argmax, q, tflat, grid, temperature, use_reentrant=False))
            else:
                outs.append(_chunk_soft_argmax(q, tflat, grid, temperature))
            if want_hard:
                with torch.no_grad():
                    idx = torch.bmm(q, tflat).argmax(dim=-1)  # (B, n)
                    houts.append(grid[idx])
        soft.append(torch.cat(outs, dim=1))
        if want_hard:
            hard.append(torch.cat(houts, dim=1))
    soft_t = torch.stack(soft, dim=1)
    hard_t = torch.stack(hard, dim=1) if want_hard else None
    return soft_t, hard_t


def gather_source_features(feat: torch.Tensor, src_uv: torch.Tensor) -> torch.Tensor:
    """Features of a (B, C, H, W) map at (B, N, 2) pixel coordinates -> (B, N, C) (bilinear; exact at
    integer pixels)."""
    return sample_map(feat, src_uv, mode="bilinear")


def correspondence_loss(
    features: torch.Tensor,
    corr: Correspondences,
    src_index: int,
    temperature: float = DEFAULT_TEMPERATURE,
    chunk: int = 1024,
    with_metrics: bool = False,
    thresholds: Sequence[float] = PCK_THRESHOLDS_PX,
) -> tuple[torch.Tensor, Optional[MatchMetrics]]:
    """Selfi's soft-argmax correspondence loss on one clip batch.

    Args:
        features: (B, S, C, H, W) per-pixel features of every frame of the clip (L2-normalised along C),
            at the resolution of the correspondences' pixel coordinates.
        corr: pseudo-GT from :func:`.pseudo_gt.pseudo_gt_correspondences` with the same ``src_index``.
        src_index: the source frame.
        temperature, chunk: see :func:`soft_argmax_matches`.
        with_metrics: also compute :class:`MatchMetrics` (hard argmax PCK at ``thresholds`` px).
    Returns:
        (loss, metrics): loss is a scalar = sum(w * ||p_hat - p||^2) / sum(w) in px^2 (zero, still
        attached to the graph, when no correspondence is valid); metrics is None unless asked.
    """
    if features.ndim != 5:
        raise ValueError(f"features must be (B, S, C, H, W), got {tuple(features.shape)}")
    src = gather_source_features(features[:, src_index], corr.src_uv)  # (B, N, C)
    tgt = features[:, corr.tgt_index]
    soft, hard = soft_argmax_matches(src, tgt, temperature, chunk, want_hard=with_metrics)
    w = corr.weight.to(soft.dtype)
    err2 = ((soft - corr.tgt_uv.to(soft.dtype)) ** 2).sum(-1)
    wsum = w.sum()
    if float(wsum) <= 0:
        loss = soft.sum() * 0.0
    else:
        loss = (w * err2).sum() / wsum
    metrics = None
    if with_metrics:
        metrics = match_metrics(soft.detach(), hard, corr.tgt_uv, corr.valid, thresholds)
    return loss, metrics


def match_metrics(soft: Optional[torch.Tensor], hard: torch.Tensor, gt_uv: torch.Tensor,
                  valid: torch.Tensor, thresholds: Sequence[float] = PCK_THRESHOLDS_PX) -> MatchMetrics:
    """PCK (percentage of correct keypoints) of hard matches and soft end-point error.

    Args:
        soft: (..., 2) soft-argmax predictions or None.
        hard: (..., 2) hard-argmax predictions.
        gt_uv: (..., 2) ground-truth target pixels.
        valid: (...) bool, which entries count.
    """
    valid = valid.bool()
    n = int(valid.sum())
    if n == 0:
        return MatchMetrics(pck={float(t): float("nan") for t in thresholds}, num_valid=0)
    e_hard = torch.linalg.norm((hard - gt_uv).float(), dim=-1)[valid]
    pck = {float(t): float((e_hard <= t).float().mean()) for t in thresholds}
    epe = float("nan")
    if soft is not None:
        epe = float(torch.linalg.norm((soft - gt_uv).float(), dim=-1)[valid].mean())
    return MatchMetrics(pck=pck, epe_soft=epe, num_valid=n)


def l2_normalize(features: torch.Tensor, dim: int = -3, eps: float = 1e-8) -> torch.Tensor:
    """L2-normalise features along ``dim`` (channel axis of (..., C, H, W) by default)."""
    return F.normalize(features, dim=dim, eps=eps)

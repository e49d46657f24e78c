"""Dense matching on aligned per-pixel features (Selfi, arXiv 2512.08930, Sec. "applications": aligned
features give matches between frames that feed bundle adjustment).

Query pixels are taken on a regular grid (``stride``) of image A and matched against every pixel of
image B (cosine similarity of L2-normalised features). Three filters, each optional:

- mutual nearest neighbour / cycle check: B's match is matched back into A (dense) and must land within
  ``cycle_px`` of the query (``cycle_px = 0`` is the strict mutual-NN test on the grid),
- ratio test: the best similarity must beat the best one outside a ``ratio_radius`` disc around it by
  the distance ratio ``d1 / d2 < ratio`` with ``d = sqrt(2 - 2 cos)``,
- minimum similarity.

Pixel coordinates are ``(x, y)`` at pixel centres. Works on torch tensors (CPU or GPU).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Matches:
    """Matches between two images.

    Attributes:
        uv0: (M, 2) float32 pixels (x, y) in image A.
        uv1: (M, 2) float32 pixels (x, y) in image B.
        score: (M,) float32 cosine similarity of the matched features.
        num_candidates: number of query pixels tried (before filtering).
    """

    uv0: np.ndarray
    uv1: np.ndarray
    score: np.ndarray
    num_candidates: int = 0

    def __len__(self) -> int:
        return int(len(self.uv0))


def _flat(feat: torch.Tensor) -> torch.Tensor:
    if feat.ndim != 3:
        raise ValueError(f"features must be (C, H, W), got {tuple(feat.shape)}")
    return F.normalize(feat.float(), dim=0).reshape(feat.shape[0], -1)


def _best(q: torch.Tensor, ref: torch.Tensor, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """q (C, n), ref (C, M) -> (best index (n,), best sim (n,))."""
    idx, sim = [], []
    for s in range(0, q.shape[1], chunk):
        m = q[:, s : s + chunk].T @ ref
        v, i = m.max(dim=1)
        idx.append(i)
        sim.append(v)
    return torch.cat(idx), torch.cat(sim)


def match_features(
    feat0: torch.Tensor,
    feat1: torch.Tensor,
    stride: int = 4,
    cycle_px: float = 1.5,
    ratio: float | None = 0.9,
    ratio_radius: float = 4.0,
    min_score: float = -1.0,
    mask0: torch.Tensor | None = None,
    chunk: int = 2048,
) -> Matches:
    """Match grid pixels of image A into image B with cycle (mutual) and ratio checks.

    Args:
        feat0, feat1: (C, H0, W0) and (C, H1, W1) per-pixel features (normalised here).
        stride: grid step of the query pixels in image A.
        cycle_px: max distance (px) between a query and its back-match in A; None disables the check.
        ratio: distance-ratio threshold (Lowe-style) against the best match outside ``ratio_radius`` px
            of the best one; None disables it.
        min_score: minimum cosine similarity.
        mask0: optional (H0, W0) bool of query pixels allowed (e.g. confident depth).
    Returns:
        :class:`Matches` (numpy arrays on the CPU).
    """
    C, H0, W0 = feat0.shape
    _, H1, W1 = feat1.shape
    if feat1.shape[0] != C:
        raise ValueError(f"channel mismatch: {feat0.shape[0]} vs {feat1.shape[0]}")
    f0 = _flat(feat0)
    f1 = _flat(feat1)
    ys, xs = torch.meshgrid(torch.arange(0, H0, stride, device=f0.device),
                            torch.arange(0, W0, stride, device=f0.device), indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    if mask0 is not None:
        keep = mask0.to(f0.device)[ys, xs].bool()
        xs, ys = xs[keep], ys[keep]
    n_cand = int(xs.numel())
    if n_cand == 0:
        z = np.zeros((0, 2), np.float32)
        return Matches(z, z.copy(), np.zeros(0, np.float32), 0)
    q_idx = ys * W0 + xs
    q = f0[:, q_idx]
    j, sim = _best(q, f1, chunk)
    keep = sim >= min_score
    if cycle_px is not None:
        back, _ = _best(f1[:, j], f0, chunk)
        bx, by = back % W0, torch.div(back, W0, rounding_mode="floor")
        d = torch.sqrt((bx - xs).float() ** 2 + (by - ys).float() ** 2)
        keep &= d <= cycle_px
    jx, jy = j % W1, torch.div(j, W1, rounding_mode="floor")
    if ratio is not None:
        # second-best outside a disc around the best match
        sec = torch.empty_like(sim)
        gx = torch.arange(W1, device=f0.device).repeat(H1).float()
        gy = torch.arange(H1, device=f0.device).repeat_interleave(W1).float()
        for s in range(0, q.shape[1], chunk):
            m = q[:, s : s + chunk].T @ f1
            near = (gx[None] - jx[s : s + chunk, None].float()) ** 2 + \
                   (gy[None] - jy[s : s + chunk, None].float()) ** 2 <= ratio_radius ** 2
            m = m.masked_fill(near, -2.0)
            sec[s : s + chunk] = m.max(dim=1).values
        d1 = torch.sqrt((2 - 2 * sim).clamp_min(0))
        d2 = torch.sqrt((2 - 2 * sec).clamp_min(0))
        keep &= d1 < ratio * d2
    uv0 = torch.stack([xs, ys], -1)[keep].float().cpu().numpy()
    uv1 = torch.stack([jx, jy], -1)[keep].float().cpu().numpy()
    return Matches(uv0, uv1, sim[keep].float().cpu().numpy(), n_cand)

"""Building blocks of VGGT's point tracker (a CoTracker / VGGSfM-style iterative track refiner).

Source: Wang et al., VGGT (CVPR 2025) Sec. 3.3 "Tracking"; official code github facebookresearch/vggt,
``vggt/heads/track_modules/`` (``base_track_predictor.py`` ``BaseTrackerPredictor``, ``blocks.py``
``EfficientUpdateFormer`` / ``CorrBlock``), after CoTracker (Karaev et al., ECCV 2024). Components:

- :class:`CorrPyramid`: a ``levels``-level average-pooled pyramid of feature maps; for each track it
  correlates the track feature with every pixel of a level (``<f, g> / sqrt(C)``) and samples a
  ``(2r+1)^2`` window around the current position (zero padding).
- :class:`EfficientUpdateFormer`: alternating attention over time (per track) and over space through
  ``num_virtual_tracks`` learned virtual tracks (virtual<-points, virtual self-attention,
  points<-virtual). The blocks use ``nn.MultiheadAttention`` and add the residual to the
  **normalised** input (``x = LN1(x); x = x + Attn(x); x = x + MLP(LN2(x))``).
- :class:`BaseTrackerPredictor`: the iterative refinement loop.

Coordinates are (x, y) pixels of the feature map with the align-corners convention (0 = centre of the
first pixel).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------- sampling
def sample_bilinear(inp: torch.Tensor, xy: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Bilinear ``grid_sample`` of ``inp`` (N, C, H, W) at pixel coordinates ``xy`` (N, h, w, 2).

    ``x`` in [0, W-1] and ``y`` in [0, H-1] map to the pixel centres (align_corners=True).
    Returns (N, C, h, w).
    """
    H, W = inp.shape[-2:]
    scale = torch.tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)], dtype=inp.dtype, device=inp.device)
    grid = xy.detach().to(device=inp.device, dtype=inp.dtype) * scale - 1.0
    return F.grid_sample(inp, grid, mode="bilinear", align_corners=True, padding_mode=padding_mode)


def sample_at_points(fmap: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Features of ``fmap`` (B, C, H, W) at points ``xy`` (B, N, 2) -> (B, N, C) (border padding)."""
    out = sample_bilinear(fmap, xy[:, :, None, :])  # (B, C, N, 1)
    return out[..., 0].transpose(1, 2)


# ------------------------------------------------------------------------------------- embeddings
def sincos_grid_embedding(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2D sin/cos embedding of an integer pixel grid, (1, dim, rows, cols), float32.

    Channels: ``[sin(x w), cos(x w), sin(y w), cos(y w)]``, each ``dim/4`` wide, with
    ``w_k = 10000^(-k/(dim/4))`` (x = column, y = row).
    """
    if dim % 4:
        raise ValueError(f"grid embedding dim must be divisible by 4, got {dim}")
    n = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(n, dtype=torch.float32) / n)
    ys, xs = torch.meshgrid(torch.arange(rows, dtype=torch.float32),
                            torch.arange(cols, dtype=torch.float32), indexing="ij")
    ax = xs.reshape(-1, 1) * omega
    ay = ys.reshape(-1, 1) * omega
    emb = torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], dim=1)  # (rows*cols, dim)
    return emb.reshape(rows, cols, dim).permute(2, 0, 1)[None]


def flow_embedding(xy: torch.Tensor, C: int) -> torch.Tensor:
    """Sin/cos embedding of 2D displacements ``xy`` (M, S, 2) -> (M, S, 2C), float32.

    For each coordinate c in (x, y), a C-wide block with ``sin(c f_k)`` at even and ``cos(c f_k)`` at odd
    channels, ``f_k = 2k * 1000 / C`` for k < C/2; the x block comes first.
    """
    freq = torch.arange(0, C, 2, device=xy.device, dtype=torch.float32) * (1000.0 / C)
    out = []
    for c in (xy[..., 0:1], xy[..., 1:2]):
        a = c.float() * freq
        out.append(torch.stack([a.sin(), a.cos()], dim=-1).flatten(-2))  # interleave sin/cos
    return torch.cat(out, dim=-1)


# ----------------------------------------------------------------------------------------- blocks
class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2."""

    def __init__(self, in_features: int, hidden_features: int, out_features: Optional[int] = None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttnBlock(nn.Module):
    """``x = norm1(x); x += MHA(x, x, x); x += mlp(norm2(x))`` (keys ``norm1, attn, norm2, mlp``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """``x = norm1(x); c = norm_context(c); x += MHA(x, c, c); x += mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class EfficientUpdateFormer(nn.Module):
    """Space-time transformer predicting per-track, per-frame updates.

    Input (B, N, S, input_dim) -> output (B, N, S, output_dim). After every time block i with
    ``i % (time_depth // space_depth) == 0`` a space step runs over the N tracks plus the virtual tracks
    of each frame. The input is LayerNormed and projected; the projected input is added back before
    ``output_norm`` and ``flow_head``. (The parameter name ``virual_tracks`` matches the checkpoint.)
    """

    def __init__(self, space_depth: int = 6, time_depth: int = 6, input_dim: int = 388,
                 hidden_size: int = 384, num_heads: int = 8, output_dim: int = 130,
                 mlp_ratio: float = 4.0, num_virtual_tracks: int = 64):
        super().__init__()
        if space_depth < 1 or time_depth < space_depth:
            raise ValueError("need 1 <= space_depth <= time_depth")
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
        self.time_blocks = nn.ModuleList([SelfAttnBlock(hidden_size, num_heads, mlp_ratio)
                                          for _ in range(time_depth)])
        self.space_virtual_blocks = nn.ModuleList([SelfAttnBlock(hidden_size, num_heads, mlp_ratio)
                                                   for _ in range(space_depth)])
        self.space_point2virtual_blocks = nn.ModuleList([CrossAttnBlock(hidden_size, num_heads, mlp_ratio)
                                                         for _ in range(space_depth)])
        self.space_virtual2point_blocks = nn.ModuleList([CrossAttnBlock(hidden_size, num_heads, mlp_ratio)
                                                         for _ in range(space_depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.input_transform(self.input_norm(x))
        init_tokens = tokens
        B, N_pts, T, C = tokens.shape
        V = self.num_virtual_tracks
        tokens = torch.cat([tokens, self.virual_tracks.expand(B, V, T, C).to(tokens.dtype)], dim=1)
        N = N_pts + V
        every = len(self.time_blocks) // len(self.space_virtual_blocks)
        j = 0
        for i, tblk in enumerate(self.time_blocks):
            tokens = tblk(tokens.reshape(B * N, T, C)).reshape(B, N, T, C)
            if i % every == 0 and j < len(self.space_virtual_blocks):
                space = tokens.permute(0, 2, 1, 3).reshape(B * T, N, C)
                pts, virt = space[:, :N_pts], space[:, N_pts:]
                virt = self.space_virtual2point_blocks[j](virt, pts)
                virt = self.space_virtual_blocks[j](virt)
                pts = self.space_point2virtual_blocks[j](pts, virt)
                tokens = torch.cat([pts, virt], dim=1).reshape(B, T, N, C).permute(0, 2, 1, 3)
                j += 1
        tokens = tokens[:, :N_pts] + init_tokens
        return self.flow_head(self.output_norm(tokens))


class CorrPyramid:
    """Multi-scale correlation lookup (not a Module; built per forward pass).

    Args:
        fmaps: (B, S, C, H, W) feature maps; level l is average-pooled by 2^l (floor sizes).
        levels: number of pyramid levels.
        radius: window radius r, (2r+1)^2 samples per level.
    """

    def __init__(self, fmaps: torch.Tensor, levels: int, radius: int):
        B, S, C, H, W = fmaps.shape
        self.radius = radius
        self.pyramid = [fmaps]
        cur = fmaps
        for _ in range(levels - 1):
            b, s, c, h, w = cur.shape
            if h < 2 or w < 2:
                raise ValueError(f"feature map {H}x{W} too small for {levels} correlation levels")
            cur = F.avg_pool2d(cur.reshape(b * s, c, h, w), kernel_size=2, stride=2)
            cur = cur.reshape(b, s, c, *cur.shape[-2:])
            self.pyramid.append(cur)
        d = torch.linspace(-radius, radius, 2 * radius + 1, dtype=fmaps.dtype, device=fmaps.device)
        # Offsets stacked as (first-index offset, second-index offset) and added to (x, y); the window is
        # symmetric, so this only fixes the order in which the (2r+1)^2 samples are laid out.
        a, b_ = torch.meshgrid(d, d, indexing="ij")
        self.offsets = torch.stack([a, b_], dim=-1)  # (2r+1, 2r+1, 2)

    def sample(self, targets: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Correlation windows: targets (B, S, N, C), coords (B, S, N, 2) level-0 pixels ->
        (B, S, N, levels * (2r+1)^2)."""
        B, S, N, C = targets.shape
        k = 2 * self.radius + 1
        out = []
        for lvl, fm in enumerate(self.pyramid):
            h, w = fm.shape[-2:]
            corr = torch.matmul(targets, fm.reshape(B, S, C, h * w)) / math.sqrt(C)  # (B, S, N, h*w)
            centre = coords.reshape(B * S * N, 1, 1, 2) / (2 ** lvl)
            grid = centre + self.offsets.to(coords.dtype).reshape(1, k, k, 2)
            win = sample_bilinear(corr.reshape(B * S * N, 1, h, w), grid, padding_mode="zeros")
            out.append(win.reshape(B, S, N, k * k))
        return torch.cat(out, dim=-1)


class BaseTrackerPredictor(nn.Module):
    """Iterative track refinement (VGGT ``track_head.tracker``; official ``base_track_predictor.py``).

    Args:
        stride: feature-map stride relative to the input pixels (2).
        corr_levels, corr_radius: correlation pyramid (7, 4).
        latent_dim: feature channels (128); transformer input = 3 * latent_dim + 4.
        hidden_size, depth, num_heads, num_virtual_tracks: update transformer (384, 6, 8, 64).
        max_scale: flow normalisation (518).
        predict_conf: also predict a confidence per track and frame.
    """

    def __init__(self, stride: int = 2, corr_levels: int = 7, corr_radius: int = 4, latent_dim: int = 128,
                 hidden_size: int = 384, depth: int = 6, num_heads: int = 8, num_virtual_tracks: int = 64,
                 max_scale: float = 518, predict_conf: bool = True):
        super().__init__()
        self.stride = stride
        self.latent_dim = latent_dim
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.max_scale = max_scale
        self.predict_conf = predict_conf
        self.flows_emb_dim = latent_dim // 2
        self.transformer_dim = 3 * latent_dim + 4
        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden_size, latent_dim)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = EfficientUpdateFormer(depth, depth, self.transformer_dim, hidden_size, num_heads,
                                                  latent_dim + 2, 4.0, num_virtual_tracks)
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        if predict_conf:
            self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def forward(self, query_points: torch.Tensor, fmaps: torch.Tensor, iters: int = 4
                ) -> Tuple[List[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
        """Track ``query_points`` (B, N, 2) (x, y input pixels of frame 0) through ``fmaps``
        (B, S, C, H/stride, W/stride).

        Returns:
            (list of ``iters`` tracks (B, S, N, 2) in input pixels, vis (B, S, N) in (0, 1),
            conf (B, S, N) in (0, 1) or None). Frame 0 always equals the query.
        """
        B, N, D = query_points.shape
        _, S, C, Hf, Wf = fmaps.shape
        if D != 2 or C != self.latent_dim or fmaps.shape[0] != B:
            raise ValueError(f"expected query_points (B, N, 2) and fmaps (B, S, {self.latent_dim}, h, w), got "
                             f"{tuple(query_points.shape)} and {tuple(fmaps.shape)}")
        L = self.latent_dim
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        query = query_points / float(self.stride)
        coords = query[:, None].expand(B, S, N, 2).clone()
        query_feat = sample_at_points(fmaps[:, 0], coords[:, 0])  # (B, N, C)
        track_feats = query_feat[:, None].expand(B, S, N, C)
        corr = CorrPyramid(fmaps, self.corr_levels, self.corr_radius)

        pos = sincos_grid_embedding(self.transformer_dim, Hf, Wf).to(query.device)
        pos = sample_at_points(pos.expand(B, -1, -1, -1), coords[:, 0]).reshape(B * N, 1, -1)
        ref = torch.cat([self.query_ref_token[:, :1], self.query_ref_token[:, 1:2].expand(-1, S - 1, -1)], dim=1)

        preds: List[torch.Tensor] = []
        for _ in range(iters):
            coords = coords.detach()
            fc = corr.sample(track_feats, coords)  # (B, S, N, levels*(2r+1)^2)
            fc = self.corr_mlp(fc.permute(0, 2, 1, 3).reshape(B * N, S, -1))
            flows = (coords - coords[:, :1]).permute(0, 2, 1, 3).reshape(B * N, S, 2)
            femb = torch.cat([flow_embedding(flows, self.flows_emb_dim),
                              flows / self.max_scale, flows / self.max_scale], dim=-1)
            tf = track_feats.permute(0, 2, 1, 3).reshape(B * N, S, L)
            x = torch.cat([femb, fc, tf], dim=-1) + pos
            x = x + ref.to(device=x.device, dtype=x.dtype)
            delta = self.updateformer(x.reshape(B, N, S, -1)).reshape(B * N, S, -1)
            d_xy, d_feat = delta[..., :2], delta[..., 2:]
            tf = tf.reshape(B * N * S, L) + self.ffeat_updater(self.ffeat_norm(d_feat.reshape(B * N * S, L)))
            track_feats = tf.reshape(B, N, S, L).permute(0, 2, 1, 3)
            coords = coords + d_xy.reshape(B, N, S, 2).permute(0, 2, 1, 3)
            coords = torch.cat([query[:, None].to(coords.dtype), coords[:, 1:]], dim=1)
            preds.append(coords * self.stride)

        flat = track_feats.reshape(B * S * N, L)
        vis = torch.sigmoid(self.vis_predictor(flat).reshape(B, S, N))
        conf = torch.sigmoid(self.conf_predictor(flat).reshape(B, S, N)) if self.predict_conf else None
        return preds, vis, conf

"""DINOv2 ViT with register tokens, as the patch embedding of VGGT.

Sources: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", 2023, and Darcet et
al., "Vision Transformers Need Registers", ICLR 2024; official github facebookresearch/dinov2
``dinov2/models/vision_transformer.py`` (``DinoVisionTransformer``, ``interpolate_pos_encoding``), vendored by
VGGT as ``vggt/layers/vision_transformer.py`` (used as ``Aggregator.patch_embed``).

State-dict names (under ``aggregator.patch_embed``): cls_token (1,1,C), pos_embed (1, 1+G*G, C) with
G = img_size / patch_size (37 for 518/14), register_tokens (1,R,C), mask_token (1,C) (unused at
inference), patch_embed.proj (Conv2d 3->C, kernel = stride = patch), blocks.{i} (no qk-norm, no RoPE,
LayerNorm eps 1e-6, LayerScale), norm (LN eps 1e-6).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfi_ros.model.layers.block import Block


class PatchEmbed(nn.Module):
    """Patchify conv: (N, 3, H, W) -> (N, h*w, C), row-major (token = y*w + x). No norm."""

    def __init__(self, patch_size: int = 14, in_chans: int = 3, embed_dim: int = 1024):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


def resize_pos_embed_grid(grid: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Resize a (1, C, G, G) positional-embedding grid to (1, C, h, w).

    Bicubic (a = -0.5 via PyTorch's antialias path), ``antialias=True``, ``align_corners=False``, explicit
    output size, in fp32 (as DINOv2's ``interpolate_pos_encoding``). Returns fp32.
    """
    return F.interpolate(grid.float(), size=(h, w), mode="bicubic", antialias=True, align_corners=False)


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with registers, returning the final-normed patch tokens.

    Args:
        img_size: training image size (pos_embed grid = img_size // patch_size squared).
        patch_size, embed_dim, depth, num_heads, mlp_ratio: ViT shape (ViT-L/14: 14, 1024, 24, 16, 4).
        num_register_tokens: 4.
        init_values: LayerScale init (1.0 for DINOv2).

    Forward: x (N, 3, H, W) ImageNet-normalised -> (N, h*w, C) ``x_norm_patchtokens``.
    """

    def __init__(self, img_size: int = 518, patch_size: int = 14, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, mlp_ratio: float = 4.0, num_register_tokens: int = 4,
                 init_values: float = 1.0):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_register_tokens = num_register_tokens
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, init_values=init_values, qk_norm=False,
                  rope=None, norm_eps=1e-6)
            for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        if not any(p.is_meta for p in self.parameters()):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)
            nn.init.normal_(self.register_tokens, std=1e-6)

    def interpolate_pos_encoding(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """pos_embed for a (h, w) patch grid: (1, 1 + h*w, C) in ``x``'s dtype (cls entry unchanged)."""
        n_table = self.pos_embed.shape[1] - 1
        G = int(math.isqrt(n_table))
        if h * w == n_table and h == w:
            return self.pos_embed.to(x.dtype)
        cls_pos = self.pos_embed[:, :1].float()
        grid = self.pos_embed[:, 1:].float().reshape(1, G, G, -1).permute(0, 3, 1, 2)
        grid = resize_pos_embed_grid(grid, h, w).permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([cls_pos, grid], dim=1).to(x.dtype)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 1 + R + h*w, C): [cls, registers, patches] with pos_embed on cls+patches."""
        N, _, H, W = x.shape
        h, w = H // self.patch_size, W // self.patch_size
        t = self.patch_embed(x)
        # torch.cat promotes (under autocast: bf16 patches + fp32 cls -> fp32), as the official code
        t = torch.cat([self.cls_token.expand(N, -1, -1), t], dim=1)
        t = t + self.interpolate_pos_encoding(t, h, w)
        regs = self.register_tokens.expand(N, -1, -1).to(t.dtype)
        return torch.cat([t[:, :1], regs, t[:, 1:]], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.prepare_tokens(x)
        for blk in self.blocks:
            t = blk(t)
        t = self.norm(t)
        return t[:, 1 + self.num_register_tokens:]

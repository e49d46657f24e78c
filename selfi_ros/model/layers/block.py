"""Pre-norm transformer block with LayerScale (DINOv2, VGGT aggregator, SAIL reloc, camera-head trunk).

    x <- x + ls1.gamma * attn(norm1(x))
    x <- x + ls2.gamma * mlp(norm2(x)),   mlp = fc2(GELU(fc1(.)))   (exact erf GELU)

No dropout / drop-path (inference only). State-dict names: norm1, attn.qkv, attn.proj, attn.q_norm,
attn.k_norm, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma (official github facebookresearch/vggt
``vggt/layers/block.py`` ``Block``, from DINOv2's ``dinov2/layers/block.py``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from selfi_ros.model.layers.attention import Attention
from selfi_ros.model.layers.rope import RotaryPositionEmbedding2D


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, in_features: int, hidden_features: int, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel scale ``gamma`` (init ``init_values``)."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm attention + MLP block.

    Args:
        dim: channels C.
        num_heads: attention heads.
        mlp_ratio: hidden = int(C * mlp_ratio).
        qkv_bias, proj_bias, ffn_bias: Linear biases.
        init_values: LayerScale init; None -> no LayerScale (Identity, no ``ls*.gamma`` keys).
        qk_norm: q/k LayerNorm over head_dim.
        rope: shared :class:`RotaryPositionEmbedding2D` or None.
        norm_eps: eps of norm1, norm2 (and q/k norms). DINOv2 uses 1e-6, VGGT's aggregator/heads 1e-5.

    Forward ``(x, pos=None, attn_mask=None, kv_prefix=None)``: x (B, N, C) -> (B, N, C); see
    :meth:`Attention.forward` for the optional arguments.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_bias: bool = True, ffn_bias: bool = True, init_values: Optional[float] = None,
                 qk_norm: bool = False, rope: Optional[RotaryPositionEmbedding2D] = None,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias,
                              qk_norm=qk_norm, rope=rope, norm_eps=norm_eps)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None,
                kv_prefix: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos, attn_mask=attn_mask, kv_prefix=kv_prefix))
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return x

    def cache_kv(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        """K (after k-norm and RoPE) and V of ``norm1(x)``, each (B, heads, N, head_dim).

        SAIL-Recon's anchor cache for this block (Deng et al., arXiv 2508.17972, Sec. 3; the K/V cache of
        ``SailRecon.tmp_forward`` in github HKUST-SAIL/sail-recon).
        """
        _, k, v = self.attn.project_qkv(self.norm1(x), pos)
        return k, v

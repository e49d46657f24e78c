"""Multi-head self-attention with optional q/k LayerNorm, 2D RoPE and a key/value prefix.

Layout (official github facebookresearch/vggt ``vggt/layers/attention.py`` ``Attention``): ``qkv`` is
Linear(C, 3C) whose output is [3][heads][head_dim]; ``proj`` is Linear(C, C). q/k-norm is a LayerNorm over
head_dim shared across heads, applied before RoPE; v is neither normalised nor rotated. Attention is
``F.scaled_dot_product_attention`` with its default scale 1/sqrt(head_dim).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from selfi_ros.model.layers.rope import RotaryPositionEmbedding2D


class Attention(nn.Module):
    """Self-attention ``proj(softmax(q k^T / sqrt(d)) v)``.

    Args:
        dim: channels C (divisible by num_heads).
        num_heads: heads; head_dim = C / num_heads.
        qkv_bias, proj_bias: biases of the two Linears.
        qk_norm: LayerNorm(head_dim, eps=norm_eps) on q and k (``q_norm``, ``k_norm``); Identity if False.
        rope: a :class:`RotaryPositionEmbedding2D` or None (then ``pos`` is ignored).
        norm_eps: eps of the q/k LayerNorms.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, proj_bias: bool = True,
                 qk_norm: bool = False, rope: Optional[RotaryPositionEmbedding2D] = None,
                 norm_eps: float = 1e-5):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope

    def project_qkv(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of ``x`` (B, N, C), each (B, heads, N, head_dim); q/k normalised and rotated.

        This is what SAIL-Recon caches for anchors (K after k-norm and RoPE, V raw).
        """
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q = self.rope(q, pos)
            k = self.rope(k, pos)
        return q, k, v

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None,
                kv_prefix: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """Attend ``x`` (B, N, C) to itself.

        Args:
            pos: (B, N, 2) or (N, 2) RoPE positions (used only when ``rope`` is set).
            attn_mask: optional boolean mask broadcastable to (B, heads, N, N_kv), True = may attend
                (PyTorch SDPA convention), or an additive float mask.
            kv_prefix: optional (K, V), each (B, heads, M, head_dim), prepended to this input's own keys
                and values (SAIL-Recon query pass: cached anchor K/V). K must already be normalised and
                rotated, exactly as returned by :meth:`project_qkv`.
        Returns:
            (B, N, C).
        """
        B, N, C = x.shape
        q, k, v = self.project_qkv(x, pos)
        if kv_prefix is not None:
            k_pre, v_pre = kv_prefix
            k = torch.cat([k_pre.to(device=k.device, dtype=k.dtype), k], dim=2)
            v = torch.cat([v_pre.to(device=v.device, dtype=v.dtype), v], dim=2)
        if q.dtype != v.dtype or k.dtype != v.dtype:
            # Under autocast q/k come out of the fp32 LayerNorms while v is low precision; SDPA is then
            # run in the autocast dtype (as autocast itself does on CUDA). Without autocast: promote.
            if torch.is_autocast_enabled(q.device.type):
                common = torch.get_autocast_dtype(q.device.type)
            else:
                common = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
            q, k, v = q.to(common), k.to(common), v.to(common)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj(out)

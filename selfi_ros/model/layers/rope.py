"""2D rotary position embedding (RoPE) as used by VGGT's aggregator (Su et al., "RoFormer", 2021, extended
to 2D; official github facebookresearch/vggt ``vggt/layers/rope.py``: ``RotaryPositionEmbedding2D``,
``PositionGetter``).

Each head's D channels are split in two halves: the first half is rotated by the token's row (y)
position, the second half by its column (x) position. Within a half of size D/2, channel i and channel
i + D/4 form a rotate-half pair rotated by angle ``p * base**(-2i/(D/2))`` (base 100 in VGGT).
Special tokens sit at position (0, 0), so they are never rotated; patch (y, x) sits at (y + 1, x + 1).
"""
from __future__ import annotations

import weakref

import torch
from torch import nn


class RotaryPositionEmbedding2D(nn.Module):
    """2D RoPE with no parameters (nothing appears in the state_dict).

    Args:
        base: frequency base (VGGT: 100.0).

    Forward:
        x: (B, heads, N, D) queries or keys, D divisible by 4.
        pos: (B, N, 2) integer positions (row, col), or (N, 2) shared by the batch.
        returns a tensor of x's shape and dtype.
    """

    def __init__(self, base: float = 100.0):
        super().__init__()
        self.base = float(base)
        self._cache: list = []

    def _cos_sin(self, half_dim: int, max_pos: int, device, dtype):
        # Angles in fp32 (float positions x fp32 frequencies), cast to the q/k dtype, then cos / sin.
        inv_freq = 1.0 / (self.base ** (torch.arange(0, half_dim, 2, device=device).float() / half_dim))
        positions = torch.arange(max_pos, device=device, dtype=inv_freq.dtype)
        angles = torch.einsum("i,j->ij", positions, inv_freq)  # (max_pos, half_dim / 2)
        angles = torch.cat([angles, angles], dim=-1).to(dtype)  # (max_pos, half_dim)
        return angles.cos(), angles.sin()

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1] // 2
        return torch.cat([-x[..., d:], x[..., :d]], dim=-1)

    def _gathered(self, pos: torch.Tensor, half: int, dtype, device):
        """Per-token cos / sin for both axes, cached for the last few ``pos`` tensors (the aggregator
        reuses one positions tensor for all its layers, so the table and gather run once per forward)."""
        for ref, key, val in self._cache:
            if ref() is pos and key == (half, dtype, device):
                return val
        max_pos = int(pos.max().item()) + 1 if pos.numel() else 1
        cos, sin = self._cos_sin(half, max_pos, device, dtype)
        idx = pos.long()
        val = tuple((cos[idx[..., a]].unsqueeze(-3), sin[idx[..., a]].unsqueeze(-3)) for a in range(2))
        try:
            ref = weakref.ref(pos)
        except TypeError:  # pragma: no cover
            return val
        self._cache = ([(ref, (half, dtype, device), val)] + [c for c in self._cache if c[0]() is not None])[:4]
        return val

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"RoPE expects x of shape (B, heads, N, D), got {tuple(x.shape)}")
        D = x.shape[-1]
        if D % 4 != 0:
            raise ValueError(f"RoPE head dim must be divisible by 4, got {D}")
        if pos.dim() not in (2, 3) or pos.shape[-1] != 2 or pos.shape[-2] != x.shape[2]:
            raise ValueError(f"RoPE positions must be ({x.shape[2]}, 2) or (B, {x.shape[2]}, 2), "
                             f"got {tuple(pos.shape)}")
        half = D // 2
        tables = self._gathered(pos, half, x.dtype, x.device)  # each (..., 1, N, half)
        out = []
        for (c, s), chunk in zip(tables, x.split(half, dim=-1)):
            out.append(chunk * c + self._rotate_half(chunk) * s)
        return torch.cat(out, dim=-1)


def patch_positions(h: int, w: int, num_special: int, device=None) -> torch.Tensor:
    """RoPE positions for one frame's tokens: ``num_special`` tokens at (0, 0) then patches row-major.

    Returns:
        (num_special + h*w, 2) int64 tensor; patch (y, x) at (y + 1, x + 1).
    """
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    grid = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=-1) + 1
    special = torch.zeros(num_special, 2, dtype=grid.dtype, device=device)
    return torch.cat([special, grid], dim=0)

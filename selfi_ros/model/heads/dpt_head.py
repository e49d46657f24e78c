"""DPT head over VGGT aggregator layers (Ranftl et al., "Vision Transformers for Dense Prediction",
ICCV 2021, as used by VGGT's depth/point heads and as the track head's feature extractor).

Checkpoint-exact counterpart of the official github facebookresearch/vggt ``vggt/heads/dpt_head.py``
(``DPTHead`` incl. its ``feature_only`` variant, ``ResidualConvUnit``, ``FeatureFusionBlock``).
State-dict names: ``norm``, ``projects.{0..3}``, ``resize_layers.{0,1,3}`` (2 is Identity),
``scratch.layer{1..4}_rn``, ``scratch.refinenet{1..4}.{out_conv,resConfUnit1,resConfUnit2}.*``
(refinenet4 has no resConfUnit1), ``scratch.output_conv1``, ``scratch.output_conv2.{0,2}``.

Generic: every width is configurable, so the Selfi adapter (Selfi, Deng et al. 2025) can reuse it with
``feature_only=True`` and a small ``features`` width, e.g.
``DPTHead(dim_in=2048, features=24, out_channels=(48, 96, 192, 192), feature_only=True)``
returns per-pixel features (B, S, 24, H, W).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from selfi_ros.model.heads.activations import activate_head

# F.interpolate indexes with 32-bit ints; split along the batch above this many output elements.
_INTERP_MAX_ELEMENTS = 1_500_000_000


def interpolate_bilinear(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` to an explicit ``size`` (rows, cols).

    Splits very large batches (output above 1.5e9 elements) into pieces; the result is identical.
    """
    size = (int(size[0]), int(size[1]))
    n_out = x.shape[0] * x.shape[1] * size[0] * size[1]
    if n_out > _INTERP_MAX_ELEMENTS and x.shape[0] > 1:
        pieces = math.ceil(n_out / _INTERP_MAX_ELEMENTS)
        return torch.cat([F.interpolate(c, size=size, mode="bilinear", align_corners=True)
                          for c in x.chunk(pieces, dim=0)], dim=0)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def uv_position_embedding(channels: int, rows: int, cols: int, aspect_ratio: float,
                          dtype: torch.dtype = torch.float32,
                          device: Optional[torch.device] = None) -> torch.Tensor:
    """DPT's UV sin/cos position embedding (official ``vggt/heads/utils.py`` ``create_uv_grid`` +
    ``position_grid_to_embed``), unscaled.

    Args:
        channels: C, divisible by 4.
        rows, cols: feature-map size (h_f, w_f).
        aspect_ratio: the **input image's** W / H.
    Returns:
        (C, rows, cols) tensor in ``dtype``: channels [sin(u w), cos(u w), sin(v w), cos(v w)] with
        w_k = 100^(-k/(C/4)); u spans +-s_x (cols-1)/cols, v spans +-s_y (rows-1)/rows, where
        (s_x, s_y) = (r, 1) / sqrt(r^2 + 1). Products are formed in float64, then cast.
    """
    if channels % 4 != 0:
        raise ValueError(f"UV embedding needs channels divisible by 4, got {channels}")
    diag = (aspect_ratio ** 2 + 1.0) ** 0.5
    sx, sy = aspect_ratio / diag, 1.0 / diag
    u = torch.linspace(-sx * (cols - 1) / cols, sx * (cols - 1) / cols, steps=cols, dtype=dtype, device=device)
    v = torch.linspace(-sy * (rows - 1) / rows, sy * (rows - 1) / rows, steps=rows, dtype=dtype, device=device)
    n = channels // 4
    omega = torch.arange(n, dtype=torch.float64, device=device) / n
    omega = 1.0 / (100.0 ** omega)
    au = u.to(torch.float64)[:, None] * omega  # (cols, n)
    av = v.to(torch.float64)[:, None] * omega  # (rows, n)
    eu = torch.cat([torch.sin(au), torch.cos(au)], dim=-1).to(torch.float32)  # (cols, 2n)
    ev = torch.cat([torch.sin(av), torch.cos(av)], dim=-1).to(torch.float32)  # (rows, 2n)
    emb = torch.cat([eu[None, :, :].expand(rows, -1, -1), ev[:, None, :].expand(-1, cols, -1)], dim=-1)
    return emb.permute(2, 0, 1).to(dtype)


class ResidualConvUnit(nn.Module):
    """``conv2(ReLU(conv1(a))) + a`` with ``a = ReLU(x)`` (rectified skip, as the official
    ``ResidualConvUnit`` with its in-place ReLU)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=True)

    def forward(self, x: torch.Tensor, consume: bool = False) -> torch.Tensor:
        """``consume=True`` lets the unit overwrite ``x`` (the caller no longer needs it): ReLU and the
        skip addition then run in place. Only used without autograd; the values are identical."""
        inplace = consume and not torch.is_grad_enabled()
        a = x.relu_() if inplace else F.relu(x)
        h = self.conv1(a)
        h = h.relu_() if inplace else F.relu(h)
        out = self.conv2(h)
        del h
        return out.add_(a) if inplace else out + a


class FeatureFusionBlock(nn.Module):
    """RefineNet fusion: ``out_conv(resize(RCU2(x [+ RCU1(skip)])))``; resize before out_conv."""

    def __init__(self, features: int, has_residual: bool = True):
        super().__init__()
        self.has_residual = has_residual
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1, 1, 0, bias=True)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None,
                size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        return self._fuse(x, skip, size, consume=False)

    def _fuse(self, x: torch.Tensor, skip: Optional[torch.Tensor], size: Optional[Tuple[int, int]],
              consume: bool) -> torch.Tensor:
        """:meth:`forward`; ``consume=True`` (no autograd, caller drops ``x`` and ``skip``) works in place."""
        inplace = consume and not torch.is_grad_enabled()
        if self.has_residual:
            if skip is None:
                raise ValueError("this fusion block needs a skip input")
            res = self.resConfUnit1(skip, consume=inplace)
            x = x.add_(res) if inplace else x + res
            del res
        x = self.resConfUnit2(x, consume=inplace)
        if size is None:
            size = (2 * x.shape[-2], 2 * x.shape[-1])
        x = interpolate_bilinear(x, size)
        return self.out_conv(x)


class DPTHead(nn.Module):
    """DPT head reading four aggregator layers (VGGT depth/point heads, track feature extractor).

    Args:
        dim_in: token channels (2 x aggregator embed dim; 2048 for VGGT-1B).
        patch_size: pixels per patch (14).
        output_dim: channels of the final conv = value channels + 1 confidence (depth 2, points 4).
        activation: value activation (see :mod:`.activations`): "exp" (depth), "inv_log" (points).
        conf_activation: confidence activation, "expp1" in VGGT.
        features: fusion width (256 for depth/points, 128 for tracking, small for an adapter).
        out_channels: widths of the four projected levels (256, 512, 1024, 1024).
        intermediate_layer_idx: which aggregator outputs feed the four levels (4, 11, 17, 23).
        pos_embed: add the UV position embedding after ``projects`` and after the final upsample.
        feature_only: return the (B, S, features, H/down_ratio, W/down_ratio) map after
            ``output_conv1`` (which is then features -> features) instead of predictions.
        down_ratio: output resolution divisor (the track head uses 2).

    Input: ``aggregated_tokens_list`` (list indexed by layer; entries not in
    ``intermediate_layer_idx`` may be None), each (B, S, P, dim_in) with patch tokens from
    ``patch_start_idx``; ``images`` (B, S, 3, H, W) — only H, W are used, both multiples of
    ``patch_size``.
    """

    def __init__(self, dim_in: int = 2048, patch_size: int = 14, output_dim: int = 4,
                 activation: str = "inv_log", conf_activation: str = "expp1", features: int = 256,
                 out_channels: Sequence[int] = (256, 512, 1024, 1024),
                 intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23), pos_embed: bool = True,
                 feature_only: bool = False, down_ratio: int = 1):
        super().__init__()
        if len(out_channels) != 4 or len(intermediate_layer_idx) != 4:
            raise ValueError("DPTHead needs exactly 4 out_channels and 4 intermediate_layer_idx")
        if not feature_only and output_dim < 2:
            raise ValueError("output_dim must be >= 2 (value channels + confidence)")
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = tuple(int(i) for i in intermediate_layer_idx)
        oc = list(out_channels)

        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, c, 1, 1, 0) for c in oc])
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4, padding=0),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2, padding=0),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = nn.Module()
        for i, c in enumerate(oc):
            setattr(self.scratch, f"layer{i + 1}_rn", nn.Conv2d(c, features, 3, 1, 1, bias=False))
        self.scratch.refinenet1 = FeatureFusionBlock(features)
        self.scratch.refinenet2 = FeatureFusionBlock(features)
        self.scratch.refinenet3 = FeatureFusionBlock(features)
        self.scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, 3, 1, 1)
        else:
            half = features // 2
            self.scratch.output_conv1 = nn.Conv2d(features, half, 3, 1, 1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(half, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, output_dim, 1, 1, 0))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _add_uv(x: torch.Tensor, W: int, H: int, ratio: float = 0.1, inplace: bool = False) -> torch.Tensor:
        """``x + ratio * uv`` (in place on ``x`` when ``inplace`` and autograd is off; same values)."""
        emb = uv_position_embedding(x.shape[1], x.shape[-2], x.shape[-1], W / H, dtype=x.dtype,
                                    device=x.device)
        emb = ratio * emb[None]
        if inplace and not torch.is_grad_enabled():
            return x.add_(emb)
        return x + emb

    def _validate(self, aggregated_tokens_list, images) -> Tuple[int, int, int, int]:
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be (B, S, 3, H, W), got {tuple(images.shape)}")
        B, S, _, H, W = images.shape
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"H, W = {H}, {W} must be multiples of patch_size {self.patch_size}")
        need = max(self.intermediate_layer_idx)
        if len(aggregated_tokens_list) <= need:
            raise ValueError(f"aggregated_tokens_list has {len(aggregated_tokens_list)} entries, "
                             f"layer {need} is needed")
        for i in self.intermediate_layer_idx:
            t = aggregated_tokens_list[i]
            if t is None or t.ndim != 4 or t.shape[:2] != (B, S):
                raise ValueError(f"aggregated_tokens_list[{i}] must be (B={B}, S={S}, P, C), got "
                                 f"{None if t is None else tuple(t.shape)}")
        return B, S, H, W

    # ------------------------------------------------------------------ forward
    def forward(self, aggregated_tokens_list: List[Optional[torch.Tensor]], images: torch.Tensor,
                patch_start_idx: int, frames_chunk_size: Optional[int] = 8
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Run the head, ``frames_chunk_size`` frames at a time (None or <= 0: all at once).

        Returns:
            feature_only: features (B, S, features, H/down_ratio, W/down_ratio);
            otherwise (pred (B, S, H, W, output_dim - 1), conf (B, S, H, W)), activated.
        Raises:
            ValueError: on malformed inputs (shapes named in the message).
        """
        B, S, H, W = self._validate(aggregated_tokens_list, images)
        if not frames_chunk_size or frames_chunk_size <= 0 or frames_chunk_size >= S:
            return self._forward_frames(aggregated_tokens_list, H, W, patch_start_idx, 0, S)
        outs = [self._forward_frames(aggregated_tokens_list, H, W, patch_start_idx, s,
                                     min(s + frames_chunk_size, S))
                for s in range(0, S, frames_chunk_size)]
        if self.feature_only:
            return torch.cat(outs, dim=1)
        return torch.cat([o[0] for o in outs], dim=1), torch.cat([o[1] for o in outs], dim=1)

    def _level(self, tokens_list, j: int, H: int, W: int, patch_start_idx: int, s0: int, s1: int
               ) -> torch.Tensor:
        """Level j (0..3): norm -> project -> (+UV) -> resize -> ``layer{j+1}_rn``, (B*S, features, h_j, w_j)."""
        ph, pw = H // self.patch_size, W // self.patch_size
        layer = self.intermediate_layer_idx[j]
        x = tokens_list[layer][:, s0:s1, patch_start_idx:]
        B, S, Np, C = x.shape
        if Np != ph * pw:
            raise ValueError(f"layer {layer} has {Np} patch tokens, expected {ph}x{pw}={ph * pw}")
        x = self.norm(x.reshape(B * S, Np, C))
        x = x.transpose(1, 2).reshape(B * S, C, ph, pw)
        x = self.projects[j](x)
        if self.pos_embed:
            x = self._add_uv(x, W, H, inplace=True)
        x = self.resize_layers[j](x)
        return getattr(self.scratch, f"layer{j + 1}_rn")(x)

    def _forward_frames(self, tokens_list, H: int, W: int, patch_start_idx: int, s0: int, s1: int):
        # Levels are built coarse to fine right before their fusion block, so at most one level's
        # maps are alive at a time (the result does not depend on the order: the levels are independent).
        ph, pw = H // self.patch_size, W // self.patch_size
        B = tokens_list[self.intermediate_layer_idx[0]].shape[0]
        S = s1 - s0
        sc = self.scratch
        grid = [(ph * 4, pw * 4), (ph * 2, pw * 2), (ph, pw), ((ph - 1) // 2 + 1, (pw - 1) // 2 + 1)]
        out = sc.refinenet4._fuse(self._level(tokens_list, 3, H, W, patch_start_idx, s0, s1), None,
                                  grid[2], consume=True)
        out = sc.refinenet3._fuse(out, self._level(tokens_list, 2, H, W, patch_start_idx, s0, s1),
                                  grid[1], consume=True)
        out = sc.refinenet2._fuse(out, self._level(tokens_list, 1, H, W, patch_start_idx, s0, s1),
                                  grid[0], consume=True)
        out = sc.refinenet1._fuse(out, self._level(tokens_list, 0, H, W, patch_start_idx, s0, s1),
                                  None, consume=True)
        out = sc.output_conv1(out)
        out = interpolate_bilinear(out, (int(ph * self.patch_size / self.down_ratio),
                                         int(pw * self.patch_size / self.down_ratio)))
        if self.pos_embed:
            out = self._add_uv(out, W, H, inplace=True)
        if self.feature_only:
            return out.reshape(B, S, *out.shape[1:])
        out = sc.output_conv2(out)
        pred, conf = activate_head(out, self.activation, self.conf_activation)
        return pred.reshape(B, S, *pred.shape[1:]), conf.reshape(B, S, *conf.shape[1:])

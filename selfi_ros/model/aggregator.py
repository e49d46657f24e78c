"""VGGT aggregator: DINOv2 patch tokens + alternating frame / global attention.

Source: Wang et al., "VGGT: Visual Geometry Grounded Transformer", CVPR 2025, Sec. 3.2 "Feature backbone"
(alternating-attention transformer); official code github facebookresearch/vggt, ``vggt/models/aggregator.py``
(class ``Aggregator``: ``_process_frame_attention``, ``_process_global_attention``, ``slice_expand_and_flatten``).

Token layout per frame (P = 5 + h*w): [camera, 4 registers, patches row-major]; ``patch_start_idx`` = 5.
Frame 0 of every scene gets ``camera_token[:, 0]`` / ``register_token[:, 0]``, the others index 1.
Layer i: F_i = frame_blocks[i] over each frame's P tokens; G_i = global_blocks[i] over all S*P tokens of
a scene; the stream continues from G_i and the layer output is O_i = concat(F_i, G_i) (2C channels).

Memory: the official code keeps all 24 outputs; here only the layers the heads read are kept (by default
:meth:`VGGTConfig.needed_layers`: {4, 11, 17, 23} and the last), the others are ``None``.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from selfi_ros.model.config import VGGTConfig
from selfi_ros.model.layers import Block, DinoVisionTransformer, RotaryPositionEmbedding2D, patch_positions

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def validate_images(images: torch.Tensor, patch_size: int = 14, ndim: Sequence[int] = (5,)) -> None:
    """Raise ValueError unless ``images`` is a float tensor [B, S, 3, H, W] (or another allowed rank)
    with B, S >= 1, 3 channels, H and W multiples of ``patch_size``, finite values."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() not in ndim:
        raise ValueError(f"images must have rank {' or '.join(map(str, ndim))} "
                         f"([B, S, 3, H, W] or [S, 3, H, W]), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be float RGB in [0, 1], got dtype {images.dtype}")
    if any(d == 0 for d in images.shape):
        raise ValueError(f"images is empty: shape {tuple(images.shape)}")
    if images.shape[-3] != 3:
        raise ValueError(f"images must have 3 (RGB) channels at dim -3, got shape {tuple(images.shape)}")
    H, W = images.shape[-2:]
    if H % patch_size or W % patch_size:
        raise ValueError(f"image H, W must be multiples of {patch_size}, got {H}x{W}")
    if images.device.type != "meta" and not torch.isfinite(images).all():
        raise ValueError("images contain NaN or Inf")


class Aggregator(nn.Module):
    """Alternating-attention aggregator with checkpoint-exact parameter names.

    Args:
        cfg: :class:`VGGTConfig` (``sail_reloc`` adds ``camera_token_reloc``, ``register_token_reloc``
            and ``global_reloc_blocks``).

    Forward: see :meth:`forward`.
    """

    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        self.cfg = cfg
        C, R = cfg.embed_dim, cfg.num_register_tokens
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, C))
        self.register_token = nn.Parameter(torch.zeros(1, 2, R, C))
        if cfg.sail_reloc:
            self.camera_token_reloc = nn.Parameter(torch.zeros(1, 1, 1, C))
            self.register_token_reloc = nn.Parameter(torch.zeros(1, 1, R, C))
        self.patch_embed = DinoVisionTransformer(
            img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=C, depth=cfg.dino_depth,
            num_heads=cfg.dino_num_heads, mlp_ratio=cfg.mlp_ratio, num_register_tokens=R,
            init_values=cfg.dino_init_values)
        self.rope = RotaryPositionEmbedding2D(cfg.rope_base)

        def make_blocks():
            return nn.ModuleList([
                Block(C, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, init_values=cfg.aa_init_values,
                      qk_norm=True, rope=self.rope, norm_eps=1e-5)
                for _ in range(cfg.depth)
            ])

        self.frame_blocks = make_blocks()
        self.global_blocks = make_blocks()
        if cfg.sail_reloc:
            self.global_reloc_blocks = make_blocks()
        self.patch_start_idx = cfg.patch_start_idx
        self.register_buffer("_mean", torch.tensor(_IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(_IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)
        if not any(p.is_meta for p in self.parameters()):
            for p in (self.camera_token, self.register_token):
                nn.init.normal_(p, std=1e-6)
            if cfg.sail_reloc:
                nn.init.normal_(self.camera_token_reloc, std=1e-6)
                nn.init.normal_(self.register_token_reloc, std=1e-6)

    # ---- pieces (also used by the SAIL-Recon scene memory) -------------------------------------
    def embed(self, images: torch.Tensor, special: str = "vggt") -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokens of every frame before the first block.

        Args:
            images: [B, S, 3, H, W] RGB in [0, 1].
            special: "vggt" (frame 0 of each scene gets token index 0, others index 1), "other"
                (every frame gets index 1: a non-first frame, used for queries with plain VGGT weights)
                or "reloc" (every frame gets the SAIL-Recon query tokens ``*_reloc``).
        Returns:
            tokens (B, S, P, C) and per-frame RoPE positions (P, 2) int64.
        """
        validate_images(images, self.cfg.patch_size)
        B, S, _, H, W = images.shape
        x = (images - self._mean.to(images.dtype)) / self._std.to(images.dtype)
        patches = self.patch_embed(x.reshape(B * S, 3, H, W))  # (B*S, N_p, C)
        patches = patches.reshape(B, S, -1, patches.shape[-1])
        if special == "vggt":
            cam = torch.cat([self.camera_token[:, :1].expand(B, 1, -1, -1),
                             self.camera_token[:, 1:].expand(B, S - 1, -1, -1)], dim=1)
            reg = torch.cat([self.register_token[:, :1].expand(B, 1, -1, -1),
                             self.register_token[:, 1:].expand(B, S - 1, -1, -1)], dim=1)
        elif special == "other":
            cam = self.camera_token[:, 1:].expand(B, S, -1, -1)
            reg = self.register_token[:, 1:].expand(B, S, -1, -1)
        elif special == "reloc":
            if not self.cfg.sail_reloc:
                raise RuntimeError("special='reloc' needs a SAIL-Recon model (cfg.sail_reloc=True)")
            cam = self.camera_token_reloc.expand(B, S, -1, -1)
            reg = self.register_token_reloc.expand(B, S, -1, -1)
        else:
            raise ValueError(f"special must be 'vggt', 'other' or 'reloc', got {special!r}")
        tokens = torch.cat([cam.to(patches.dtype), reg.to(patches.dtype), patches], dim=2)
        pos = patch_positions(H // self.cfg.patch_size, W // self.cfg.patch_size,
                              self.patch_start_idx, device=images.device)
        return tokens, pos

    def frame_attention(self, i: int, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """frame_blocks[i] on (B, S, P, C) tokens, attention within each frame."""
        B, S, P, C = tokens.shape
        return self.frame_blocks[i](tokens.reshape(B * S, P, C), pos=pos).reshape(B, S, P, C)

    def global_attention(self, i: int, tokens: torch.Tensor, pos: torch.Tensor,
                         gpos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """global_blocks[i] on (B, S, P, C) tokens, attention over all S*P tokens of each scene.

        ``gpos`` = ``pos.repeat(S, 1)`` may be passed to reuse one tensor (and its RoPE table) across layers.
        """
        B, S, P, C = tokens.shape
        if gpos is None:
            gpos = pos.repeat(S, 1)
        return self.global_blocks[i](tokens.reshape(B, S * P, C), pos=gpos).reshape(B, S, P, C)

    def _resolve_keep(self, keep_layers) -> set:
        if keep_layers is None:
            return set(self.cfg.needed_layers())
        if isinstance(keep_layers, str):
            if keep_layers != "all":
                raise ValueError(f"keep_layers must be None, 'all' or indices, got {keep_layers!r}")
            return set(range(self.cfg.depth))
        keep = {int(i) % self.cfg.depth for i in keep_layers}
        return keep

    def forward(self, images: torch.Tensor, keep_layers: Union[None, str, Iterable[int]] = None
                ) -> Tuple[List[Optional[torch.Tensor]], int]:
        """Run the aggregator.

        Args:
            images: [B, S, 3, H, W] float RGB in [0, 1]; H, W multiples of 14.
            keep_layers: None (the layers the enabled heads need), "all", or layer indices.
        Returns:
            (outputs, patch_start_idx): ``outputs`` is a list of ``depth`` entries; entry i is
            O_i (B, S, P, 2C) when kept, else None.
        Raises:
            ValueError / TypeError on malformed images (see :func:`validate_images`).
        """
        keep = self._resolve_keep(keep_layers)
        tokens, pos = self.embed(images, "vggt")
        outputs: List[Optional[torch.Tensor]] = [None] * self.cfg.depth
        gpos = pos.repeat(tokens.shape[1], 1)
        for i in range(self.cfg.depth):
            f = self.frame_attention(i, tokens, pos)
            tokens = self.global_attention(i, f, pos, gpos)
            if i in keep:
                outputs[i] = torch.cat([f, tokens], dim=-1)
        return outputs, self.patch_start_idx

"""Configuration of the VGGT / SAIL-Recon network (sizes only; no weights).

``VGGTConfig()`` is the checkpoint-exact VGGT-1B shape (the defaults of ``VGGT`` / ``Aggregator`` in github
facebookresearch/vggt ``vggt/models/vggt.py`` and ``vggt/models/aggregator.py``, matching the Hugging Face
checkpoint ``facebook/VGGT-1B``); ``VGGTConfig.sail()`` adds SAIL-Recon's reloc tokens and
``global_reloc_blocks`` (github HKUST-SAIL/sail-recon, ``sailrecon/models/aggregator.py``) and drops the
track head; ``VGGTConfig.tiny()`` is a small shape for CPU tests and plumbing (never load real weights into
it).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Tuple


@dataclass
class VGGTConfig:
    """Network sizes.

    Attributes:
        img_size: training image size; the DINOv2 pos_embed table has (img_size/patch_size)^2 + 1 rows.
        patch_size: 14.
        embed_dim: C of DINOv2 and the aggregator (1024); heads read 2C channels.
        depth: number of frame/global block pairs (24).
        num_heads: aggregator heads (16, head_dim 64).
        mlp_ratio: 4.
        num_register_tokens: 4 (both DINOv2 and aggregator registers).
        dino_depth, dino_num_heads: DINOv2 ViT-L: 24 blocks, 16 heads (dim = embed_dim).
        dino_init_values: DINOv2 LayerScale init (1.0).
        aa_init_values: aggregator LayerScale init (0.01).
        rope_base: 2D RoPE frequency base (100).
        enable_camera, enable_depth, enable_point, enable_track: which heads exist.
        sail_reloc: add SAIL-Recon reloc tokens + global_reloc_blocks (Deng et al., arXiv 2508.17972, Sec. 3).
        dpt_layers: aggregator layers the DPT heads read ((4, 11, 17, 23)).
        dpt_features, dpt_out_channels: DPT widths (256; (256, 512, 1024, 1024)).
        track_features: track-head DPT features (128).
        camera_trunk_depth, camera_num_heads: camera head trunk (4 blocks, 16 heads at dim 2C).
        camera_init_values: camera trunk LayerScale init (0.01).
    """

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    dino_depth: int = 24
    dino_num_heads: int = 16
    dino_init_values: float = 1.0
    aa_init_values: float = 0.01
    rope_base: float = 100.0
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    enable_track: bool = True
    sail_reloc: bool = False
    dpt_layers: Tuple[int, ...] = (4, 11, 17, 23)
    dpt_features: int = 256
    dpt_out_channels: Tuple[int, ...] = (256, 512, 1024, 1024)
    track_features: int = 128
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_init_values: float = 0.01

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads or self.embed_dim % self.dino_num_heads:
            raise ValueError("embed_dim must be divisible by num_heads and dino_num_heads")
        if (self.embed_dim // self.num_heads) % 4:
            raise ValueError("aggregator head_dim must be divisible by 4 for 2D RoPE")
        if len(self.dpt_layers) != 4 or any(not 0 <= i < self.depth for i in self.dpt_layers):
            raise ValueError(f"dpt_layers must be 4 indices in [0, {self.depth}), got {self.dpt_layers}")
        self.dpt_layers = tuple(int(i) for i in self.dpt_layers)
        self.dpt_out_channels = tuple(int(i) for i in self.dpt_out_channels)

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token in each frame (camera + registers before it)."""
        return 1 + self.num_register_tokens

    def needed_layers(self) -> Tuple[int, ...]:
        """Aggregator layers the enabled heads read (the last one always: camera head, SAIL memory)."""
        layers = {self.depth - 1}
        if self.enable_depth or self.enable_point or self.enable_track:
            layers.update(self.dpt_layers)
        return tuple(sorted(layers))

    @classmethod
    def vggt_1b(cls) -> "VGGTConfig":
        """facebook/VGGT-1B (1797 tensors, 1,256,537,516 parameters)."""
        return cls()

    @classmethod
    def sail(cls) -> "VGGTConfig":
        """HKUST-SAIL/SAIL-Recon (1837 tensors): VGGT-1B minus track head plus reloc blocks."""
        return cls(enable_track=False, sail_reloc=True)

    @classmethod
    def tiny(cls, **overrides) -> "VGGTConfig":
        """A few-hundred-k-parameter shape for CPU tests: dim 64, 4 layers, 4 heads, patch 14."""
        base = cls(embed_dim=64, depth=4, num_heads=4, dino_depth=2, dino_num_heads=4,
                   enable_track=False, dpt_layers=(0, 1, 2, 3), dpt_features=32,
                   dpt_out_channels=(16, 32, 64, 64), track_features=16, camera_trunk_depth=2,
                   camera_num_heads=4)
        return replace(base, **overrides)

    def with_(self, **overrides) -> "VGGTConfig":
        """A copy with some fields replaced."""
        return replace(self, **overrides)

"""Transformer building blocks shared by the VGGT aggregator, DINOv2 and the heads."""
from selfi_ros.model.layers.attention import Attention  # noqa: F401
from selfi_ros.model.layers.block import Block, LayerScale, Mlp  # noqa: F401
from selfi_ros.model.layers.rope import RotaryPositionEmbedding2D, patch_positions  # noqa: F401
from selfi_ros.model.layers.patch_embed import DinoVisionTransformer, PatchEmbed, resize_pos_embed_grid  # noqa: F401

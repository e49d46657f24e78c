"""Transformer building blocks shared by the VGGT aggregator, DINOv2 and the heads."""
from .attention import Attention  # noqa: F401
from .block import Block, LayerScale, Mlp  # noqa: F401
from .rope import RotaryPositionEmbedding2D, patch_positions  # noqa: F401
from .patch_embed import DinoVisionTransformer, PatchEmbed, resize_pos_embed_grid  # noqa: F401

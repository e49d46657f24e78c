"""VGGT track head: a DPT feature extractor over aggregator tokens + an iterative point tracker.

Wang et al., VGGT, CVPR 2025, Sec. 3.3 "Tracking"; official github facebookresearch/vggt
``vggt/heads/track_head.py`` (``TrackHead``). Key names: ``feature_extractor.*``
(a :class:`DPTHead` with ``features`` channels, feature_only, down_ratio 2, no UV embedding) and
``tracker.*`` (:class:`BaseTrackerPredictor`). The official model runs this head under the caller's
autocast (not in the fp32 region of the other heads).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from selfi_ros.model.heads.dpt_head import DPTHead
from selfi_ros.model.heads.track_modules import BaseTrackerPredictor


class TrackHead(nn.Module):
    """Track query points of frame 0 through all frames.

    Args:
        dim_in: token channels (2048).
        patch_size: 14.
        features: feature-map channels = tracker latent dim (128).
        iters: refinement iterations (4).
        predict_conf: predict per-track confidences.
        stride: feature-map stride (2, the extractor's down_ratio).
        corr_levels, corr_radius: correlation pyramid (7, 4).
        hidden_size, depth, num_heads, num_virtual_tracks: update transformer (384, 6, 8, 64).
        out_channels, intermediate_layer_idx: the extractor's DPT levels ((256, 512, 1024, 1024),
            (4, 11, 17, 23)).
    """

    def __init__(self, dim_in: int = 2048, patch_size: int = 14, features: int = 128, iters: int = 4,
                 predict_conf: bool = True, stride: int = 2, corr_levels: int = 7, corr_radius: int = 4,
                 hidden_size: int = 384, depth: int = 6, num_heads: int = 8, num_virtual_tracks: int = 64,
                 out_channels: Sequence[int] = (256, 512, 1024, 1024),
                 intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23)):
        super().__init__()
        self.patch_size = patch_size
        self.iters = iters
        self.feature_extractor = DPTHead(dim_in=dim_in, patch_size=patch_size, features=features,
                                         out_channels=out_channels, intermediate_layer_idx=intermediate_layer_idx,
                                         feature_only=True, down_ratio=stride, pos_embed=False)
        self.tracker = BaseTrackerPredictor(stride=stride, corr_levels=corr_levels, corr_radius=corr_radius,
                                            latent_dim=features, hidden_size=hidden_size, depth=depth,
                                            num_heads=num_heads, num_virtual_tracks=num_virtual_tracks,
                                            predict_conf=predict_conf)

    def forward(self, aggregated_tokens_list: List[Optional[torch.Tensor]], images: torch.Tensor,
                patch_start_idx: int, query_points: torch.Tensor, iters: Optional[int] = None,
                frames_chunk_size: Optional[int] = 8
                ) -> Tuple[List[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
        """Run the tracker.

        Args:
            aggregated_tokens_list: aggregator outputs (see :class:`DPTHead`).
            images: (B, S, 3, H, W); only the size is used.
            patch_start_idx: index of the first patch token (5).
            query_points: (B, N, 2) or (N, 2) (x, y) pixels in frame 0 of the input images.
            iters: refinement iterations (default ``self.iters``).
        Returns:
            (tracks: list of ``iters`` tensors (B, S, N, 2) in input pixels, the last being the
            estimate; vis (B, S, N) in (0, 1); conf (B, S, N) in (0, 1) or None).
        Raises:
            ValueError: on malformed query points.
        """
        if query_points.ndim == 2:
            query_points = query_points[None]
        if query_points.ndim != 3 or query_points.shape[-1] != 2 or query_points.shape[0] != images.shape[0]:
            raise ValueError(f"query_points must be (B={images.shape[0]}, N, 2) pixels, got "
                             f"{tuple(query_points.shape)}")
        fmaps = self.feature_extractor(aggregated_tokens_list, images, patch_start_idx,
                                       frames_chunk_size=frames_chunk_size)
        return self.tracker(query_points, fmaps, iters=self.iters if iters is None else iters)

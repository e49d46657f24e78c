"""Bounded LRU cache of preprocessed frames for the VGGT backend, so that every frame goes through the
official VGGT preprocessing (:func:`selfi_ros.model.preprocessing.preprocess_image`, after github
facebookresearch/vggt ``vggt/utils/load_fn.py`` ``load_and_preprocess_images``) once per network resolution
and mode, however many windows and localize calls it joins (a keyframe is typically localized, then an
anchor of one or two windows).

Key: (stamp_ns, index, original H, W, target, mode) - a frame's identity is its stamp and index. Values are
stored as uint8 (the preprocessed values are exactly k / 255, white padding 255 / 255, so the round trip is
lossless) with their :class:`~selfi_ros.model.preprocessing.ImageMeta`; a batch is assembled with
:func:`~selfi_ros.model.preprocessing.stack_preprocessed`, so it equals ``preprocess_images`` of the same
frames bit for bit.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Sequence, Tuple

import torch

from selfi_ros.engine.types import Frame
from selfi_ros.model.preprocessing import ImageMeta, preprocess_image, stack_preprocessed


class PreprocessCache:
    """LRU of preprocessed frames (see the module docstring).

    Args:
        capacity: frames kept (>= 1); :meth:`reserve` raises it, never lowers it.
    Attributes:
        hits, misses: cache hits and preprocessing calls since construction.
    """

    def __init__(self, capacity: int = 24):
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._entries: "OrderedDict[tuple, Tuple[torch.Tensor, ImageMeta]]" = OrderedDict()
        self.hits = 0
        self.misses = 0

    def reserve(self, capacity: int) -> None:
        """Raise the capacity to at least ``capacity`` frames."""
        self.capacity = max(self.capacity, int(capacity))

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry (counters stay)."""
        self._entries.clear()

    def get(self, frames: Sequence[Frame], mode: str, target: int) -> Tuple[torch.Tensor, List[ImageMeta]]:
        """Network input of ``frames``: (tensor [S, 3, H, W] float32 in [0, 1], S metas), as
        ``preprocess_images([f.image for f in frames], mode, target)``.

        Raises:
            ValueError: no frames; malformed image or bad mode / target (from the preprocessing).
        """
        if len(frames) == 0:
            raise ValueError("PreprocessCache.get needs at least one frame")
        tensors, metas = [], []
        for f in frames:
            h, w = f.image.shape[:2]
            key = (int(f.stamp_ns), int(f.index), int(h), int(w), int(target), str(mode))
            hit = self._entries.get(key)
            if hit is None:
                t, m = preprocess_image(f.image, mode=mode, target=target)
                hit = ((t * 255.0).round_().to(torch.uint8), m)
                self.misses += 1
                self._entries[key] = hit
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
            else:
                self.hits += 1
                self._entries.move_to_end(key)
            tensors.append(hit[0].float() / 255.0)
            metas.append(hit[1])
        return stack_preprocessed(tensors, metas)

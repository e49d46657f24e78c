"""VGGT / SAIL-Recon in PyTorch (no ROS, no streams).

- :class:`VGGTConfig` sizes; :class:`VGGT` the network; :class:`VGGTOutput` its outputs.
- :func:`load_model` weights from files or the Hugging Face hub (strict; random only on request).
- :func:`preprocess_images` the official crop / pad preprocessing with per-image metadata.
- :mod:`.scene_memory` SAIL-Recon anchor pass / query pass.

Heavy imports are lazy so ``import selfi_ros.model`` stays cheap.
"""
from selfi_ros.model.config import VGGTConfig  # noqa: F401

__all__ = ["VGGTConfig", "VGGT", "VGGTOutput", "load_model", "preprocess_images", "SceneMemory"]


def __getattr__(name):
    if name in ("VGGT", "VGGTOutput"):
        from selfi_ros.model import vggt

        return getattr(vggt, name)
    if name == "load_model":
        from selfi_ros.model.loading import load_model

        return load_model
    if name == "preprocess_images":
        from selfi_ros.model.preprocessing import preprocess_images

        return preprocess_images
    if name == "SceneMemory":
        from selfi_ros.model.scene_memory import SceneMemory

        return SceneMemory
    raise AttributeError(name)

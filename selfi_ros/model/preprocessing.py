"""Image preprocessing as VGGT's official ``load_and_preprocess_images`` (github facebookresearch/vggt,
``vggt/utils/load_fn.py``), with metadata.

Modes (target width 518 by default, sizes multiples of 14):
- ``crop``: new_w = target, new_h = 14 * round(h0 * target / w0 / 14) (Python round, halves to even);
  Pillow BICUBIC resize; if new_h > target keep the central ``target`` rows (top gets floor(delta/2)).
  1920x1080 -> 294x518; portrait images end up target x target.
- ``pad``: landscape as crop; portrait new_h = target, new_w = 14 * round(w0 * target / h0 / 14); then
  pad to target x target with white (1.0), top/left getting floor(delta/2).
Images of one call that end with different sizes are padded with white to the largest H and W (top/left
get floor(delta/2)) and stacked.

Each image's :class:`ImageMeta` records the scale and the crop / pad offsets so that network-pixel
intrinsics can be mapped to the original image with :meth:`ImageMeta.K_net_to_orig` (pixel model: a
network pixel coordinate u_net = sx * u_orig + offset_x, v_net = sy * v_orig + offset_y, the same
proportional model under which VGGT's principal point W/2 maps to the original image centre).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

ImageLike = Union[str, Path, np.ndarray, Image.Image]


@dataclass
class ImageMeta:
    """How one image became its slice of the network input.

    Attributes:
        orig_hw: (H0, W0) original size in pixels.
        resized_hw: (new_h, new_w) after the Pillow resize.
        net_hw: (H, W) of the final stacked tensor.
        scale_xy: (sx, sy) = (new_w / W0, new_h / H0).
        offset_xy: (ox, oy) crop / pad offset in network pixels (crop gives negative oy, padding positive):
            u_net = (u_orig + 0.5) * sx - 0.5 + ox (pixel-centre convention), likewise v.
    """

    orig_hw: Tuple[int, int]
    resized_hw: Tuple[int, int]
    net_hw: Tuple[int, int]
    scale_xy: Tuple[float, float]
    offset_xy: Tuple[float, float]

    def _A(self) -> np.ndarray:
        sx, sy = self.scale_xy
        ox, oy = self.offset_xy
        return np.array([[sx, 0.0, 0.5 * (sx - 1.0) + ox], [0.0, sy, 0.5 * (sy - 1.0) + oy], [0.0, 0.0, 1.0]])

    def K_net_to_orig(self, K_net: np.ndarray) -> np.ndarray:
        """(3, 3) (or (..., 3, 3)) intrinsics in network pixels -> original-image pixels (float64)."""
        return np.linalg.inv(self._A()) @ np.asarray(K_net, dtype=np.float64)

    def K_orig_to_net(self, K_orig: np.ndarray) -> np.ndarray:
        """(3, 3) intrinsics of the original image -> network pixels (float64)."""
        return self._A() @ np.asarray(K_orig, dtype=np.float64)

    def net_to_orig_xy(self, uv: np.ndarray) -> np.ndarray:
        """(..., 2) network pixel coordinates -> original pixel coordinates (pixel-centre convention)."""
        A = self._A()
        uv = np.asarray(uv, dtype=np.float64)
        return (uv - A[:2, 2]) / np.array([A[0, 0], A[1, 1]])

    def valid_region_net(self) -> Tuple[int, int, int, int]:
        """(top, left, bottom, right) network rows/cols that hold image content (not white padding)."""
        sx, sy = self.scale_xy
        ox, oy = self.offset_xy
        top, left = max(int(round(oy)), 0), max(int(round(ox)), 0)
        bottom = min(int(round(oy + self.resized_hw[0])), self.net_hw[0])
        right = min(int(round(ox + self.resized_hw[1])), self.net_hw[1])
        return top, left, bottom, right


def _to_pil(img: ImageLike) -> Image.Image:
    if isinstance(img, (str, Path)):
        pil = Image.open(img)
        pil.load()
    elif isinstance(img, np.ndarray):
        if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
            raise ValueError(f"numpy images must be (H, W, 3|4) uint8 RGB(A), got {img.shape} {img.dtype}")
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise ValueError(f"empty image of shape {img.shape}")
        pil = Image.fromarray(np.ascontiguousarray(img), "RGBA" if img.shape[2] == 4 else "RGB")
    elif isinstance(img, Image.Image):
        pil = img
    else:
        raise TypeError(f"unsupported image type {type(img).__name__}")
    if pil.mode == "RGBA":
        bg = Image.new("RGBA", pil.size, (255, 255, 255, 255))
        pil = Image.alpha_composite(bg, pil)
    return pil.convert("RGB")


def target_size(w0: int, h0: int, mode: str = "crop", target: int = 518, patch: int = 14) -> Tuple[int, int]:
    """(new_w, new_h) of the Pillow resize for an image of w0 x h0 (the size rule of the official
    ``load_and_preprocess_images``)."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    if mode == "pad" and h0 > w0:
        return patch * round(w0 * (target / h0) / patch), target
    return target, patch * round(h0 * (target / w0) / patch)


def preprocess_image(image: ImageLike, mode: str = "crop", target: int = 518, patch: int = 14
                     ) -> Tuple[torch.Tensor, ImageMeta]:
    """Official VGGT preprocessing of ONE image, before the batch padding of :func:`stack_preprocessed`.

    Args:
        image: file path, PIL image or (H, W, 3|4) uint8 RGB(A) array (RGBA is composited on white).
        mode, target, patch: see :func:`preprocess_images`.
    Returns:
        (tensor [3, h, w] float32 in [0, 1], :class:`ImageMeta` with ``net_hw`` = (h, w)).
    Raises:
        ValueError: bad mode / target, malformed or too elongated image. TypeError: unsupported object.
    """
    if target % patch:
        raise ValueError(f"target {target} must be a multiple of the patch size {patch}")
    pil = _to_pil(image)
    w0, h0 = pil.size
    new_w, new_h = target_size(w0, h0, mode, target, patch)
    if new_w <= 0 or new_h <= 0:
        raise ValueError(f"image {w0}x{h0} is too elongated for target {target}")
    arr = np.asarray(pil.resize((new_w, new_h), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    ox, oy = 0.0, 0.0
    if mode == "crop" and new_h > target:
        top = (new_h - target) // 2
        t = t[:, top:top + target]
        oy = -float(top)
    elif mode == "pad":
        dh, dw = target - t.shape[1], target - t.shape[2]
        if dh > 0 or dw > 0:
            t = torch.nn.functional.pad(t, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=1.0)
            ox, oy = float(dw // 2), float(dh // 2)
    meta = ImageMeta((h0, w0), (new_h, new_w), (int(t.shape[1]), int(t.shape[2])), (new_w / w0, new_h / h0),
                     (ox, oy))
    return t, meta


def stack_preprocessed(tensors: Sequence[torch.Tensor], metas: Sequence[ImageMeta]
                       ) -> Tuple[torch.Tensor, List[ImageMeta]]:
    """Stack :func:`preprocess_image` outputs as the official code does: images of different sizes are padded
    with white (1.0) to the largest H and W (top/left get floor(delta/2)).

    Args:
        tensors: [3, h_i, w_i] float tensors; metas: their :class:`ImageMeta` (not modified).
    Returns:
        (tensor [S, 3, H, W], new list of S :class:`ImageMeta` with the padding offsets and ``net_hw`` = (H, W)).
    Raises:
        ValueError: empty input or lengths differ.
    """
    if len(tensors) == 0 or len(tensors) != len(metas):
        raise ValueError(f"stack_preprocessed needs as many (>= 1) images as metas, got {len(tensors)} / "
                         f"{len(metas)}")
    H = max(t.shape[1] for t in tensors)
    W = max(t.shape[2] for t in tensors)
    out, new_metas = [], []
    for t, m in zip(tensors, metas):
        dh, dw = H - t.shape[1], W - t.shape[2]
        off = m.offset_xy
        if dh or dw:
            t = torch.nn.functional.pad(t, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=1.0)
            off = (off[0] + dw // 2, off[1] + dh // 2)
        new_metas.append(replace(m, net_hw=(H, W), offset_xy=off))
        out.append(t)
    return torch.stack(out), new_metas


def preprocess_images(images: Sequence[ImageLike], mode: str = "crop", target: int = 518, patch: int = 14
                      ) -> Tuple[torch.Tensor, List[ImageMeta]]:
    """Official VGGT preprocessing of a list of images (:func:`preprocess_image` each, then
    :func:`stack_preprocessed`).

    Args:
        images: file paths, PIL images or (H, W, 3|4) uint8 RGB(A) arrays (RGBA is composited on white).
        mode: "crop" or "pad".
        target: width (crop) or longest side (pad), 518 by default; multiple of ``patch``.
        patch: 14.
    Returns:
        (tensor [S, 3, H, W] float32 in [0, 1], list of S :class:`ImageMeta`).
    Raises:
        ValueError: empty list, bad mode / target, malformed arrays. TypeError: unsupported objects.
    """
    if len(images) == 0:
        raise ValueError("preprocess_images needs at least one image")
    pairs = [preprocess_image(img, mode, target, patch) for img in images]
    return stack_preprocessed([t for t, _ in pairs], [m for _, m in pairs])

"""VGGT top-level module with checkpoint-exact parameter names.

Source: Wang et al., "VGGT: Visual Geometry Grounded Transformer", CVPR 2025, Sec. 3 (model overview:
aggregator + camera / DPT heads); official code github facebookresearch/vggt, ``vggt/models/vggt.py``
(class ``VGGT``, its ``forward``).

``VGGT(cfg)`` = ``aggregator`` + ``camera_head`` + ``depth_head`` + ``point_head`` (+ ``track_head``);
the head modules come from :mod:`selfi_ros.model.heads`. Conventions (VGGT paper Sec. 3.1 "Problem
definition"; official ``vggt/utils/geometry.py``): input RGB in [0, 1]; OpenCV camera axes; extrinsics
camera-from-world with world = the first frame's camera; depth is z-depth; scale is normalised (not
metric); intrinsics have the principal point at the image centre (official ``pose_encoding_to_extri_intri``).

Numerics (as the official ``VGGT.forward`` and its README inference example): the aggregator runs under
the caller's autocast; camera/depth/point heads run with autocast disabled on fp32 tokens; the track head
runs under the caller's autocast. :meth:`VGGT.infer` wraps a call in ``torch.inference_mode`` and CUDA
autocast (:func:`autocast_dtype`: bf16 on compute capability >= 8, else fp16). Every autocast dtype choice
of the project goes through :func:`autocast_dtype` / :func:`resolve_autocast`, every fp32 part under a
caller's autocast through :func:`autocast_off`.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from selfi_ros.model.aggregator import Aggregator, validate_images
from selfi_ros.model.config import VGGTConfig
from selfi_ros.model.errors import oom_guard

log = logging.getLogger(__name__)


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The official inference autocast dtype for ``device``: bf16 on CUDA compute capability >= 8,
    fp16 on older CUDA GPUs, None (no autocast, fp32) on CPU / other devices."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


#: how a caller asks for autocast: True = the official dtype (:func:`autocast_dtype`), False / None = none
#: (fp32), or a dtype forced on CUDA
AutocastSpec = Union[bool, None, torch.dtype]


def resolve_autocast(spec: AutocastSpec, device) -> Optional[torch.dtype]:
    """The CUDA autocast dtype meant by ``spec`` for ``device`` (None = no autocast; always None off CUDA).

    Raises:
        TypeError: ``spec`` is not a bool, None or a torch.dtype.
    """
    if spec is True:
        return autocast_dtype(device)
    if spec is False or spec is None:
        return None
    if not isinstance(spec, torch.dtype):
        raise TypeError(f"autocast must be True, False, None or a torch.dtype, got {spec!r}")
    return spec if torch.device(device).type == "cuda" else None


def autocast_context(dtype: Optional[torch.dtype]):
    """``torch.autocast("cuda", dtype)`` for a dtype from :func:`resolve_autocast`, a null context for None."""
    return contextlib.nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)


def autocast_off(device_type: str):
    """A context with autocast disabled on ``device_type`` ("cuda" / "cpu"; a null context for other device
    types, which have no autocast), for the fp32 parts under a caller's autocast (the official
    ``VGGT.forward`` runs its heads this way)."""
    if device_type in ("cuda", "cpu"):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def pose_encoding_to_cameras(pose_enc: torch.Tensor, image_size_hw: Tuple[int, int]
                             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """9-D "absT_quaR_FoV" encoding -> (extrinsics (..., 3, 4) camera-from-world, intrinsics (..., 3, 3))
    in pixels of an H x W image (official ``vggt/utils/pose_enc.py`` ``pose_encoding_to_extri_intri``); see
    :func:`selfi_ros.model.utils.pose_enc.pose_encoding_to_extri_intri`."""
    from selfi_ros.model.utils.pose_enc import pose_encoding_to_extri_intri

    return pose_encoding_to_extri_intri(pose_enc, image_size_hw)


def extrinsics_to_world_from_camera(extr: torch.Tensor) -> torch.Tensor:
    """Camera-from-world (..., 3, 4) -> world-from-camera (..., 4, 4) (closed-form inverse R^T, -R^T t)."""
    R, t = extr[..., :3, :3], extr[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    T = torch.zeros(*extr.shape[:-2], 4, 4, dtype=extr.dtype, device=extr.device)
    T[..., :3, :3] = Rt
    T[..., :3, 3:] = -Rt @ t
    T[..., 3, 3] = 1.0
    return T


@dataclass
class VGGTOutput:
    """Outputs of :meth:`VGGT.forward` (B scenes of S frames at H x W network resolution).

    Attributes:
        pose_enc: (B, S, 9) last camera-head iteration ([t, q_xyzw, fov_h, fov_w]), or None.
        pose_enc_list: list of the per-iteration encodings.
        depth: (B, S, H, W, 1) z-depth; depth_conf: (B, S, H, W) (>= 1).
        world_points: (B, S, H, W, 3) point map in the first frame's camera; world_points_conf: (B, S, H, W).
        images: the [B, S, 3, H, W] input.
        track, vis, track_conf: (B, S, N, 2) pixels, (B, S, N), (B, S, N) when query points were given.
        random_weights: True when the model producing this had random weights (plumbing only).
        extra: output of a caller's token hook (:func:`selfi_ros.model.scene_memory.run_anchor_pass`), else None.
    """

    pose_enc: Optional[torch.Tensor] = None
    pose_enc_list: List[torch.Tensor] = field(default_factory=list)
    depth: Optional[torch.Tensor] = None
    depth_conf: Optional[torch.Tensor] = None
    world_points: Optional[torch.Tensor] = None
    world_points_conf: Optional[torch.Tensor] = None
    images: Optional[torch.Tensor] = None
    track: Optional[torch.Tensor] = None
    vis: Optional[torch.Tensor] = None
    track_conf: Optional[torch.Tensor] = None
    random_weights: bool = False
    extra: Optional[torch.Tensor] = None

    @property
    def image_size_hw(self) -> Tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def extrinsics(self) -> torch.Tensor:
        """(B, S, 3, 4) camera-from-world (world = first frame's camera), fp32."""
        return pose_encoding_to_cameras(self.pose_enc.float(), self.image_size_hw)[0]

    def world_from_camera(self) -> torch.Tensor:
        """(B, S, 4, 4) camera-to-world transforms (``T_world_cam``)."""
        return extrinsics_to_world_from_camera(self.extrinsics())

    def intrinsics(self, image_size_hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """(B, S, 3, 3) K in pixels of the network input (default) or of ``image_size_hw`` = (H', W').

        The FoV is resolution independent, so K for another H' x W' view of the *same field of view*
        uses the same formulas with H', W'. To map back to the original photo after a crop or pad use
        :meth:`selfi_ros.model.preprocessing.ImageMeta.K_net_to_orig` instead.
        """
        hw = image_size_hw or self.image_size_hw
        return pose_encoding_to_cameras(self.pose_enc.float(), hw)[1]

    def intrinsics_original(self, metas, batch_index: int = 0):
        """(S, 3, 3) float64 numpy K in pixels of each ORIGINAL image, given the per-image
        :class:`~selfi_ros.model.preprocessing.ImageMeta` list from ``preprocess_images`` (undoes the
        resize and the crop / pad offsets, pixel-centre convention)."""
        import numpy as np

        K = self.intrinsics()[batch_index].double().cpu().numpy()
        if len(metas) != K.shape[0]:
            raise ValueError(f"{len(metas)} image metas for {K.shape[0]} frames")
        return np.stack([m.K_net_to_orig(k) for m, k in zip(metas, K)])


class VGGT(nn.Module):
    """VGGT / SAIL-Recon network.

    Args:
        cfg: :class:`VGGTConfig` (default VGGT-1B). ``cfg.sail_reloc`` gives the SAIL-Recon layout.

    Attributes:
        random_weights: False unless built by :func:`selfi_ros.model.loading.load_model` with
            ``random_weights=True`` (plumbing only).
    """

    def __init__(self, cfg: Optional[VGGTConfig] = None):
        super().__init__()
        from selfi_ros.model.heads.camera_head import CameraHead
        from selfi_ros.model.heads.dpt_head import DPTHead

        cfg = cfg or VGGTConfig()
        self.cfg = cfg
        self.random_weights = False
        dim_in = 2 * cfg.embed_dim
        self.aggregator = Aggregator(cfg)
        self.camera_head = (CameraHead(dim_in=dim_in, trunk_depth=cfg.camera_trunk_depth,
                                       num_heads=cfg.camera_num_heads, mlp_ratio=cfg.mlp_ratio,
                                       init_values=cfg.camera_init_values)
                            if cfg.enable_camera else None)
        dpt_kw = dict(dim_in=dim_in, patch_size=cfg.patch_size, features=cfg.dpt_features,
                      out_channels=list(cfg.dpt_out_channels), intermediate_layer_idx=list(cfg.dpt_layers))
        self.depth_head = (DPTHead(output_dim=2, activation="exp", conf_activation="expp1", **dpt_kw)
                           if cfg.enable_depth else None)
        self.point_head = (DPTHead(output_dim=4, activation="inv_log", conf_activation="expp1", **dpt_kw)
                           if cfg.enable_point else None)
        if cfg.enable_track:
            from selfi_ros.model.heads.track_head import TrackHead
            self.track_head = TrackHead(dim_in=dim_in, patch_size=cfg.patch_size,
                                        features=cfg.track_features,
                                        out_channels=list(cfg.dpt_out_channels),
                                        intermediate_layer_idx=list(cfg.dpt_layers))
        else:
            self.track_head = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def compile_for_inference(self, **compile_kwargs) -> "VGGT":
        """Compile the aggregator and the heads in place with ``torch.compile`` (``nn.Module.compile``), so
        ``state_dict`` names stay those of the checkpoint. Optional: the first calls at each new input
        shape pay the compilation; worth it for long runs at a fixed resolution. Returns ``self``."""
        for m in (self.aggregator, self.camera_head, self.depth_head, self.point_head, self.track_head):
            if m is not None:
                m.compile(**compile_kwargs)
        return self

    def forward(self, images: torch.Tensor, query_points: Optional[torch.Tensor] = None,
                frames_chunk_size: int = 8) -> VGGTOutput:
        """Run the network.

        Args:
            images: [S, 3, H, W] or [B, S, 3, H, W] float RGB in [0, 1], H and W multiples of 14.
            query_points: optional [N, 2] or [B, N, 2] (x, y) pixels in frame 0 for the track head.
            frames_chunk_size: DPT heads process this many frames at a time (no numerical effect).
        Returns:
            :class:`VGGTOutput`.
        Raises:
            ValueError / TypeError on malformed images (rank, channels, dtype, size, empty, NaN).
            ModelOutOfMemoryError: the GPU ran out of memory (message: frames, resolution, what to lower).
        """
        validate_images(images, self.cfg.patch_size, ndim=(4, 5))
        with oom_guard("running VGGT on", images):
            return self._forward(images, query_points, frames_chunk_size)

    def _forward(self, images: torch.Tensor, query_points: Optional[torch.Tensor],
                 frames_chunk_size: int) -> VGGTOutput:
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if query_points is not None and query_points.dim() == 2:
            query_points = query_points.unsqueeze(0)
        tokens, psi = self.aggregator(images)
        out = self.run_heads(tokens, images, psi, frames_chunk_size)
        if self.track_head is not None and query_points is not None:
            track_list, out.vis, out.track_conf = self.track_head(tokens, images=images, patch_start_idx=psi,
                                                                  query_points=query_points)
            out.track = track_list[-1]
        return out

    def run_heads(self, tokens: List[Optional[torch.Tensor]], images: torch.Tensor, patch_start_idx: int,
                  frames_chunk_size: int = 8) -> VGGTOutput:
        """Camera, depth and point heads (those that are enabled) on aggregated tokens, in fp32 with autocast
        off as in the official ``VGGT.forward``; the track head is not run here.

        Args:
            tokens: aggregator outputs, list indexed by layer, (B, S, P, 2C) (layers no head reads may be None).
            images: (B, S, 3, H, W) in [0, 1].
            patch_start_idx: index of the first patch token (5).
        Returns:
            :class:`VGGTOutput` with pose_enc(_list), depth(+conf), world_points(+conf) filled.
        """
        out = VGGTOutput(images=images, random_weights=bool(self.random_weights))
        with autocast_off(images.device.type):
            tok32 = [t.float() if t is not None else None for t in tokens]
            img32 = images.float()
            if self.camera_head is not None:
                out.pose_enc_list = self.camera_head(tok32)
                out.pose_enc = out.pose_enc_list[-1]
            if self.depth_head is not None:
                out.depth, out.depth_conf = self.depth_head(tok32, images=img32, patch_start_idx=patch_start_idx,
                                                            frames_chunk_size=frames_chunk_size)
            if self.point_head is not None:
                out.world_points, out.world_points_conf = self.point_head(
                    tok32, images=img32, patch_start_idx=patch_start_idx, frames_chunk_size=frames_chunk_size)
        return out

    def infer(self, images: torch.Tensor, **kw) -> VGGTOutput:
        """:meth:`forward` under ``torch.inference_mode`` and the official CUDA autocast (see
        :func:`autocast_dtype`); images are moved to the model's device."""
        images = images.to(self.device)
        with torch.inference_mode(), autocast_context(autocast_dtype(images.device)):
            return self(images, **kw)

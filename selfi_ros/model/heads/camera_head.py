"""VGGT camera head: iterative adaLN-modulated transformer trunk over per-frame camera tokens.

Wang et al., VGGT (CVPR 2025) Sec. 3.3 "Prediction heads"; checkpoint-exact counterpart of the official
``vggt/heads/camera_head.py`` ``CameraHead`` (github facebookresearch/vggt), plus SAIL-Recon's anchor-aware
variant (Deng et al., arXiv 2508.17972, Sec. 3; github HKUST-SAIL/sail-recon, ``sailrecon/heads/camera_head.py``).

State-dict names: ``trunk.{i}.*`` (Blocks), ``token_norm``, ``trunk_norm``, ``empty_pose_tokens``
(1, 1, 9), ``embed_pose``, ``poseLN_modulation.1`` (index 0 is a parameter-free SiLU), ``adaln_norm``
(no affine, eps 1e-6), ``pose_branch.fc1``/``fc2``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from selfi_ros.model.layers import Block
from selfi_ros.model.heads.activations import activate_pose

POSE_DIM = 9


class PoseBranch(nn.Module):
    """fc1 -> GELU -> fc2 (``dim -> dim/2 -> 9``)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def anchor_query_mask(num_anchors: int, num_queries: int, device=None) -> torch.Tensor:
    """Boolean attention mask (True = may attend) over ``[anchors ; queries]`` tokens.

    Anchors attend to anchors only; each query attends to all anchors and to itself only.

    Returns:
        (S_a + S_q, S_a + S_q) bool tensor.
    """
    S = num_anchors + num_queries
    mask = torch.zeros(S, S, dtype=torch.bool, device=device)
    mask[:, :num_anchors] = True
    idx = torch.arange(num_anchors, S, device=device)
    mask[idx, idx] = True
    return mask


class CameraHead(nn.Module):
    """Predict 9-D ``absT_quaR_FoV`` pose encodings from the last aggregator layer's camera tokens.

    Args:
        dim_in: token channels (2048 for VGGT-1B = 2 x 1024).
        trunk_depth: number of trunk Blocks (4).
        num_heads: trunk attention heads (16 at full size -> head dim 128).
        mlp_ratio: trunk MLP ratio (4).
        init_values: trunk LayerScale init (0.01; values come from the checkpoint anyway).
        trans_act, quat_act, fov_act: output activations (linear, linear, relu in VGGT).

    Output encodings: ``[t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w]`` of camera-from-world
    extrinsics (see :mod:`selfi_ros.model.utils.pose_enc`); the quaternion is not normalised.
    """

    def __init__(self, dim_in: int = 2048, trunk_depth: int = 4, num_heads: int = 16,
                 mlp_ratio: float = 4.0, init_values: Optional[float] = 0.01,
                 trans_act: str = "linear", quat_act: str = "linear", fov_act: str = "relu"):
        super().__init__()
        self.dim_in = dim_in
        self.acts = (trans_act, quat_act, fov_act)
        self.trunk = nn.Sequential(*[
            Block(dim_in, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, proj_bias=True, ffn_bias=True,
                  init_values=init_values, qk_norm=False, rope=None, norm_eps=1e-5)
            for _ in range(trunk_depth)])
        self.token_norm = nn.LayerNorm(dim_in, eps=1e-5)
        self.trunk_norm = nn.LayerNorm(dim_in, eps=1e-5)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_DIM))
        self.embed_pose = nn.Linear(POSE_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = PoseBranch(dim_in, dim_in // 2, POSE_DIM)

    # ------------------------------------------------------------------ public API
    def forward(self, aggregated_tokens_list: Sequence[Optional[torch.Tensor]],
                num_iterations: int = 4) -> List[torch.Tensor]:
        """Plain VGGT camera head.

        Args:
            aggregated_tokens_list: aggregator outputs; only the last entry is read, (B, S, P, dim_in),
                whose token 0 of each frame is the camera token.
            num_iterations: refinement iterations (4).
        Returns:
            list of ``num_iterations`` activated encodings, each (B, S, 9); the last is the estimate.
        """
        tokens = aggregated_tokens_list[-1]
        if tokens is None or tokens.ndim != 4 or tokens.shape[-1] != self.dim_in:
            raise ValueError(f"last aggregated tokens must be (B, S, P, {self.dim_in}), got "
                             f"{None if tokens is None else tuple(tokens.shape)}")
        return self.forward_camera_tokens(tokens[:, :, 0], num_iterations)

    def forward_camera_tokens(self, cam_tokens: torch.Tensor, num_iterations: int = 4,
                              attn_mask: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """Run the head on raw (not yet ``token_norm``-ed) camera tokens (B, S, dim_in).

        Args:
            attn_mask: optional (S, S) boolean mask, True = may attend, used in every trunk block.
        Returns:
            list of ``num_iterations`` activated encodings (B, S, 9).
        """
        if cam_tokens.ndim != 3 or cam_tokens.shape[-1] != self.dim_in:
            raise ValueError(f"camera tokens must be (B, S, {self.dim_in}), got {tuple(cam_tokens.shape)}")
        if num_iterations < 1:
            raise ValueError("num_iterations must be >= 1")
        t = self.token_norm(cam_tokens)
        B, S, C = t.shape
        normed = self.adaln_norm(t)
        raw: Optional[torch.Tensor] = None
        out: List[torch.Tensor] = []
        for _ in range(num_iterations):
            if raw is None:
                cond = self.embed_pose(self.empty_pose_tokens.expand(B, S, -1).to(t.dtype))
            else:
                cond = self.embed_pose(raw.detach())
            shift, scale, gate = self.poseLN_modulation(cond).chunk(3, dim=-1)
            z = gate * (normed * (1 + scale) + shift) + t
            for blk in self.trunk:
                z = blk(z, attn_mask=attn_mask)
            delta = self.pose_branch(self.trunk_norm(z))
            raw = delta if raw is None else raw + delta
            out.append(activate_pose(raw, *self.acts))
        return out

    def forward_with_anchors(self, query_cam_tokens: torch.Tensor, anchor_cam_tokens: torch.Tensor,
                             num_iterations: int = 4, return_anchors: bool = False):
        """SAIL-Recon anchor-aware camera head (official ``sailrecon/heads/camera_head.py``).

        Tokens ``[anchors ; queries]`` run through the same iterative head with a mask in every trunk
        block: anchors attend to anchors only; each query attends to all anchors and itself. So each
        query's result depends only on the anchors and itself (batching queries changes nothing), and
        the anchor part equals :meth:`forward_camera_tokens` over the anchors alone.

        Args:
            query_cam_tokens: (B, S_q, dim_in) query O_23 camera tokens (raw, before token_norm).
            anchor_cam_tokens: (B, S_a, dim_in) stored anchor O_23 camera tokens (raw).
            num_iterations: refinement iterations (4).
            return_anchors: also return the anchors' encodings.
        Returns:
            list of ``num_iterations`` query encodings (B, S_q, 9); with ``return_anchors``, a tuple
            (query list, anchor list (B, S_a, 9) each).
        """
        if (query_cam_tokens.ndim != 3 or anchor_cam_tokens.ndim != 3
                or query_cam_tokens.shape[0] != anchor_cam_tokens.shape[0]
                or query_cam_tokens.shape[-1] != self.dim_in or anchor_cam_tokens.shape[-1] != self.dim_in):
            raise ValueError(f"expected query (B, S_q, {self.dim_in}) and anchor (B, S_a, {self.dim_in}) "
                             f"tokens, got {tuple(query_cam_tokens.shape)} and {tuple(anchor_cam_tokens.shape)}")
        S_a, S_q = anchor_cam_tokens.shape[1], query_cam_tokens.shape[1]
        tokens = torch.cat([anchor_cam_tokens.to(query_cam_tokens.dtype), query_cam_tokens], dim=1)
        mask = anchor_query_mask(S_a, S_q, device=tokens.device)
        encs = self.forward_camera_tokens(tokens, num_iterations, attn_mask=mask)
        queries = [e[:, S_a:] for e in encs]
        if return_anchors:
            return queries, [e[:, :S_a] for e in encs]
        return queries

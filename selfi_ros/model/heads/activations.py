"""Output activations of VGGT's heads (official github facebookresearch/vggt ``vggt/heads/head_act.py``:
``activate_pose``, ``activate_head``, ``inverse_log_transform``).

Value activations (applied to every channel but the last of a DPT output):
    "exp"      -> exp(v)                      (depth head)
    "inv_log"  -> sign(v) * expm1(|v|)        (point head; inverse of sign(x) log(1 + |x|))
    "linear"   -> v
    "relu"     -> max(v, 0)
    "sigmoid"  -> 1 / (1 + exp(-v))
    "norm_exp" -> v / |v| * expm1(|v|)        (|v| clamped to >= 1e-8)
Confidence activations (last channel):
    "expp1" -> 1 + exp(c)    "expp0" -> exp(c)    "sigmoid" -> sigmoid(c)    "linear" -> c
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

VALUE_ACTIVATIONS = ("exp", "inv_log", "linear", "relu", "sigmoid", "norm_exp")
CONF_ACTIVATIONS = ("expp1", "expp0", "sigmoid", "linear")


def inverse_log_transform(y: torch.Tensor) -> torch.Tensor:
    """``sign(y) * (exp(|y|) - 1)``, the inverse of ``sign(x) * log1p(|x|)``."""
    return torch.sign(y) * torch.expm1(torch.abs(y))


def apply_value_activation(v: torch.Tensor, activation: str) -> torch.Tensor:
    """Apply one of :data:`VALUE_ACTIVATIONS` to ``v`` (..., C); raises ValueError otherwise."""
    if activation == "exp":
        return torch.exp(v)
    if activation == "inv_log":
        return inverse_log_transform(v)
    if activation == "linear":
        return v
    if activation == "relu":
        return F.relu(v)
    if activation == "sigmoid":
        return torch.sigmoid(v)
    if activation == "norm_exp":
        d = v.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        return v / d * torch.expm1(d)
    raise ValueError(f"unknown activation {activation!r}; expected one of {VALUE_ACTIVATIONS}")


def apply_conf_activation(c: torch.Tensor, conf_activation: str) -> torch.Tensor:
    """Apply one of :data:`CONF_ACTIVATIONS` to ``c``; raises ValueError otherwise."""
    if conf_activation == "expp1":
        return 1 + torch.exp(c)
    if conf_activation == "expp0":
        return torch.exp(c)
    if conf_activation == "sigmoid":
        return torch.sigmoid(c)
    if conf_activation == "linear":
        return c
    raise ValueError(f"unknown conf activation {conf_activation!r}; expected one of {CONF_ACTIVATIONS}")


def activate_head(out: torch.Tensor, activation: str = "exp", conf_activation: str = "expp1"
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split a DPT output map into activated values and confidence.

    Args:
        out: (N, C, H, W) raw output with C >= 2; channels 0..C-2 are the value, C-1 the confidence.
    Returns:
        (values (N, H, W, C-1), conf (N, H, W)).
    """
    if out.ndim != 4 or out.shape[1] < 2:
        raise ValueError(f"activate_head expects (N, C>=2, H, W), got {tuple(out.shape)}")
    fmap = out.permute(0, 2, 3, 1)
    return apply_value_activation(fmap[..., :-1], activation), apply_conf_activation(fmap[..., -1],
                                                                                      conf_activation)


def activate_pose(pose: torch.Tensor, trans_act: str = "linear", quat_act: str = "linear",
                  fov_act: str = "relu") -> torch.Tensor:
    """Activate a raw 9-D pose encoding: translation [0:3], quaternion [3:7], FoV [7:9].

    VGGT's ``CameraHead`` uses linear / linear / relu (official ``vggt/heads/camera_head.py``); the quaternion
    is not normalised.
    """
    if pose.shape[-1] != 9:
        raise ValueError(f"pose must be (..., 9), got {tuple(pose.shape)}")
    return torch.cat([apply_value_activation(pose[..., :3], trans_act),
                      apply_value_activation(pose[..., 3:7], quat_act),
                      apply_value_activation(pose[..., 7:], fov_act)], dim=-1)

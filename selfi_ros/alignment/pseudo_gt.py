"""Pseudo-ground-truth correspondences from depth, intrinsics and relative poses (Selfi, Deng et al.
2025, arXiv 2512.08930, Sec. "geometric feature alignment").

A source pixel ``p_s`` with depth ``D_s(p_s)`` is lifted to 3D in the source camera, moved into a target
camera with the relative pose, and projected with the target intrinsics to ``p_t``. The correspondence is
*visible* when the projected depth agrees with the target's own depth at ``p_t``:

    V = | z(P_t) - D_t(p_t) | < alpha * D_t(p_t)          (relative test, alpha = 0.05 by default)

and ``p_t`` lies inside the target image with ``z(P_t) > 0``. Selfi writes the threshold as an absolute
``alpha``; VGGT's scale is normalised so the two differ only by a scene-dependent factor; the relative
form used here is scale invariant, which matters because VGGT's scale is arbitrary.

Conventions: pixel coordinates are ``(x, y) = (column, row)`` with integer values at pixel centres
(so ``u = K [X/Z, Y/Z, 1]`` indexes the depth map directly); extrinsics are camera-from-world ``[R | t]``
(``X_cam = R X_world + t``); intrinsics K are 3x3 in pixels of the depth maps; depth is z-depth.
Everything is batched torch and differentiable-free (wrapped in ``torch.no_grad`` by callers that train).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Correspondences:
    """Pseudo-GT correspondences from one source frame to T target frames.

    Attributes:
        src_uv: (B, N, 2) float32 source pixel coordinates (x, y) of the N query points.
        tgt_uv: (B, T, N, 2) float32 projected pixel coordinates in each target (x, y).
        valid: (B, T, N) bool, in bounds AND positive depth AND depth-consistent (visible).
        in_bounds: (B, T, N) bool, projection lands inside the target image with z > 0.
        weight: (B, T, N) float32 loss weight: ``valid`` times the optional confidence weighting.
        tgt_index: (T,) int64 index of each target frame in the clip.
        proj_depth: (B, T, N) float32 z of the transformed point in each target camera.
    """

    src_uv: torch.Tensor
    tgt_uv: torch.Tensor
    valid: torch.Tensor
    in_bounds: torch.Tensor
    weight: torch.Tensor
    tgt_index: torch.Tensor
    proj_depth: torch.Tensor


def _check(name: str, t: torch.Tensor, shape: tuple) -> None:
    """Raise ValueError unless ``t`` has ``shape`` (None entries are free)."""
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        raise ValueError(f"{name} must have shape {shape} (None = any), got {tuple(t.shape)}")


def sample_query_pixels(
    batch: int, height: int, width: int, num: int, generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu", valid_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Draw ``num`` integer query pixels per batch element, uniformly without replacement.

    Args:
        valid_mask: optional (B, H, W) bool; queries are drawn only where True (with replacement when a
            mask has fewer than ``num`` True pixels; all-False masks fall back to uniform sampling).
    Returns:
        (B, num, 2) float32 pixel coordinates (x, y) at pixel centres.
    """
    out = torch.empty(batch, num, 2, dtype=torch.float32, device=device)
    hw = height * width
    for b in range(batch):
        if valid_mask is not None and bool(valid_mask[b].any()):
            w = valid_mask[b].reshape(-1).float().cpu()
            idx = torch.multinomial(w, num, replacement=int(w.sum()) < num, generator=generator)
        else:
            idx = torch.randperm(hw, generator=generator)[:num]
            if num > hw:
                idx = torch.randint(0, hw, (num,), generator=generator)
        idx = idx.to(device)
        out[b, :, 0] = (idx % width).float()
        out[b, :, 1] = torch.div(idx, width, rounding_mode="floor").float()
    return out


def sample_map(maps: torch.Tensor, uv: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Sample per-pixel maps at pixel coordinates.

    Args:
        maps: (B, C, H, W) tensor.
        uv: (B, N, 2) pixel coordinates (x, y), integer at pixel centres.
        mode: "nearest" (round to the closest pixel) or "bilinear".
    Returns:
        (B, N, C) samples; coordinates outside the image are clamped to the border.
    """
    _check("maps", maps, (None, None, None, None))
    _check("uv", uv, (maps.shape[0], None, 2))
    B, C, H, W = maps.shape
    if mode == "nearest":
        x = uv[..., 0].round().long().clamp(0, W - 1)
        y = uv[..., 1].round().long().clamp(0, H - 1)
        flat = maps.reshape(B, C, H * W)
        idx = (y * W + x).unsqueeze(1).expand(B, C, uv.shape[1])
        return torch.gather(flat, 2, idx).transpose(1, 2)
    if mode == "bilinear":
        gx = uv[..., 0] / max(W - 1, 1) * 2 - 1
        gy = uv[..., 1] / max(H - 1, 1) * 2 - 1
        grid = torch.stack([gx, gy], dim=-1).unsqueeze(1).to(maps.dtype)  # (B,1,N,2)
        s = torch.nn.functional.grid_sample(maps, grid, mode="bilinear", padding_mode="border",
                                            align_corners=True)
        return s[:, :, 0].transpose(1, 2)
    raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")


def relative_pose(extr_src: torch.Tensor, extr_tgt: torch.Tensor) -> torch.Tensor:
    """Relative transform ``T_tgt_src`` (..., 4, 4) from camera-from-world extrinsics (..., 3, 4).

    ``X_tgt = T_tgt_src X_src`` with ``T_tgt_src = E_tgt E_src^-1``.
    """
    def h(E: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(E.shape[:-2] + (4, 4), dtype=E.dtype, device=E.device)
        out[..., :3, :] = E[..., :3, :]
        out[..., 3, 3] = 1.0
        return out

    Es = h(extr_src)
    R, t = Es[..., :3, :3], Es[..., :3, 3:]
    inv = torch.zeros_like(Es)
    inv[..., :3, :3] = R.transpose(-1, -2)
    inv[..., :3, 3:] = -R.transpose(-1, -2) @ t
    inv[..., 3, 3] = 1.0
    return h(extr_tgt) @ inv


def pseudo_gt_correspondences(
    depth: torch.Tensor,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    src_index: int,
    query_uv: torch.Tensor,
    alpha: float = 0.05,
    conf: Optional[torch.Tensor] = None,
    conf_weighting: bool = False,
    min_depth: float = 1e-6,
) -> Correspondences:
    """Correspondences of source pixels in every other frame of a clip (Selfi pseudo-GT).

    Args:
        depth: (B, S, H, W) z-depth of every frame (e.g. VGGT's predicted depth, or ground truth).
        extrinsics: (B, S, 3, 4) camera-from-world.
        intrinsics: (B, S, 3, 3) pixels of ``depth``.
        src_index: index of the source frame in S (Selfi uses the middle frame of an 11-frame clip).
        query_uv: (B, N, 2) source pixels (x, y); read at the nearest pixel of the source depth.
        alpha: relative depth-consistency threshold of the visibility test.
        conf: optional (B, S, H, W) confidence (e.g. VGGT depth confidence, >= 1).
        conf_weighting: if True, weight = valid * c_s * c_t with each confidence divided by its clip mean
            (so weights stay O(1)); otherwise weight = valid.
        min_depth: depths at or below this count as invalid (no lifting / no projection).
    Returns:
        :class:`Correspondences` for the S - 1 targets (every frame except ``src_index``, in order).
    Raises:
        ValueError: on inconsistent shapes or an out-of-range ``src_index``.
    """
    _check("depth", depth, (None, None, None, None))
    B, S, H, W = depth.shape
    _check("extrinsics", extrinsics, (B, S, 3, 4))
    _check("intrinsics", intrinsics, (B, S, 3, 3))
    _check("query_uv", query_uv, (B, None, 2))
    if conf is not None:
        _check("conf", conf, (B, S, H, W))
    if not 0 <= src_index < S or S < 2:
        raise ValueError(f"src_index {src_index} out of range for a clip of S={S} frames (S >= 2)")
    dt = torch.float32
    depth = depth.to(dt)
    extrinsics = extrinsics.to(dt)
    intrinsics = intrinsics.to(dt)
    N = query_uv.shape[1]
    tgt = torch.tensor([i for i in range(S) if i != src_index], dtype=torch.long, device=depth.device)
    T = len(tgt)

    # 1. lift source pixels with their depth
    d_s = sample_map(depth[:, src_index : src_index + 1], query_uv, "nearest")[..., 0]  # (B, N)
    uv1 = torch.cat([query_uv.to(dt), torch.ones_like(query_uv[..., :1], dtype=dt)], dim=-1)  # (B,N,3)
    rays = uv1 @ torch.linalg.inv(intrinsics[:, src_index]).transpose(-1, -2)  # (B,N,3)
    X_s = rays * d_s.unsqueeze(-1)

    # 2. move into each target camera
    T_ts = relative_pose(extrinsics[:, src_index : src_index + 1].expand(B, T, 3, 4), extrinsics[:, tgt])
    X_t = X_s.unsqueeze(1) @ T_ts[..., :3, :3].transpose(-1, -2) + T_ts[..., :3, 3].unsqueeze(-2)  # (B,T,N,3)
    z = X_t[..., 2]
    # 3. project with the target intrinsics
    Kt = intrinsics[:, tgt]  # (B,T,3,3)
    zs = torch.where(z.abs() > min_depth, z, torch.full_like(z, min_depth))
    x = X_t[..., 0] / zs
    y = X_t[..., 1] / zs
    u = Kt[..., 0, 0, None] * x + Kt[..., 0, 1, None] * y + Kt[..., 0, 2, None]
    v = Kt[..., 1, 1, None] * y + Kt[..., 1, 2, None]
    tgt_uv = torch.stack([u, v], dim=-1)
    in_bounds = (z > min_depth) & (d_s.unsqueeze(1) > min_depth) & (u >= -0.5) & (u <= W - 0.5) & \
        (v >= -0.5) & (v <= H - 0.5) & torch.isfinite(u) & torch.isfinite(v)

    # 4. visibility: projected depth agrees with the target's depth there
    d_t = sample_map(depth[:, tgt].reshape(B * T, 1, H, W), tgt_uv.reshape(B * T, N, 2), "nearest")
    d_t = d_t.reshape(B, T, N)
    visible = (z - d_t).abs() < alpha * d_t
    valid = in_bounds & visible & (d_t > min_depth)

    weight = valid.to(dt)
    if conf is not None and conf_weighting:
        c = conf.to(dt) / conf.to(dt).mean().clamp_min(1e-12)
        c_s = sample_map(c[:, src_index : src_index + 1], query_uv, "nearest")[..., 0]
        c_t = sample_map(c[:, tgt].reshape(B * T, 1, H, W), tgt_uv.reshape(B * T, N, 2), "nearest")
        weight = weight * c_s.unsqueeze(1) * c_t.reshape(B, T, N)
    return Correspondences(
        src_uv=query_uv.to(dt), tgt_uv=tgt_uv, valid=valid, in_bounds=in_bounds, weight=weight,
        tgt_index=tgt, proj_depth=z,
    )

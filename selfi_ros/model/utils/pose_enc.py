"""VGGT's 9-D camera pose encoding ``absT_quaR_FoV`` (Wang et al., VGGT, CVPR 2025, Sec. 3.3 camera head;
official github facebookresearch/vggt ``vggt/utils/pose_enc.py``: ``extri_intri_to_pose_encoding``,
``pose_encoding_to_extri_intri``; quaternions as ``vggt/utils/rotation.py`` ``quat_to_mat``).

Layout of the last axis: ``[t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w]``

- ``t`` and the quaternion ``q`` (scalar last, XYZW) describe the **camera-from-world** extrinsics
  ``[R | t]``: ``X_cam = R X_world + t`` (OpenCV camera axes).
- ``fov_h`` is the vertical field of view (radians) and goes with the image height H and ``fy``;
  ``fov_w`` is the horizontal one and goes with W and ``fx``.
- Intrinsics have the principal point at the image centre ``(W/2, H/2)``, zero skew.

All functions are batched over arbitrary leading axes and work in torch (any float dtype, any device).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "quat_to_mat",
    "mat_to_quat",
    "pose_encoding_to_extri_intri",
    "extri_intri_to_pose_encoding",
]


def quat_to_mat(quat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from XYZW quaternions, accepting non-unit quaternions.

    Uses ``s = 2 / |q|^2`` inside the usual formula, so ``q`` and ``c q`` (c != 0) give the same R
    (this is how VGGT converts its un-normalised predicted quaternion: official ``quat_to_mat``).

    Args:
        quat: (..., 4) quaternions ``(x, y, z, w)``. A zero quaternion gives NaN/inf entries.
    Returns:
        (..., 3, 3) rotation matrices, same dtype/device.
    Raises:
        ValueError: if the last axis is not 4.
    """
    if quat.shape[-1] != 4:
        raise ValueError(f"quat_to_mat expects (..., 4) XYZW quaternions, got shape {tuple(quat.shape)}")
    x, y, z, w = quat.unbind(-1)
    s = 2.0 / (quat * quat).sum(-1)
    rows = (
        1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
        s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
        s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(quat.shape[:-1] + (3, 3))


def mat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Unit XYZW quaternions from rotation matrices, with ``q_w >= 0``.

    Method (PyTorch3D's ``matrix_to_quaternion`` idea, re-derived): the four quantities
    ``4 q_i^2`` are read off the diagonal; for each i a candidate quaternion is formed by dividing the
    off-diagonal combinations by ``2 |q_i|``, and the candidate with the largest ``|q_i|`` (best
    conditioned) is kept. The sign is then standardised so that the scalar part is non-negative.

    Args:
        R: (..., 3, 3) rotation matrices.
    Returns:
        (..., 4) unit quaternions ``(x, y, z, w)``.
    Raises:
        ValueError: if the trailing shape is not (3, 3).
    """
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"mat_to_quat expects (..., 3, 3) matrices, got shape {tuple(R.shape)}")
    m = R
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4*q^2 for (w, x, y, z)
    four_sq = torch.stack([
        1.0 + m00 + m11 + m22,
        1.0 + m00 - m11 - m22,
        1.0 - m00 + m11 - m22,
        1.0 - m00 - m11 + m22,
    ], dim=-1)
    q_abs = torch.sqrt(torch.clamp(four_sq, min=0.0))  # 2|q_i|, order (w, x, y, z)
    # Row i: 2|q_i| * (w, x, y, z) assuming q_i > 0 (all four numerators scale as 4 q_i q_j).
    cand = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m21 + m12], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
    ], dim=-2)
    floor = torch.tensor(0.1, dtype=q_abs.dtype, device=q_abs.device)
    cand = cand / (2.0 * torch.maximum(q_abs[..., None], floor))
    best = q_abs.argmax(dim=-1)
    idx = best[..., None, None].expand(best.shape + (1, 4))
    q_wxyz = torch.gather(cand, -2, idx).squeeze(-2)
    q_wxyz = F.normalize(q_wxyz, dim=-1)
    q_xyzw = torch.cat([q_wxyz[..., 1:], q_wxyz[..., :1]], dim=-1)
    return torch.where(q_xyzw[..., 3:4] < 0, -q_xyzw, q_xyzw)


def _check_hw(image_size_hw: Sequence[int]) -> Tuple[float, float]:
    if len(image_size_hw) != 2:
        raise ValueError(f"image_size_hw must be (H, W), got {image_size_hw!r}")
    H, W = float(image_size_hw[0]), float(image_size_hw[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"image_size_hw must be positive, got {image_size_hw!r}")
    return H, W


def pose_encoding_to_extri_intri(pose_encoding: torch.Tensor, image_size_hw: Sequence[int],
                                 build_intrinsics: bool = True
                                 ) -> Tuple[torch.Tensor, torch.Tensor | None]:
    """Decode 9-D ``absT_quaR_FoV`` encodings into extrinsics and intrinsics (official
    ``pose_encoding_to_extri_intri``).

    Args:
        pose_encoding: (..., 9) as described in the module docstring (the quaternion need not be
            unit-norm; a FoV of exactly 0 yields an infinite focal length, as in VGGT).
        image_size_hw: (H, W) in pixels of the network input the encoding refers to.
        build_intrinsics: if False, the second return value is None.
    Returns:
        extrinsics (..., 3, 4) camera-from-world ``[R | t]``;
        intrinsics (..., 3, 3) ``[[fx, 0, W/2], [0, fy, H/2], [0, 0, 1]]`` with
        ``fx = (W/2) / tan(fov_w/2)``, ``fy = (H/2) / tan(fov_h/2)``.
    Raises:
        ValueError: on a last axis other than 9 or a bad image size.
    """
    if pose_encoding.shape[-1] != 9:
        raise ValueError(f"pose encoding must be (..., 9), got shape {tuple(pose_encoding.shape)}")
    H, W = _check_hw(image_size_hw)
    t = pose_encoding[..., :3]
    R = quat_to_mat(pose_encoding[..., 3:7])
    extrinsics = torch.cat([R, t[..., None]], dim=-1)
    if not build_intrinsics:
        return extrinsics, None
    fov_h = pose_encoding[..., 7]
    fov_w = pose_encoding[..., 8]
    fy = (H / 2.0) / torch.tan(fov_h / 2.0)
    fx = (W / 2.0) / torch.tan(fov_w / 2.0)
    intrinsics = torch.zeros(pose_encoding.shape[:-1] + (3, 3), dtype=pose_encoding.dtype,
                             device=pose_encoding.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = W / 2.0
    intrinsics[..., 1, 2] = H / 2.0
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def extri_intri_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                                 image_size_hw: Sequence[int]) -> torch.Tensor:
    """Encode camera-from-world extrinsics and pinhole intrinsics as 9-D ``absT_quaR_FoV``.

    Only ``fx`` and ``fy`` of K are used: ``fov_h = 2 atan((H/2)/fy)``, ``fov_w = 2 atan((W/2)/fx)``
    (the principal point is assumed to be the image centre, as in VGGT). The quaternion is unit-norm
    with ``q_w >= 0``.

    Args:
        extrinsics: (..., 3, 4) or (..., 4, 4) camera-from-world transforms.
        intrinsics: (..., 3, 3) K in pixels, same leading axes.
        image_size_hw: (H, W) in pixels.
    Returns:
        (..., 9) encodings, dtype of ``extrinsics``.
    Raises:
        ValueError: on mismatched or malformed shapes.
    """
    if extrinsics.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"extrinsics must be (..., 3, 4) or (..., 4, 4), got {tuple(extrinsics.shape)}")
    if intrinsics.shape[-2:] != (3, 3) or intrinsics.shape[:-2] != extrinsics.shape[:-2]:
        raise ValueError(f"intrinsics must be (..., 3, 3) with the extrinsics' leading axes "
                         f"{tuple(extrinsics.shape[:-2])}, got {tuple(intrinsics.shape)}")
    H, W = _check_hw(image_size_hw)
    R = extrinsics[..., :3, :3]
    t = extrinsics[..., :3, 3]
    quat = mat_to_quat(R)
    fov_h = 2.0 * torch.atan((H / 2.0) / intrinsics[..., 1, 1])
    fov_w = 2.0 * torch.atan((W / 2.0) / intrinsics[..., 0, 0])
    return torch.cat([t, quat, fov_h[..., None], fov_w[..., None]], dim=-1).to(extrinsics.dtype)

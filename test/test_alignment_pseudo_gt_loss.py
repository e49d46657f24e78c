"""Pseudo-GT correspondences and the soft-argmax loss (Selfi) against independent computations."""
import math

import numpy as np
import torch

from selfi_ros.alignment.loss import correspondence_loss, soft_argmax_matches
from selfi_ros.alignment.pseudo_gt import pseudo_gt_correspondences, sample_query_pixels
from selfi_ros_testing import assert_close_rel


def _rot(axis, deg):
    a = np.radians(deg)
    c, s = math.cos(a), math.sin(a)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _clip(H=12, W=16, seed=0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(2.0, 4.0, size=(1, 3, H, W)).astype(np.float32)
    K = np.array([[20.0, 0, 7.5], [0, 21.0, 5.5], [0, 0, 1]])
    E = np.zeros((1, 3, 3, 4))
    E[0, 0, :, :3] = _rot("y", 3)
    E[0, 0, :, 3] = [0.1, -0.05, 0.02]
    E[0, 1, :, :3] = np.eye(3)
    E[0, 2, :, :3] = _rot("x", -4) @ _rot("y", 2)
    E[0, 2, :, 3] = [-0.2, 0.03, 0.1]
    Ks = np.broadcast_to(K, (1, 3, 3, 3)).copy()
    return depth, E, Ks


def test_pseudo_gt_matches_independent_per_pixel_loop():
    depth, E, K = _clip()
    H, W = depth.shape[-2:]
    uv = sample_query_pixels(1, H, W, 60, generator=torch.Generator().manual_seed(1))
    c = pseudo_gt_correspondences(torch.tensor(depth), torch.tensor(E), torch.tensor(K), 1, uv, alpha=0.05)
    assert c.tgt_index.tolist() == [0, 2]
    for ti, t in enumerate([0, 2]):
        Ws = np.eye(4); Ws[:3] = E[0, 1]
        Wt = np.eye(4); Wt[:3] = E[0, t]
        for n in range(uv.shape[1]):
            x, y = uv[0, n].tolist()
            d = depth[0, 1, int(y), int(x)]
            Xc = np.linalg.inv(K[0, 1]) @ np.array([x, y, 1.0]) * d
            Xw = np.linalg.inv(Ws) @ np.r_[Xc, 1]
            Xt = (Wt @ Xw)[:3]
            p = K[0, t] @ (Xt / Xt[2])
            np.testing.assert_allclose(c.tgt_uv[0, ti, n].numpy(), p[:2], atol=1e-3)
            inb = (Xt[2] > 0) and -0.5 <= p[0] <= W - 0.5 and -0.5 <= p[1] <= H - 0.5
            assert bool(c.in_bounds[0, ti, n]) == inb
            if inb:
                dt = depth[0, t, int(round(p[1])), int(round(p[0]))]
                assert bool(c.valid[0, ti, n]) == (abs(Xt[2] - dt) < 0.05 * dt)


def test_identity_pose_maps_pixels_to_themselves_and_visible():
    H, W = 10, 14
    depth = torch.full((1, 2, H, W), 3.0)
    E = torch.zeros(1, 2, 3, 4); E[..., :3] = torch.eye(3)
    K = torch.tensor([[15.0, 0, 6.5], [0, 15.0, 4.5], [0, 0, 1]]).expand(1, 2, 3, 3)
    uv = sample_query_pixels(1, H, W, 40, generator=torch.Generator().manual_seed(0))
    c = pseudo_gt_correspondences(depth, E, K, 0, uv)
    assert_close_rel(c.tgt_uv[0, 0], uv[0], 1e-5)
    assert bool(c.valid.all())


def test_visibility_rejects_occluded_points():
    H, W = 10, 14
    depth = torch.full((1, 2, H, W), 3.0)
    depth[0, 1, :, :7] = 1.0  # an occluder in front of the left half of the target
    E = torch.zeros(1, 2, 3, 4); E[..., :3] = torch.eye(3)
    K = torch.tensor([[15.0, 0, 6.5], [0, 15.0, 4.5], [0, 0, 1]]).expand(1, 2, 3, 3)
    uv = torch.tensor([[[2.0, 3.0], [10.0, 3.0]]])
    c = pseudo_gt_correspondences(depth, E, K, 0, uv)
    assert c.in_bounds[0, 0].tolist() == [True, True]
    assert c.valid[0, 0].tolist() == [False, True]


def test_out_of_bounds_is_invalid():
    H, W = 10, 14
    depth = torch.full((1, 2, H, W), 2.0)
    E = torch.zeros(1, 2, 3, 4); E[..., :3] = torch.eye(3)
    E[0, 1, 0, 3] = -1.0  # target camera shifted right: points move left in the image
    K = torch.tensor([[15.0, 0, 6.5], [0, 15.0, 4.5], [0, 0, 1]]).expand(1, 2, 3, 3)
    uv = torch.tensor([[[0.0, 4.0], [13.0, 4.0]]])
    c = pseudo_gt_correspondences(depth, E, K, 0, uv)
    np.testing.assert_allclose(c.tgt_uv[0, 0, :, 0].numpy(), [0 - 7.5, 13 - 7.5], atol=1e-4)
    assert c.valid[0, 0].tolist() == [False, True]


def _onehot_features(H, W, shift=(0, 0)):
    """Each pixel gets its own one-hot code; the target is the source shifted by ``shift`` (dx, dy)."""
    C = H * W
    src = torch.eye(C).reshape(C, H, W)
    dx, dy = shift
    tgt = torch.roll(src, shifts=(dy, dx), dims=(1, 2))
    return src, tgt


def test_soft_argmax_recovers_exact_pixel_with_onehot_features():
    H, W = 6, 7
    src, tgt = _onehot_features(H, W, shift=(2, 1))
    uv = torch.tensor([[[1.0, 1.0], [3.0, 2.0], [4.0, 4.0]]])
    q = src[:, uv[0, :, 1].long(), uv[0, :, 0].long()].T.unsqueeze(0)
    soft, hard = soft_argmax_matches(q, tgt[None, None], temperature=100.0, want_hard=True)
    expect = uv[0] + torch.tensor([2.0, 1.0])
    assert_close_rel(soft[0, 0], expect, 1e-5)
    torch.testing.assert_close(hard[0, 0], expect)


def test_loss_is_zero_for_perfect_features_and_positive_otherwise():
    H, W = 6, 7
    depth = torch.full((1, 2, H, W), 2.0)
    E = torch.zeros(1, 2, 3, 4); E[..., :3] = torch.eye(3)
    E[0, 1, 0, 3] = -0.2  # shift of exactly 1 px with fx=10, z=2
    K = torch.tensor([[10.0, 0, 3.0], [0, 10.0, 2.5], [0, 0, 1]]).expand(1, 2, 3, 3)
    uv = torch.tensor([[[1.0, 1.0], [3.0, 2.0], [5.0, 4.0]]])
    c = pseudo_gt_correspondences(depth, E, K, 0, uv)
    assert_close_rel(c.tgt_uv[0, 0], uv[0] - torch.tensor([1.0, 0]), 1e-5)
    src, tgt = _onehot_features(H, W, shift=(-1, 0))
    feats = torch.stack([src, tgt])[None]  # (1, 2, C, H, W)
    loss, m = correspondence_loss(feats, c, 0, temperature=100.0, with_metrics=True)
    assert float(loss) < 1e-8
    assert m.pck[1.0] == 1.0 and m.num_valid == 3
    # wrong features (no shift) -> squared error of 1 px^2
    feats_bad = torch.stack([src, src])[None]
    loss_bad, m_bad = correspondence_loss(feats_bad, c, 0, temperature=100.0, with_metrics=True)
    assert abs(float(loss_bad) - 1.0) < 1e-4
    assert m_bad.pck[1.0] == 1.0 and m_bad.pck[3.0] == 1.0  # 1 px off counts at <= 1 px


def test_loss_gradients_flow_and_weights_mask():
    torch.manual_seed(0)
    H, W = 8, 9
    feats = torch.nn.functional.normalize(torch.randn(1, 2, 5, H, W), dim=2).requires_grad_(True)
    depth = torch.full((1, 2, H, W), 2.0)
    E = torch.zeros(1, 2, 3, 4); E[..., :3] = torch.eye(3)
    K = torch.tensor([[10.0, 0, 4.0], [0, 10.0, 3.5], [0, 0, 1]]).expand(1, 2, 3, 3)
    uv = sample_query_pixels(1, H, W, 20, generator=torch.Generator().manual_seed(0))
    c = pseudo_gt_correspondences(depth, E, K, 0, uv)
    loss, _ = correspondence_loss(feats, c, 0, chunk=7)
    loss.backward()
    assert feats.grad is not None and float(feats.grad.abs().sum()) > 0
    c.weight.zero_()
    loss0, _ = correspondence_loss(feats, c, 0)
    assert float(loss0) == 0.0

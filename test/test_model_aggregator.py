"""Aggregator / layers: RoPE, pos_embed resize, alternating attention vs direct computations."""
import math

import numpy as np
import pytest
import torch

from selfi_ros.model.aggregator import Aggregator, validate_images
from selfi_ros.model.config import VGGTConfig
from selfi_ros.model.layers import Block, RotaryPositionEmbedding2D, patch_positions, resize_pos_embed_grid
from selfi_ros_testing import assert_close_rel

torch.set_num_threads(1)


def _perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights where every branch matters (LayerScale ~U(0.1, 0.6), tokens N(0, 0.5^2))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.1)
            elif "token" in name or "pos_embed" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_rope_matches_independent_formula():
    rope = RotaryPositionEmbedding2D(100.0)
    B, Hh, N, D = 2, 3, 7, 16
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, Hh, N, D, generator=g, dtype=torch.float64)
    pos = torch.randint(0, 9, (B, N, 2), generator=g)
    out = rope(x, pos).numpy()
    xn, pn = x.numpy(), pos.numpy()
    ref = np.empty_like(xn)
    half, q = D // 2, D // 4
    for b in range(B):
        for n in range(N):
            for axis in range(2):
                p = float(pn[b, n, axis])
                for i in range(q):
                    theta = p * 100.0 ** (-i / q)  # 100^(-2i/half)
                    u = xn[b, :, n, axis * half + i]
                    v = xn[b, :, n, axis * half + i + q]
                    ref[b, :, n, axis * half + i] = u * math.cos(theta) - v * math.sin(theta)
                    ref[b, :, n, axis * half + i + q] = v * math.cos(theta) + u * math.sin(theta)
    assert_close_rel(out, ref, 1e-5)
    # position (0, 0) is the identity
    zero = torch.zeros(B, N, 2, dtype=torch.long)
    torch.testing.assert_close(rope(x, zero), x)


def test_patch_positions_layout():
    pos = patch_positions(2, 3, 5)
    assert pos.shape == (11, 2)
    assert (pos[:5] == 0).all()
    assert pos[5].tolist() == [1, 1] and pos[7].tolist() == [1, 3] and pos[8].tolist() == [2, 1]


def _keys_cubic(t, a=-0.5):
    t = abs(t)
    if t < 1:
        return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
    if t < 2:
        return a * (t ** 3 - 5 * t ** 2 + 8 * t - 4)
    return 0.0


def _aa_matrix(n_in, n_out):
    """Separable antialiased bicubic resize matrix (PyTorch ``F.interpolate(mode="bicubic", antialias=True)``, as
    DINOv2's ``interpolate_pos_encoding`` in facebookresearch/dinov2 uses it)."""
    M = np.zeros((n_out, n_in))
    scale = n_in / n_out
    f = max(scale, 1.0)
    support = 2.0 * f
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        w = np.array([_keys_cubic((j - center + 0.5) / f) for j in range(lo, hi)])
        M[i, lo:hi] = w / w.sum()
    return M


@pytest.mark.parametrize("hw", [(21, 37), (9, 13), (40, 45)])
def test_pos_embed_resize_matches_separable_formula(hw):
    h, w = hw
    G, C = 37, 3
    g = torch.Generator().manual_seed(2)
    grid = torch.randn(1, C, G, G, generator=g)
    out = resize_pos_embed_grid(grid, h, w)[0].double().numpy()
    Mh, Mw = _aa_matrix(G, h), _aa_matrix(G, w)
    ref = np.einsum("ia,cab,jb->cij", Mh, grid[0].double().numpy(), Mw)
    assert_close_rel(out, ref, 2e-5)


def test_block_state_dict_names():
    b = Block(64, 4, init_values=0.01, qk_norm=True, rope=RotaryPositionEmbedding2D())
    names = list(b.state_dict())
    assert names == ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.q_norm.weight",
                     "attn.q_norm.bias", "attn.k_norm.weight", "attn.k_norm.bias", "attn.proj.weight",
                     "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight",
                     "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"]
    assert "attn.q_norm.weight" not in Block(64, 4).state_dict()


def _direct_block(blk: Block, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Independent computation of one aggregator block on (N, C) tokens with explicit matmuls."""
    a = blk.attn
    Hh, d = a.num_heads, a.head_dim
    y = torch.nn.functional.layer_norm(x, (x.shape[-1],), blk.norm1.weight, blk.norm1.bias, 1e-5)
    qkv = y @ a.qkv.weight.T + a.qkv.bias
    q, k, v = [qkv[:, i * Hh * d:(i + 1) * Hh * d].reshape(-1, Hh, d).transpose(0, 1) for i in range(3)]
    q = torch.nn.functional.layer_norm(q, (d,), a.q_norm.weight, a.q_norm.bias, 1e-5)
    k = torch.nn.functional.layer_norm(k, (d,), a.k_norm.weight, a.k_norm.bias, 1e-5)

    def rot(t):
        outs = []
        for axis, ch in enumerate(t.split(d // 2, dim=-1)):
            n = d // 4
            freqs = 100.0 ** (-torch.arange(n, dtype=t.dtype) / n)
            ang = pos[:, axis, None].to(t.dtype) * freqs  # (N, n)
            c, s = ang.cos(), ang.sin()
            u, w = ch[..., :n], ch[..., n:]
            outs += [u * c - w * s, w * c + u * s]
        return torch.cat(outs, dim=-1)

    q, k = rot(q), rot(k)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
    o = att.transpose(0, 1).reshape(x.shape[0], -1) @ a.proj.weight.T + a.proj.bias
    x = x + blk.ls1.gamma * o
    y = torch.nn.functional.layer_norm(x, (x.shape[-1],), blk.norm2.weight, blk.norm2.bias, 1e-5)
    h = torch.nn.functional.gelu(y @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
    return x + blk.ls2.gamma * (h @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias)


def test_aggregator_alternation_matches_direct_computation():
    torch.manual_seed(0)
    cfg = VGGTConfig.tiny(depth=2, dpt_layers=(0, 0, 1, 1))
    agg = Aggregator(cfg).eval()
    _perturb(agg)
    S, H, W = 3, 28, 42
    images = torch.rand(1, S, 3, H, W, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        outs, psi = agg(images, keep_layers="all")
        tokens, pos = agg.embed(images)
        P, C = tokens.shape[2], tokens.shape[3]
        assert psi == 5 and P == 5 + (H // 14) * (W // 14)
        # frame 0 uses token index 0, others index 1
        torch.testing.assert_close(tokens[0, 0, 0], agg.camera_token[0, 0, 0])
        torch.testing.assert_close(tokens[0, 2, 1:5], agg.register_token[0, 1])
        x = tokens[0]
        for i in range(cfg.depth):
            f = torch.stack([_direct_block(agg.frame_blocks[i], x[s], pos) for s in range(S)])
            g = _direct_block(agg.global_blocks[i], f.reshape(S * P, C), pos.repeat(S, 1)).reshape(S, P, C)
            assert_close_rel(outs[i][0], torch.cat([f, g], -1), 1e-4)
            x = g


def test_aggregator_keeps_only_needed_layers():
    agg = Aggregator(VGGTConfig.tiny(depth=4, dpt_layers=(0, 1, 1, 3))).eval()
    with torch.no_grad():
        outs, _ = agg(torch.rand(1, 2, 3, 14, 28))
    assert [o is not None for o in outs] == [True, True, False, True]
    with torch.no_grad():
        outs, _ = agg(torch.rand(1, 2, 3, 14, 28), keep_layers=[2])
    assert [o is not None for o in outs] == [False, False, True, False]


@pytest.mark.parametrize("bad,exc", [
    (torch.rand(2, 3, 28, 28), ValueError),                 # rank 4 for the aggregator
    (torch.rand(1, 2, 4, 28, 28), ValueError),              # 4 channels
    (torch.randint(0, 255, (1, 2, 3, 28, 28)), TypeError),  # integer dtype
    (torch.rand(1, 2, 3, 30, 28), ValueError),              # not a multiple of 14
    (torch.rand(1, 0, 3, 28, 28), ValueError),              # empty
    (torch.full((1, 1, 3, 28, 28), float("nan")), ValueError),
])
def test_bad_images_raise(bad, exc):
    with pytest.raises(exc):
        validate_images(bad, 14)


def test_dino_pos_embed_unresized_at_train_size():
    agg = Aggregator(VGGTConfig.tiny(img_size=70))  # 5x5 table
    x = torch.zeros(1, 26, 64)
    pe = agg.patch_embed.interpolate_pos_encoding(x, 5, 5)
    torch.testing.assert_close(pe, agg.patch_embed.pos_embed)
    # the antialiased identity resize equals the table
    grid = agg.patch_embed.pos_embed[:, 1:].reshape(1, 5, 5, 64).permute(0, 3, 1, 2)
    torch.testing.assert_close(resize_pos_embed_grid(grid, 5, 5), grid.float())


# ---- top-level VGGT -------------------------------------------------------------------------------
from selfi_ros.model.loading import build_model  # noqa: E402
from selfi_ros.model.vggt import autocast_dtype  # noqa: E402


def _vggt():
    torch.manual_seed(0)
    m = build_model(VGGTConfig.tiny()).eval()
    _perturb(m, seed=4)
    with torch.no_grad():
        m.camera_head.pose_branch.fc2.weight[7:9] = 0.0
        m.camera_head.pose_branch.fc2.bias[7:9] = 0.3
    return m


def test_vggt_outputs_shapes_and_4d_equals_5d():
    m = _vggt()
    x = torch.rand(2, 3, 28, 42, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a = m(x)
        b = m(x[None])
    assert a.pose_enc.shape == (1, 2, 9) and len(a.pose_enc_list) == 4
    assert a.depth.shape == (1, 2, 28, 42, 1) and a.depth_conf.shape == (1, 2, 28, 42)
    assert a.world_points.shape == (1, 2, 28, 42, 3) and a.world_points_conf.shape == (1, 2, 28, 42)
    assert a.images.shape == (1, 2, 3, 28, 42) and a.random_weights is False
    assert torch.equal(a.pose_enc, b.pose_enc) and torch.equal(a.depth, b.depth)
    assert (a.depth > 0).all() and (a.depth_conf >= 1).all()


def test_vggt_camera_helpers():
    m = _vggt()
    with torch.no_grad():
        out = m(torch.rand(3, 3, 28, 42))
    E = out.extrinsics()
    T = out.world_from_camera()
    E4 = torch.cat([E, torch.tensor([0, 0, 0, 1.0]).expand(1, 3, 1, 4)], dim=2)
    assert_close_rel(T @ E4, torch.eye(4).expand(1, 3, 4, 4), 1e-4)
    K = out.intrinsics()
    assert torch.allclose(K[..., 0, 2], torch.tensor(21.0)) and torch.allclose(K[..., 1, 2], torch.tensor(14.0))
    K2 = out.intrinsics((56, 84))  # same FoV, twice the resolution: focal lengths double
    assert_close_rel(K2[..., 0, 0], 2 * K[..., 0, 0])
    fov_w = out.pose_enc[..., 8]
    assert_close_rel(K[..., 0, 0], 21.0 / torch.tan(fov_w / 2))


def test_vggt_frame_order_matters_only_through_first_frame():
    """Frame 0 defines the world; swapping frames 1 and 2 permutes their outputs (equivariance)."""
    m = _vggt()
    x = torch.rand(3, 3, 28, 42, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        a = m(x)
        b = m(x[[0, 2, 1]])
    assert_close_rel(a.pose_enc[:, [0, 2, 1]], b.pose_enc, 1e-4)
    assert_close_rel(a.depth[:, [0, 2, 1]], b.depth, 1e-4)


@pytest.mark.parametrize("bad", [
    torch.rand(3, 28, 28), torch.rand(2, 4, 28, 28), torch.zeros(2, 3, 28, 28, dtype=torch.uint8),
    torch.rand(2, 3, 28, 29), torch.rand(0, 3, 28, 28), torch.full((1, 3, 28, 28), float("nan")),
])
def test_vggt_bad_input(bad):
    m = _vggt()
    with pytest.raises((ValueError, TypeError)):
        m(bad)


def test_autocast_dtype_cpu_is_none():
    assert autocast_dtype(torch.device("cpu")) is None


def test_intrinsics_original_undo_preprocessing():
    import numpy as np

    from selfi_ros.model.preprocessing import preprocess_images

    m = _vggt()
    imgs = [np.random.default_rng(i).integers(0, 255, (60, 90, 3), dtype=np.uint8) for i in range(2)]
    x, metas = preprocess_images(imgs, target=42)
    with torch.no_grad():
        out = m(x)
    Ko = out.intrinsics_original(metas)
    Kn = out.intrinsics()[0].double().numpy()
    sx, sy = metas[0].scale_xy
    np.testing.assert_allclose(Ko[:, 0, 0], Kn[:, 0, 0] / sx, rtol=1e-9)
    np.testing.assert_allclose(Ko[:, 1, 2], (Kn[:, 1, 2] + 0.5) / sy - 0.5, rtol=1e-9)
    with pytest.raises(ValueError):
        out.intrinsics_original(metas[:1])


def test_rope_cache_not_stale():
    rope = RotaryPositionEmbedding2D(100.0)
    x = torch.randn(1, 2, 5, 8)
    p1 = torch.randint(0, 6, (5, 2))
    p2 = p1.flip(0).clone()
    a1, a2 = rope(x, p1), rope(x, p2)
    assert not torch.allclose(a1, a2)
    assert_close_rel(a2, RotaryPositionEmbedding2D(100.0)(x, p2))
    torch.testing.assert_close(rope(x.double(), p1), RotaryPositionEmbedding2D(100.0)(x.double(), p1))
    assert_close_rel(rope(x, p1), a1)


def test_cpu_bf16_autocast_keeps_fp32_residual_stream_and_heads():
    """Under autocast the residual stream (and so every O_i) stays fp32 and the heads run in fp32, as in the
    official facebookresearch/vggt ``VGGT.forward`` (its heads run with autocast disabled)."""
    m = _vggt()
    x = torch.rand(2, 3, 28, 42, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs, _ = m.aggregator(x[None])
            low = m(x)
    assert all(o.dtype == torch.float32 for o in outs if o is not None)
    assert low.pose_enc.dtype == torch.float32 and low.depth.dtype == torch.float32
    assert_close_rel(low.depth, ref.depth, 0.1, atol_rel=0.05)

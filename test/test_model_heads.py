"""VGGT heads: checkpoint key/shape equality at full size (meta device) and tiny-size behaviour."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from selfi_ros.model.heads import DPTHead, activate_head, activate_pose, uv_position_embedding
from selfi_ros.model.heads.activations import apply_conf_activation, apply_value_activation
from selfi_ros_testing import assert_close_rel


TSV = Path(__file__).parent / "data" / "vggt_1b_state_dict.tsv"  # facebook/VGGT-1B tensor names and shapes


def _tsv_rows(prefix):
    if not TSV.exists():
        pytest.skip(f"{TSV} not available")
    rows = {}
    for line in TSV.read_text().splitlines():
        name, shape = line.split("\t")
        if name.startswith(prefix + "."):
            rows[name[len(prefix) + 1:]] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    assert rows, prefix
    return rows


def _state_shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _assert_matches_tsv(module, prefix):
    want = _tsv_rows(prefix)
    got = _state_shapes(module)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"missing {missing[:5]} extra {extra[:5]}"
    bad = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not bad, bad


# ---------------------------------------------------------------------------------------------- keys
def test_depth_head_keys_match_checkpoint():
    with torch.device("meta"):
        head = DPTHead(dim_in=2048, output_dim=2, activation="exp", conf_activation="expp1")
    _assert_matches_tsv(head, "depth_head")


def test_point_head_keys_match_checkpoint():
    with torch.device("meta"):
        head = DPTHead(dim_in=2048, output_dim=4, activation="inv_log", conf_activation="expp1")
    _assert_matches_tsv(head, "point_head")


# --------------------------------------------------------------------------------------- activations
def test_activations_against_formulas():
    torch.manual_seed(0)
    v = torch.randn(2, 3, 5, 7, dtype=torch.float64) * 3
    assert torch.allclose(apply_value_activation(v, "exp"), torch.from_numpy(np.exp(v.numpy())))
    inv = apply_value_activation(v, "inv_log")
    ref = torch.where(v >= 0, torch.exp(v) - 1, 1 - torch.exp(-v))
    assert torch.allclose(inv, ref, atol=1e-12)
    # inv_log inverts sign(x) log(1 + |x|)
    assert torch.allclose(torch.sign(inv) * torch.log1p(inv.abs()), v, atol=1e-10)
    assert torch.allclose(apply_conf_activation(v, "expp1"), 1 + torch.exp(v))
    out = torch.randn(2, 4, 3, 5)
    pts, conf = activate_head(out, "inv_log", "expp1")
    assert pts.shape == (2, 3, 5, 3) and conf.shape == (2, 3, 5)
    assert_close_rel(conf, 1 + out[:, 3].exp())
    assert_close_rel(pts[..., 1], torch.sign(out[:, 1]) * torch.expm1(out[:, 1].abs()))
    pose = torch.randn(4, 9)
    act = activate_pose(pose)
    assert torch.equal(act[:, :7], pose[:, :7])
    assert torch.equal(act[:, 7:], pose[:, 7:].clamp(min=0))
    with pytest.raises(ValueError):
        apply_value_activation(v, "nope")


def test_uv_embedding_against_formula():
    C, rows, cols, H, W = 8, 3, 5, 42, 70
    emb = uv_position_embedding(C, rows, cols, W / H)
    r = W / H
    sx, sy = r / math.sqrt(r * r + 1), 1 / math.sqrt(r * r + 1)
    n = C // 4
    for i in range(rows):
        for j in range(cols):
            u = sx * (2 * j + 1 - cols) / cols
            v = sy * (2 * i + 1 - rows) / rows
            om = [100 ** (-k / n) for k in range(n)]
            ref = ([math.sin(u * o) for o in om] + [math.cos(u * o) for o in om]
                   + [math.sin(v * o) for o in om] + [math.cos(v * o) for o in om])
            assert_close_rel(emb[:, i, j], torch.tensor(ref, dtype=torch.float32))


# ------------------------------------------------------------------------------------------ DPT head
def _tiny_tokens(B, S, H, W, dim_in, n_layers=24, patch=14, seed=0):
    g = torch.Generator().manual_seed(seed)
    P = 5 + (H // patch) * (W // patch)
    return [torch.randn(B, S, P, dim_in, generator=g) for _ in range(n_layers)]


def _tiny_dpt(**kw):
    torch.manual_seed(1)
    args = dict(dim_in=128, features=32, out_channels=(16, 32, 64, 64))
    args.update(kw)
    head = DPTHead(**args).eval()
    if not head.feature_only:
        with torch.no_grad():  # make the output branch matter
            head.scratch.output_conv2[2].weight.mul_(10)
    return head


def test_dpt_shapes_nonsquare_and_chunking_invariance():
    B, S, H, W = 1, 3, 28, 42
    tokens = _tiny_tokens(B, S, H, W, 128)
    images = torch.rand(B, S, 3, H, W)
    head = _tiny_dpt(output_dim=4, activation="inv_log")
    with torch.no_grad():
        p8, c8 = head(tokens, images, 5, frames_chunk_size=8)
        p1, c1 = head(tokens, images, 5, frames_chunk_size=1)
    assert p8.shape == (B, S, H, W, 3) and c8.shape == (B, S, H, W)
    assert (c8 > 1).all()
    assert_close_rel(p8, p1)
    assert_close_rel(c8, c1)
    # per-frame independence: frame 1 alone gives the same result
    with torch.no_grad():
        p_single, _ = head([t[:, 1:2] for t in tokens], images[:, 1:2], 5)
    assert_close_rel(p_single[:, 0], p8[:, 1])
    # frames are actually different (the test above could not pass trivially)
    assert not torch.allclose(p8[:, 0], p8[:, 1])


def test_dpt_depth_head_and_unused_layers_may_be_none():
    B, S, H, W = 2, 1, 14, 28
    tokens = _tiny_tokens(B, S, H, W, 128)
    tokens = [t if i in (4, 11, 17, 23) else None for i, t in enumerate(tokens)]
    head = _tiny_dpt(output_dim=2, activation="exp")
    with torch.no_grad():
        depth, conf = head(tokens, torch.rand(B, S, 3, H, W), 5)
    assert depth.shape == (B, S, H, W, 1) and (depth > 0).all()
    assert conf.shape == (B, S, H, W)


def test_dpt_feature_only_and_pos_embed_matters():
    B, S, H, W = 1, 2, 28, 56
    tokens = _tiny_tokens(B, S, H, W, 128)
    images = torch.rand(B, S, 3, H, W)
    head = _tiny_dpt(feature_only=True, features=8, down_ratio=2, pos_embed=False)
    with torch.no_grad():
        f = head(tokens, images, 5)
    assert f.shape == (B, S, 8, H // 2, W // 2)
    head_pe = _tiny_dpt(feature_only=True, features=8)
    head_pe.load_state_dict(head.state_dict())
    head_pe.pos_embed = True
    head_pe.down_ratio = 1
    head.down_ratio = 1
    with torch.no_grad():
        a, b = head(tokens, images, 5), head_pe(tokens, images, 5)
    assert a.shape == (B, S, 8, H, W)
    assert (a - b).abs().max() > 1e-3


def test_dpt_bad_input():
    head = _tiny_dpt()
    tokens = _tiny_tokens(1, 1, 28, 28, 128)
    with pytest.raises(ValueError):
        head(tokens, torch.rand(1, 1, 3, 28, 30), 5)
    with pytest.raises(ValueError):
        head(tokens[:10], torch.rand(1, 1, 3, 28, 28), 5)


# --------------------------------------------------------------------------------------- camera head
from selfi_ros.model.heads import CameraHead, anchor_query_mask  # noqa: E402


def test_camera_head_keys_match_checkpoint():
    with torch.device("meta"):
        head = CameraHead(dim_in=2048, trunk_depth=4, num_heads=16, mlp_ratio=4, init_values=0.01)
    _assert_matches_tsv(head, "camera_head")
    assert head.trunk[0].attn.head_dim == 128


def _tiny_camera_head(seed=0):
    torch.manual_seed(seed)
    head = CameraHead(dim_in=64, trunk_depth=2, num_heads=4, init_values=0.3).eval()
    with torch.no_grad():  # random non-trivial values everywhere
        for p in head.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return head


def _reference_camera_head(head, cam_tokens, iters, mask=None):
    """Independent functional version of the camera head (VGGT paper Sec. 3.3; facebookresearch/vggt
    ``vggt/heads/camera_head.py`` ``CameraHead.trunk_fn``) using explicit attention."""
    F = torch.nn.functional
    C = cam_tokens.shape[-1]
    t = F.layer_norm(cam_tokens, (C,), head.token_norm.weight, head.token_norm.bias, 1e-5)
    B, S, _ = t.shape
    raw, outs = None, []
    for _ in range(iters):
        p = head.empty_pose_tokens.expand(B, S, 9) if raw is None else raw
        e = p @ head.embed_pose.weight.T + head.embed_pose.bias
        m = (e * torch.sigmoid(e)) @ head.poseLN_modulation[1].weight.T + head.poseLN_modulation[1].bias
        shift, scale, gate = m[..., :C], m[..., C:2 * C], m[..., 2 * C:]
        z = gate * (F.layer_norm(t, (C,), eps=1e-6) * (1 + scale) + shift) + t
        for blk in head.trunk:
            nh = blk.attn.num_heads
            hd = C // nh
            y = F.layer_norm(z, (C,), blk.norm1.weight, blk.norm1.bias, 1e-5)
            qkv = y @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
            q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, S, nh, hd).transpose(1, 2) for i in range(3))
            logits = q @ k.transpose(-1, -2) / math.sqrt(hd)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            a = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, S, C)
            z = z + blk.ls1.gamma * (a @ blk.attn.proj.weight.T + blk.attn.proj.bias)
            y = F.layer_norm(z, (C,), blk.norm2.weight, blk.norm2.bias, 1e-5)
            h = F.gelu(y @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
            z = z + blk.ls2.gamma * (h @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias)
        y = F.layer_norm(z, (C,), head.trunk_norm.weight, head.trunk_norm.bias, 1e-5)
        d = F.gelu(y @ head.pose_branch.fc1.weight.T + head.pose_branch.fc1.bias)
        d = d @ head.pose_branch.fc2.weight.T + head.pose_branch.fc2.bias
        raw = d if raw is None else raw + d
        outs.append(torch.cat([raw[..., :7], raw[..., 7:].clamp(min=0)], dim=-1))
    return outs


def test_camera_head_forward_matches_reference_and_refines():
    head = _tiny_camera_head()
    B, S, P = 2, 3, 7
    tokens = [None] * 23 + [torch.randn(B, S, P, 64)]
    with torch.no_grad():
        out = head(tokens, num_iterations=4)
        ref = _reference_camera_head(head, tokens[-1][:, :, 0], 4)
    assert len(out) == 4 and all(o.shape == (B, S, 9) for o in out)
    for o, r in zip(out, ref):
        assert_close_rel(o, r, 1e-5)
    # each iteration changes the estimate; FoV is non-negative
    for a, b in zip(out[:-1], out[1:]):
        assert (a - b).abs().max() > 1e-4
    assert (out[-1][..., 7:] >= 0).all()
    # only the camera token (index 0) is read
    tokens2 = [None] * 23 + [tokens[-1].clone()]
    tokens2[-1][:, :, 1:] += 5.0
    with torch.no_grad():
        assert torch.equal(head(tokens2)[-1], out[-1])


def test_anchor_query_mask_layout():
    m = anchor_query_mask(2, 3)
    expected = torch.tensor([
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 0, 1, 0],
        [1, 1, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)


def test_camera_head_with_anchors():
    head = _tiny_camera_head(seed=3)
    B, S_a, S_q = 1, 3, 4
    anchors = torch.randn(B, S_a, 64)
    queries = torch.randn(B, S_q, 64)
    with torch.no_grad():
        q_all, a_all = head.forward_with_anchors(queries, anchors, 4, return_anchors=True)
        # anchors part == plain head over the anchors alone
        a_plain = head.forward_camera_tokens(anchors, 4)
        for x, y in zip(a_all, a_plain):
            assert_close_rel(x, y, 1e-5)
        # each query alone, and in a different batch composition, gives the same result
        for i in range(S_q):
            q_one = head.forward_with_anchors(queries[:, i:i + 1], anchors, 4)
            assert_close_rel(q_one[-1][:, 0], q_all[-1][:, i], 1e-5)
        q_pair = head.forward_with_anchors(queries[:, [3, 1]], anchors, 4)
        assert_close_rel(q_pair[-1], q_all[-1][:, [3, 1]], 1e-5)
        # equals the reference with the mask; and the mask matters (vs. unmasked attention)
        ref = _reference_camera_head(head, torch.cat([anchors, queries], 1), 4,
                                     mask=anchor_query_mask(S_a, S_q))
        assert_close_rel(q_all[-1], ref[-1][:, S_a:], 1e-5)
        unmasked = head.forward_camera_tokens(torch.cat([anchors, queries], 1), 4)
        assert (unmasked[-1][:, S_a:] - q_all[-1]).abs().max() > 1e-4
        # the query result depends on the anchors
        q_other = head.forward_with_anchors(queries, anchors[:, :2], 4)
        assert (q_other[-1] - q_all[-1]).abs().max() > 1e-4
    with pytest.raises(ValueError):
        head.forward_with_anchors(queries, torch.randn(2, S_a, 64))


# ---------------------------------------------------------------------------------------- track head
from selfi_ros.model.heads import TrackHead  # noqa: E402
from selfi_ros.model.heads.track_modules import (  # noqa: E402
    CorrPyramid, flow_embedding, sample_at_points, sincos_grid_embedding)


def test_track_head_keys_match_checkpoint():
    with torch.device("meta"):
        head = TrackHead(dim_in=2048)
    _assert_matches_tsv(head, "track_head")


def _tiny_track_head():
    torch.manual_seed(5)
    return TrackHead(dim_in=128, features=16, out_channels=(16, 32, 64, 64), corr_levels=2, corr_radius=1,
                     hidden_size=32, depth=2, num_heads=4, num_virtual_tracks=4).eval()


def test_track_head_shapes_and_query_frame_fixed():
    B, S, H, W, N = 1, 3, 28, 42, 5
    tokens = _tiny_tokens(B, S, H, W, 128)
    head = _tiny_track_head()
    q = torch.tensor([[[3.0, 4.0], [10.5, 20.0], [40.0, 2.0], [0.0, 0.0], [20.0, 27.0]]])
    with torch.no_grad():
        tracks, vis, conf = head(tokens, torch.rand(B, S, 3, H, W), 5, q)
        fmaps = head.feature_extractor(tokens, torch.rand(B, S, 3, H, W), 5)
    assert fmaps.shape == (B, S, 16, H // 2, W // 2)
    assert len(tracks) == 4 and all(t.shape == (B, S, N, 2) for t in tracks)
    assert_close_rel(tracks[-1][:, 0], q)  # frame 0 is reset to the query (in input pixels)
    assert not torch.allclose(tracks[-1][:, 1], q)
    assert vis.shape == (B, S, N) and conf.shape == (B, S, N)
    assert ((vis > 0) & (vis < 1)).all() and ((conf > 0) & (conf < 1)).all()
    with pytest.raises(ValueError):
        head(tokens, torch.rand(B, S, 3, H, W), 5, torch.zeros(B, N, 3))


def test_track_sampling_and_embeddings_against_formulas():
    fmap = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    pts = torch.tensor([[[1.0, 2.0], [0.5, 0.0], [3.0, 1.5]]])  # (x, y)
    got = sample_at_points(fmap, pts)
    # bilinear by hand (align-corners pixel convention): value(x, y) = c*12 + 4y + x, linear in x, y
    ref = torch.stack([torch.tensor([c * 12 + 4 * y + x for x, y in pts[0].tolist()]) for c in range(2)], -1)
    assert_close_rel(got[0], ref.to(got.dtype), 1e-5)
    e = sincos_grid_embedding(8, 2, 3)
    assert torch.allclose(e[0, :, 1, 2], torch.tensor([
        math.sin(2), math.sin(2 / 100), math.cos(2), math.cos(2 / 100),
        math.sin(1), math.sin(1 / 100), math.cos(1), math.cos(1 / 100)]), atol=1e-6)
    fe = flow_embedding(torch.tensor([[[0.01, -0.02]]]), 4)
    f = [0.0, 2 * 1000 / 4]
    assert torch.allclose(fe[0, 0], torch.tensor([
        math.sin(0.01 * f[0]), math.cos(0.01 * f[0]), math.sin(0.01 * f[1]), math.cos(0.01 * f[1]),
        math.sin(-0.02 * f[0]), math.cos(-0.02 * f[0]), math.sin(-0.02 * f[1]), math.cos(-0.02 * f[1])]),
        atol=1e-5)


def test_corr_pyramid_peaks_at_matching_feature():
    torch.manual_seed(0)
    fm = torch.randn(1, 1, 8, 6, 7)
    target = fm[0, 0, :, 4, 2].reshape(1, 1, 1, 8)  # feature at (x=2, y=4)
    pyr = CorrPyramid(fm, levels=2, radius=1)
    out = pyr.sample(target, torch.tensor([[[[2.0, 4.0]]]]))
    assert out.shape == (1, 1, 1, 2 * 9)
    lvl0 = out[0, 0, 0, :9]
    assert torch.isclose(lvl0[4], (target ** 2).sum() / math.sqrt(8))  # centre sample = <f, f>/sqrt(C)
    # window layout: index i*3 + j has x offset i-1 and y offset j-1
    corr = torch.einsum("c,chw->hw", target.reshape(8), fm[0, 0]) / math.sqrt(8)
    assert torch.isclose(lvl0[5], corr[5, 2]) and torch.isclose(lvl0[7], corr[4, 3])

"""SAIL-Recon scene memory: anchor/query passes vs an independent masked-attention reference."""
import math

import pytest
import torch
import torch.nn.functional as F

from selfi_ros.model.config import VGGTConfig
from selfi_ros.model.loading import build_model
from selfi_ros.model.scene_memory import anchor_pass, query_pass, run_anchor_pass
from selfi_ros_testing import assert_close_rel

torch.set_num_threads(1)
H, W = 28, 42


def _model(sail=True, seed=0):
    torch.manual_seed(seed)
    m = build_model(VGGTConfig.tiny(sail_reloc=sail)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.1)
            elif "token" in name or "pos_embed" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return m


def _imgs(n, seed):
    return torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(seed))


def _masked_block(blk, x, pos, mask):
    """Pre-norm block with explicit matmuls, qk-norm, RoPE and a boolean mask (True = may attend)."""
    a = blk.attn
    Hh, d = a.num_heads, a.head_dim
    y = F.layer_norm(x, (x.shape[-1],), blk.norm1.weight, blk.norm1.bias, 1e-5)
    qkv = y @ a.qkv.weight.T + a.qkv.bias
    q, k, v = [qkv[:, i * Hh * d:(i + 1) * Hh * d].reshape(-1, Hh, d).transpose(0, 1) for i in range(3)]
    q = F.layer_norm(q, (d,), a.q_norm.weight, a.q_norm.bias, 1e-5)
    k = F.layer_norm(k, (d,), a.k_norm.weight, a.k_norm.bias, 1e-5)

    def rot(t):
        outs = []
        for axis, ch in enumerate(t.split(d // 2, dim=-1)):
            n = d // 4
            ang = pos[:, axis, None].float() * 100.0 ** (-torch.arange(n).float() / n)
            u, w = ch[..., :n], ch[..., n:]
            outs += [u * ang.cos() - w * ang.sin(), w * ang.cos() + u * ang.sin()]
        return torch.cat(outs, -1)

    q, k = rot(q), rot(k)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    s = s.masked_fill(~mask, float("-inf"))
    o = (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(x.shape[0], -1) @ a.proj.weight.T + a.proj.bias
    x = x + blk.ls1.gamma * o
    y = F.layer_norm(x, (x.shape[-1],), blk.norm2.weight, blk.norm2.bias, 1e-5)
    return x + blk.ls2.gamma * (F.gelu(y @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias) @ blk.mlp.fc2.weight.T
                                + blk.mlp.fc2.bias)


def _reference(m, anchors, queries, kv_blocks, q_special):
    """One joint sequence [anchors ; queries] with an explicit scene-wide boolean mask."""
    agg = m.aggregator
    Sa, Sq = anchors.shape[0], queries.shape[0]
    with torch.no_grad():
        ta, pos = agg.embed(anchors[None], "vggt")
        tq, _ = agg.embed(queries[None], q_special)
        P = ta.shape[2]
        N = (Sa + Sq) * P
        frame = torch.arange(Sa + Sq).repeat_interleave(P)
        is_anchor = frame < Sa
        # anchors: anchors only; queries: all anchors + own frame
        mask = is_anchor[None, :] | (frame[:, None] == frame[None, :])
        mask[is_anchor] = is_anchor[None, :].expand(int(is_anchor.sum()), -1)
        gpos = pos.repeat(Sa + Sq, 1)
        x = torch.cat([ta[0], tq[0]])  # (Sa+Sq, P, C)
        outs = []
        for i in range(m.cfg.depth):
            f = torch.stack([_masked_block(agg.frame_blocks[i], x[s], pos, torch.ones(P, P, dtype=torch.bool))
                             for s in range(Sa + Sq)])
            flat = f.reshape(N, -1)
            g_anchor = _masked_block(agg.global_blocks[i], flat, gpos, mask)  # anchor rows: global blocks
            g_query = _masked_block(kv_blocks[i], flat, gpos, mask)           # query rows: K/V-source block
            g = torch.where(is_anchor[:, None], g_anchor, g_query).reshape(Sa + Sq, P, -1)
            outs.append(torch.cat([f, g], -1))
            x = g
        # camera head over [anchors ; queries] with its own mask
        cam = outs[-1][:, 0][None]
        S = Sa + Sq
        cmask = torch.zeros(S, S, dtype=torch.bool)
        cmask[:, :Sa] = True
        cmask[torch.arange(Sa, S), torch.arange(Sa, S)] = True
        enc = m.camera_head.forward_camera_tokens(cam, attn_mask=cmask)[-1][0, Sa:]
        toks = [o[Sa:][:, None] for o in outs]
        depth, dconf = m.depth_head(toks, images=queries[:, None], patch_start_idx=5)
    return enc, depth[:, 0, ..., 0], dconf[:, 0], outs


@pytest.mark.parametrize("sail", [True, False])
def test_query_pass_all_tokens_equals_masked_reference(sail):
    m = _model(sail)
    anchors, queries = _imgs(3, 1), _imgs(2, 2)
    mem, aout = run_anchor_pass(m, anchors, "all")
    assert mem.exact and mem.kv_source == ("global_reloc_blocks" if sail else "global_blocks")
    res = query_pass(m, mem, queries, batch_size=2)
    kv = m.aggregator.global_reloc_blocks if sail else m.aggregator.global_blocks
    enc, depth, dconf, outs = _reference(m, anchors, queries, kv, "reloc" if sail else "other")
    assert_close_rel(res.pose_enc, enc, 1e-4)
    assert_close_rel(res.depth, depth, 1e-4)
    assert_close_rel(res.depth_conf, dconf, 1e-4)
    # anchors: plain VGGT forward over the anchors alone
    with torch.no_grad():
        plain = m(anchors)
    assert_close_rel(aout.pose_enc, plain.pose_enc)
    assert_close_rel(aout.depth, plain.depth)
    assert_close_rel(mem.anchor_camera_tokens, outs[-1][:3, 0], 1e-4)


def test_query_results_independent_of_batching():
    m = _model(True)
    mem, _ = run_anchor_pass(m, _imgs(2, 3), "all")
    q = _imgs(5, 4)
    r1 = query_pass(m, mem, q, batch_size=1)
    r5 = query_pass(m, mem, q, batch_size=5)
    r2 = query_pass(m, mem, q[3:4], batch_size=1)
    assert_close_rel(r1.pose_enc, r5.pose_enc)
    assert_close_rel(r1.points, r5.points)
    assert_close_rel(r1.extrinsics[3:4], r2.extrinsics)
    assert r5.extrinsics.shape == (5, 3, 4) and r5.intrinsics.shape == (5, 3, 3)
    assert r5.depth.shape == (5, H, W) and r5.points.shape == (5, H, W, 3)


def test_token_subset_seeded_and_memory_accounting():
    m = _model(True)
    anchors = _imgs(3, 5)
    n_patch = (H // 14) * (W // 14)  # 6
    with torch.no_grad():
        mem_a, _, _ = anchor_pass(m, anchors, 2, torch.Generator().manual_seed(7))
        mem_b, _, _ = anchor_pass(m, anchors, 2, torch.Generator().manual_seed(7))
        mem_c, _, _ = anchor_pass(m, anchors, 2, torch.Generator().manual_seed(8))
        mem_all, _, _ = anchor_pass(m, anchors, "all")
        mem_big, _, _ = anchor_pass(m, anchors, 1000)
    assert mem_a.tokens_per_anchor == 7 and not mem_a.exact and mem_big.exact
    for i in range(m.cfg.depth):
        assert mem_a.keys[i].shape == (1, 4, 3 * 7, 16)
        assert torch.equal(mem_a.keys[i], mem_b.keys[i]) and torch.equal(mem_a.positions[i], mem_b.positions[i])
        torch.testing.assert_close(mem_big.keys[i], mem_all.keys[i])
        # specials first, at (0, 0)
        assert (mem_a.positions[i].reshape(3, 7, 2)[:, :5] == 0).all()
    assert any(not torch.equal(a, c) for a, c in zip(mem_a.positions, mem_c.positions))
    # bytes: per layer K and V (heads * tokens * head_dim fp32) + int64 positions; + camera tokens
    per_anchor_tokens = 5 + n_patch
    expect = m.cfg.depth * (2 * 4 * per_anchor_tokens * 16 * 4 + per_anchor_tokens * 2 * 8) + 2 * 64 * 4
    assert mem_all.nbytes_per_anchor == expect
    assert mem_a.nbytes < mem_all.nbytes
    # kept subsets still localize (finite outputs)
    r = query_pass(m, mem_a, _imgs(1, 6), with_points=False)
    assert torch.isfinite(r.extrinsics).all() and r.points is None


def test_errors():
    m = _model(False)
    with pytest.raises(ValueError, match="SAIL"):
        with torch.no_grad():
            anchor_pass(m, _imgs(2, 0), kv_source="global_reloc_blocks")
    mem, _ = run_anchor_pass(m, _imgs(2, 0))
    with pytest.raises(ValueError):
        query_pass(m, mem, torch.rand(1, 3, 30, 42))
    with pytest.raises(ValueError):
        query_pass(m, mem, _imgs(1, 0), batch_size=0)

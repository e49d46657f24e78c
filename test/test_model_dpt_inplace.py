"""The DPT head's memory-saving inference path (in-place ReLU / skip / UV adds, levels built right before
their fusion block) must give exactly the values of the plain formulas, and must not touch tensors the
caller still owns or break autograd (the Selfi adapter trains a feature-only DPT head)."""
import torch
import torch.nn.functional as F

from selfi_ros.model.heads.dpt_head import DPTHead, ResidualConvUnit, interpolate_bilinear
from selfi_ros_testing import assert_close_rel


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1.0, p[0].numel() ** 0.5))


def test_rcu_consume_matches_formula_and_respects_ownership():
    rcu = ResidualConvUnit(8)
    _randomize(rcu)
    x = torch.randn(2, 8, 5, 7)
    a = x.clamp(min=0)
    h = F.conv2d(a, rcu.conv1.weight, rcu.conv1.bias, padding=1).clamp(min=0)
    expect = F.conv2d(h, rcu.conv2.weight, rcu.conv2.bias, padding=1) + a
    with torch.no_grad():
        keep = x.clone()
        out = rcu(x)  # default: does not consume
        assert torch.equal(x, keep)
        assert_close_rel(out, expect)
        out2 = rcu(x.clone(), consume=True)
    assert torch.equal(out, out2)
    # with autograd on, consume is ignored (no in-place op on tensors saved for backward)
    xg = x.clone().requires_grad_(True)
    outg = rcu(xg, consume=True)
    outg.sum().backward()
    assert_close_rel(outg.detach(), expect)
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def _reference_dpt(head: DPTHead, tokens, H, W, psi):
    """Plain (allocating) evaluation in the original order: all four levels, then the fusion chain."""
    ph, pw = H // head.patch_size, W // head.patch_size
    feats = []
    for j, layer in enumerate(head.intermediate_layer_idx):
        x = tokens[layer][:, :, psi:]
        B, S, Np, C = x.shape
        x = head.norm(x.reshape(B * S, Np, C)).transpose(1, 2).reshape(B * S, C, ph, pw)
        x = head._add_uv(head.projects[j](x), W, H)
        feats.append(head.resize_layers[j](x))
    sc = head.scratch
    r = [getattr(sc, f"layer{j + 1}_rn")(f) for j, f in enumerate(feats)]
    out = sc.refinenet4(r[3], size=r[2].shape[-2:])
    out = sc.refinenet3(out, r[2], size=r[1].shape[-2:])
    out = sc.refinenet2(out, r[1], size=r[0].shape[-2:])
    out = sc.refinenet1(out, r[0])
    out = interpolate_bilinear(sc.output_conv1(out), (ph * head.patch_size, pw * head.patch_size))
    out = sc.output_conv2(head._add_uv(out, W, H))
    return out


def test_dpt_inference_path_equals_plain_evaluation_and_keeps_tokens():
    torch.manual_seed(0)
    head = DPTHead(dim_in=32, features=16, out_channels=(8, 16, 32, 32), output_dim=2, activation="exp",
                   intermediate_layer_idx=(0, 1, 2, 3)).eval()
    _randomize(head, seed=1)
    B, S, H, W, psi = 1, 3, 5 * 14, 7 * 14, 5  # odd patch grid: the stride-2 level is ceil(h/2)
    tokens = [torch.randn(B, S, psi + 35, 32) for _ in range(4)]
    copies = [t.clone() for t in tokens]
    images = torch.rand(B, S, 3, H, W)
    with torch.no_grad():
        ref = _reference_dpt(head, tokens, H, W, psi)
        depth, conf = head(tokens, images=images, patch_start_idx=psi, frames_chunk_size=None)
    assert all(torch.equal(a, b) for a, b in zip(tokens, copies))  # aggregator outputs untouched
    ref = ref.permute(0, 2, 3, 1).reshape(B, S, H, W, 2)
    assert torch.allclose(depth, torch.exp(ref[..., :1]), rtol=1e-6, atol=0)
    assert torch.allclose(conf, 1 + torch.exp(ref[..., 1]), rtol=1e-6, atol=0)
    # the autograd path (no in-place ops) gives the same values
    depth_g, _ = head(tokens, images=images, patch_start_idx=psi, frames_chunk_size=None)
    assert torch.equal(depth_g.detach(), depth)


def test_feature_only_head_still_trains():
    head = DPTHead(dim_in=16, features=8, out_channels=(4, 8, 16, 16), feature_only=True,
                   intermediate_layer_idx=(0, 1, 2, 3))
    tokens = [torch.randn(1, 2, 5 + 12, 16) for _ in range(4)]
    feats = head(tokens, images=torch.rand(1, 2, 3, 42, 56), patch_start_idx=5)
    assert feats.shape == (1, 2, 8, 42, 56)
    feats.square().mean().backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)

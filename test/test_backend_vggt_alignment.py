"""Selfi alignment in the VGGT backend: strict adapter loading, the learned-vs-PnP pose check (flag / reject,
counted) and window refinement (BA + affine depth correction). Tiny RANDOM-weight model: plumbing only."""
import numpy as np
import pytest
import torch

from selfi_ros.alignment.adapter import AdapterConfig, FeatureAdapter, save_adapter
from selfi_ros.alignment.localizer import pose_difference
from selfi_ros.backends import vggt as vggt_backend
from selfi_ros.backends import vggt_alignment as va
from selfi_ros.backends.vggt import VGGTBackend
from selfi_ros.engine.types import Frame
from selfi_ros.model.config import VGGTConfig
from selfi_ros_testing import assert_close_rel

torch.set_num_threads(1)

WIDTH = 56


@pytest.fixture(scope="module")
def adapter_path(tmp_path_factory):
    torch.manual_seed(3)
    a = FeatureAdapter(AdapterConfig.for_backbone(VGGTConfig.tiny(sail_reloc=True)))
    return save_adapter(a, tmp_path_factory.mktemp("ad") / "adapter.safetensors")


def _frame(i, seed):
    rng = np.random.default_rng(seed)
    return Frame(stamp_ns=1000 * i, image=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), index=i)


def _backend(adapter_path, **kw):
    return VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=WIDTH, adapter=str(adapter_path),
                       **kw)


def test_adapter_loaded_strictly(adapter_path, tmp_path):
    b = _backend(adapter_path)
    saved = FeatureAdapter(AdapterConfig.for_backbone(VGGTConfig.tiny(sail_reloc=True)))
    from safetensors.torch import load_file
    sd = load_file(str(adapter_path))
    for k, v in b.adapter.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert set(sd) == set(saved.state_dict())
    assert b.pose_check == "flag"  # "auto" with an adapter
    # wrong backbone width: refused
    bad = save_adapter(FeatureAdapter(AdapterConfig(dim_in=96, layers=(0, 1, 2, 3), features=8,
                                                    out_channels=(8, 8, 8, 8))), tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="width"):
        _backend(bad)
    with pytest.raises(ValueError, match="need an adapter"):
        VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=WIDTH, pose_check="reject")
    with pytest.raises(ValueError, match="pose_check"):
        _backend(adapter_path, pose_check="maybe")
    assert VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=WIDTH).pose_check == "off"


def _rotated(E, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    Ry = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.hstack([Ry @ E[:, :3], (Ry @ E[:, 3:])])


def _with_learned(monkeypatch, make):
    """Replace the learned query extrinsics (of the backend's query pass) by make(i)."""
    orig = vggt_backend.query_pass

    def patched(*a, **k):
        res = orig(*a, **k)
        res.extrinsics = torch.as_tensor(np.stack([make(i) for i in range(len(res.extrinsics))]))
        return res
    monkeypatch.setattr(vggt_backend, "query_pass", patched)


@pytest.mark.parametrize("mode", ["flag", "reject"])
def test_pose_check_flags_or_rejects_a_wrong_learned_pose(adapter_path, mode, monkeypatch):
    # one anchor; the query is the same image, so its aligned features match the anchor's exactly and PnP
    # on the anchor's point map gives a well-defined geometric pose G
    b = _backend(adapter_path, pose_check=mode, pose_check_anchors=1)
    anchor = _frame(0, 7)
    b.reconstruct_window(0, [anchor])
    q = Frame(stamp_ns=5000, image=anchor.image.copy(), index=5)
    first = b.localize([q])[0]
    G = first.geometric_extrinsics
    assert G is not None and G.shape == (3, 4)
    n0 = b.status()
    # learned pose = G: confirmed and kept
    _with_learned(monkeypatch, lambda i: G)
    r = b.localize([q])[0]
    assert r.check == "ok" and r.extrinsics is not None
    assert pose_difference(r.geometric_extrinsics, G)[0] < 1e-3
    assert b.status().pose_check_ok == n0.pose_check_ok + 1 and b.alignment_counts["pose_check_ok"] == n0.pose_check_ok + 1
    # learned pose 30 degrees off: flagged (kept) or rejected (a failure with reason "pose check")
    monkeypatch.undo()
    b2 = _backend(adapter_path, pose_check=mode, pose_check_anchors=1)
    b2.reconstruct_window(0, [anchor])
    _with_learned(monkeypatch, lambda i: _rotated(G, 30.0))
    r = b2.localize([q])[0]
    if mode == "flag":
        assert r.check == "flagged" and r.extrinsics is not None
        assert np.allclose(r.extrinsics, _rotated(G, 30.0))
        assert b2.status().pose_check_flagged == 1 and b2.status().pose_check_rejected == 0
    else:
        assert r.check == "rejected" and r.extrinsics is None and r.reason.startswith("pose check")
        assert r.confidence == 0.0
        assert b2.status().pose_check_rejected == 1 and b2.status().pose_check_flagged == 0
    assert pose_difference(r.geometric_extrinsics, G)[0] < 1e-3


def test_pose_check_off_and_stored_windows_not_checked(adapter_path):
    b = _backend(adapter_path, pose_check="off")
    b.reconstruct_window(0, [_frame(0, 1), _frame(1, 2)])
    r = b.localize([_frame(2, 3)])[0]
    assert r.check == "" and r.geometric_extrinsics is None and b.status().pose_checks == 0


def test_refine_window_through_backend_keeps_shapes(adapter_path):
    b = _backend(adapter_path, refine_window=True)
    base = VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=WIDTH)
    frames = [_frame(i, 10 + i) for i in range(3)]
    w = b.reconstruct_window(0, frames)
    w0 = base.reconstruct_window(0, frames)
    for name in ("extrinsics", "intrinsics", "depth", "points", "depth_conf", "points_conf"):
        assert getattr(w, name).shape == getattr(w0, name).shape, name
    r = b.last_refinement
    assert r is not None
    st = b.status()
    assert st.refine_applied + st.refine_rejected == 1 and st.pose_checks == 0
    if not r.applied:  # random features: the refinement may find nothing usable; then nothing changes
        assert r.reason
        assert_close_rel(w.extrinsics, w0.extrinsics, 1e-5)
    else:
        assert r.max_rot_change_deg <= b.config.refine_max_rot_deg


# ------------------------------------------------------------------------------- synthetic refinement
def _scene(drift=1.0):
    """Three cameras inside a box-shaped room (back wall z = 2.5, side walls x = +-1.2, floor y = 0.9,
    ceiling y = -0.9); features = random Fourier features of the world point seen at each pixel (so the
    matches are geometric truths up to pixel quantisation)."""
    H = W = 96
    K = np.array([[70.0, 0, 47.5], [0, 70.0, 47.5], [0, 0, 1]])
    Es = []
    for k, (tx, ang) in enumerate([(0.0, 0.0), (0.25, -4.0), (0.5, -8.0)]):
        E = _rotated(np.hstack([np.eye(3), np.zeros((3, 1))]), ang)
        C = np.array([tx, 0.05 * k, 0.1 * k])
        E[:, 3] = -E[:, :3] @ C
        Es.append(E)
    Es = np.stack(Es)
    g = torch.Generator().manual_seed(0)
    B = torch.randn(3, 24, generator=g).double() * 10.0
    ph = torch.rand(24, generator=g).double() * 6.28
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    rays_c = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T
    planes = [(np.array([0, 0, 1.0]), 2.5), (np.array([1.0, 0, 0]), 1.2), (np.array([-1.0, 0, 0]), 1.2),
              (np.array([0, 1.0, 0]), 0.9), (np.array([0, -1.0, 0]), 0.9)]
    depth, feats = [], []
    for E in Es:
        R, t = E[:, :3], E[:, 3]
        C = -R.T @ t
        d_w = rays_c @ R  # world ray directions (R^T r), camera z-component 1
        lam = np.full((H, W), np.inf)
        for n, c in planes:
            with np.errstate(divide="ignore", invalid="ignore"):
                li = (c - n @ C) / (d_w @ n)
            lam = np.where((li > 0) & (li < lam), li, lam)
        X = C + lam[..., None] * d_w
        depth.append(lam)  # the camera-frame ray has z = 1: lam is the z-depth
        f = torch.cos(torch.from_numpy(X) @ B + ph).permute(2, 0, 1)
        feats.append(torch.nn.functional.normalize(f.float(), dim=0))
    depth = np.stack(depth).astype(np.float32)
    depth[2] *= drift
    return torch.stack(feats), depth, np.stack([K] * 3), Es


def test_refine_window_recovers_perturbed_poses_and_corrects_depth_drift():
    feats, depth, K, E_gt = _scene(drift=1.1)
    E0 = E_gt.copy()
    E0[1] = _rotated(E_gt[1], 1.0)
    E0[2] = _rotated(E_gt[2], -0.8)
    valid = np.ones(depth.shape, bool)
    r = va.refine_window(feats, depth, valid, K, E0, downsample=1, stride=2, refine_focal=False)
    assert r.applied, r.reason
    assert r.extrinsics.shape == E0.shape and r.depth.shape == depth.shape and r.K.shape == K.shape
    np.testing.assert_allclose(r.extrinsics[0], E0[0], atol=1e-9)  # gauge: anchor 0 fixed
    for i in (1, 2):
        before = pose_difference(E0[i], E_gt[i])[0]
        after = pose_difference(r.extrinsics[i], E_gt[i])[0]
        assert after < 0.3 * before, (i, before, after)
    assert r.final_rms < r.initial_rms
    assert r.max_rot_change_deg <= 5.0
    # Selfi depth-drift correction: frame 2's depth (10% drift) is mapped back towards the truth
    _, d_true, _, _ = _scene(drift=1.0)
    err_before = np.median(np.abs(depth[2] - d_true[2]) / d_true[2])
    err_after = np.median(np.abs(r.depth[2] - d_true[2]) / d_true[2])
    # (the BA is limited by integer-pixel matches: measured 10% -> 5.9%; frames without drift move < 3%)
    assert err_after < 0.7 * err_before, (err_before, err_after)
    for i in (0, 1):
        assert np.median(np.abs(r.depth[i] - d_true[i]) / d_true[i]) < 0.03
    # bounds: a refinement asked to move less than it must is not applied, and nothing changes
    r2 = va.refine_window(feats, depth, valid, K, E0, downsample=1, stride=2, refine_focal=False,
                          max_rot_deg=0.01)
    assert not r2.applied and "out of bounds" in r2.reason
    np.testing.assert_array_equal(r2.extrinsics, E0)
    np.testing.assert_array_equal(r2.depth, depth)


def test_downsample_K_and_unproject_round_trip():
    K = np.array([[40.0, 0, 23.5], [0, 30.0, 11.5], [0, 0, 1]])
    Kd = va.downsample_K(K, 2)
    # the coarse pixel (i, j) is the mean of fine pixels 2i, 2i+1: a fine ray at x=2i+0.5 maps to coarse i
    x_f = np.array([10.5, 2.5, 1.0])
    ray = np.linalg.inv(K) @ x_f
    x_c = Kd @ ray
    assert np.allclose(x_c[:2] / x_c[2], [5.0, 1.0])
    E = _rotated(np.hstack([np.eye(3), np.array([[0.1], [0.2], [0.3]])]), 10.0)
    d = np.full((1, 4, 5), 2.0, np.float32)
    P = va.unproject_depth(d, K[None], E[None])[0]
    Xc = P.reshape(-1, 3) @ E[:, :3].T + E[:, 3]
    uv = (Xc @ K.T)[:, :2] / Xc[:, 2:]
    ys, xs = np.mgrid[0:4, 0:5]
    assert np.allclose(Xc[:, 2], 2.0, atol=1e-5)
    assert np.allclose(uv, np.stack([xs.ravel(), ys.ravel()], 1), atol=1e-4)

"""Window memories of the vggt backend (issue 10): export -> save -> load round trip, localization against an
old window after a new one, global descriptors, map signature, refusal of memories of another model and of
truncated / corrupt files, and the pose check's inliers against a stored window.

Tiny models with RANDOM weights: these tests check plumbing (bit-exact storage, identical passes, clear
errors), never the quality of poses or of place recognition."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from selfi_ros.alignment.adapter import AdapterConfig, FeatureAdapter, save_adapter
from selfi_ros.backends import vggt as vggt_backend
from selfi_ros.backends.vggt import VGGTBackend
from selfi_ros.backends.vggt_memory import ANCHORS_FILE, META_FILE, SCENE_FILE, VGGTWindowMemory, gem_descriptor
from selfi_ros.engine.backend import BackendError, WindowMemory
from selfi_ros.engine.types import Frame
from selfi_ros.model.config import VGGTConfig
from selfi_ros.model.loading import build_model, save_checkpoint
from selfi_ros.model.preprocessing import preprocess_images
from selfi_ros_testing import assert_close_rel

torch.set_num_threads(1)
WIDTH = 56


def _frames(n, h=48, w=64, seed=0, start=0):
    rng = np.random.default_rng(seed)
    return [Frame(stamp_ns=1000 * (start + i), image=rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                  index=start + i) for i in range(n)]


def _checkpoint(path, cfg, seed=0):
    torch.manual_seed(seed)
    m = build_model(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        m.camera_head.pose_branch.fc2.weight[7:9] = 0.0  # a plausible FoV (about 69 degrees)
        m.camera_head.pose_branch.fc2.bias[7:9] = 0.3
    return save_checkpoint(m, path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ck") / "tiny.safetensors", VGGTConfig.tiny(sail_reloc=True))


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    """Another model size: embed dim 32 instead of 64."""
    cfg = VGGTConfig.tiny(sail_reloc=True, embed_dim=32)
    return _checkpoint(tmp_path_factory.mktemp("ck32") / "tiny32.safetensors", cfg)


def _backend(ckpt, **kw):
    return VGGTBackend(checkpoint=str(ckpt), image_width=WIDTH, device="cpu", **kw)


def _same_scene(a, b):
    for x, y in zip(a.keys + a.values + a.positions + [a.anchor_camera_tokens],
                    b.keys + b.values + b.positions + [b.anchor_camera_tokens]):
        assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    assert (a.num_anchors, a.tokens_per_anchor, a.num_patch_tokens, tuple(a.image_size_hw), a.kv_source,
            a.query_special) == (b.num_anchors, b.tokens_per_anchor, b.num_patch_tokens, tuple(b.image_size_hw),
                                 b.kv_source, b.query_special)


def test_export_save_load_round_trip_is_bit_exact_and_localizes_identically(ckpt, tmp_path):
    b = _backend(ckpt, tokens_per_anchor=7)
    fr = _frames(6, seed=1)
    win = b.reconstruct_window(3, fr[:3])
    probe = fr[3:]
    current = b.localize(probe)
    mem = b.export_window()
    assert isinstance(mem, WindowMemory) and isinstance(mem, VGGTWindowMemory)
    assert mem.window_id == 3 and mem.backend == "vggt" and mem.num_anchors == 3
    # detached: a copy on the CPU sharing no storage with the backend's live memory
    live = {t.data_ptr() for t in b.memory.keys + b.memory.values}
    assert not live & {t.data_ptr() for t in mem.scene.keys + mem.scene.values}
    _same_scene(mem.scene, b.memory)
    assert mem.nbytes() > mem.scene.nbytes == b.memory.nbytes
    np.testing.assert_array_equal(mem.stamps_ns, win.stamps_ns)
    np.testing.assert_array_equal(mem.extrinsics, win.extrinsics)
    np.testing.assert_array_equal(mem.descriptors, win.descriptors)
    # points: the point map at pixels 4j + 2 of the network grid
    np.testing.assert_array_equal(mem.points, win.points[:, 2::4, 2::4])
    assert mem.points.shape == (3, 42 // 4 + (42 % 4 > 2), 14, 3)

    mem.save(str(tmp_path / "w3"))
    assert sorted(os.listdir(tmp_path / "w3")) == sorted([ANCHORS_FILE, META_FILE, SCENE_FILE])
    loaded = b.load_window(str(tmp_path / "w3"))
    _same_scene(loaded.scene, mem.scene)
    for name in ("descriptors", "stamps_ns", "frame_indices", "extrinsics", "intrinsics", "points", "points_conf"):
        a, c = getattr(mem, name), getattr(loaded, name)
        assert a.dtype == c.dtype, name
        np.testing.assert_array_equal(a, c, err_msg=name)
    assert loaded.window_id == 3 and loaded.image_size_hw == mem.image_size_hw
    assert dict(loaded.signature) == dict(b.map_signature()) and loaded.anchor_store is None
    # the same poses: localize (current) == localize_in(exported) == localize_in(loaded); current unchanged
    for res in (b.localize_in(mem, probe), b.localize_in(loaded, probe)):
        for r, c in zip(res, current):
            assert (r.stamp_ns, r.frame_index, r.inliers, r.check) == (c.stamp_ns, c.frame_index, 0, "")
            assert_close_rel(r.extrinsics, c.extrinsics, 1e-6)
            assert_close_rel(r.K, c.K, 1e-6)
    assert b.memory is not None and b._current.scene is b.memory
    # a new backend (another process, say) reads it and gives the same poses
    b2 = _backend(ckpt, tokens_per_anchor=7)
    for r, c in zip(b2.localize_in(b2.load_window(str(tmp_path / "w3")), probe), current):
        assert_close_rel(r.extrinsics, c.extrinsics, 1e-6)
    # the memory outlives the backend's state
    b.reset()
    with pytest.raises(BackendError, match="no window"):
        b.export_window()
    assert_close_rel(b.localize_in(mem, probe[:1])[0].extrinsics, current[0].extrinsics, 1e-6)


def test_localize_in_an_old_window_after_a_new_one(ckpt):
    b = _backend(ckpt)
    fr = _frames(8, seed=2)
    probe = fr[6:]
    b.reconstruct_window(0, fr[:3])
    when_current = b.localize(probe)
    old = b.export_window()
    b.reconstruct_window(1, fr[3:6])
    now = b.localize(probe)
    assert not np.allclose(now[0].extrinsics, when_current[0].extrinsics, atol=1e-4)  # another window
    again = b.localize_in(old, probe)
    for r, c in zip(again, when_current):
        assert_close_rel(r.extrinsics, c.extrinsics, 1e-6)
    for r, c in zip(b.localize(probe), now):  # the current window is left as it was
        assert_close_rel(r.extrinsics, c.extrinsics, 1e-6)
    assert b.export_window().window_id == 1
    assert b.localize_in(old, []) == []


def test_describe_unit_norm_deterministic_and_equal_to_the_anchor_pass(ckpt):
    b = _backend(ckpt, query_batch_size=2)
    fr = _frames(5, seed=3)
    d = b.describe(fr)
    C = b.model.cfg.embed_dim
    assert d.shape == (5, 2 * C) and d.dtype == np.float32
    assert_close_rel(np.linalg.norm(d, axis=1), np.ones(5), 1e-6)
    np.testing.assert_array_equal(b.describe(fr), d)  # deterministic
    twin = Frame(stamp_ns=99_000, image=fr[2].image.copy(), index=99)  # same image, another frame
    assert_close_rel(b.describe([twin])[0], d[2], 1e-5)
    sims = d @ d.T
    assert np.all(sims[~np.eye(5, dtype=bool)] < 1.0 - 1e-4)  # different images, different descriptors
    assert b.describe([]).shape == (0, 2 * C)
    # independent computation: GeM (p = 3) of the positive and negative parts of DINOv2's patch tokens
    imgs, _ = preprocess_images([f.image for f in fr], target=WIDTH)
    agg = b.model.aggregator
    with torch.no_grad():
        tok = agg.patch_embed((imgs - agg._mean[0]) / agg._std[0]).double()
    pos = tok.clamp(min=1e-6).pow(3).mean(1).pow(1 / 3)
    neg = (-tok).clamp(min=1e-6).pow(3).mean(1).pow(1 / 3)
    ref = torch.cat([pos, neg], 1)
    ref = (ref / ref.norm(dim=1, keepdim=True)).numpy()
    assert_close_rel(d, ref, 1e-5)
    assert_close_rel(gem_descriptor(tok.float()).numpy(), ref, 1e-5)
    # the anchors' descriptors come with the window (no second forward) and match describe
    win = b.reconstruct_window(0, fr[:3])
    assert win.descriptors.shape == (3, 2 * C) and win.descriptors.dtype == np.float32
    assert_close_rel(win.descriptors, d[:3], 1e-5)


def test_retrieval_plumbing_finds_the_window_holding_the_same_image(ckpt):
    """Top-1 retrieval over the anchors' descriptors of three exported windows: a new frame showing an anchor's
    image retrieves that anchor's window (random weights: only identical images are guaranteed to match)."""
    b = _backend(ckpt)
    fr = _frames(9, seed=10)
    mems = []
    for w in range(3):
        b.reconstruct_window(w, fr[3 * w:3 * w + 3])
        mems.append(b.export_window())
    db = np.concatenate([m.descriptors for m in mems])
    owner = np.repeat([m.window_id for m in mems], [m.num_anchors for m in mems])
    for src in (1, 4, 8):
        q = Frame(stamp_ns=50_000 + src, image=fr[src].image.copy(), index=50 + src)
        assert owner[int(np.argmax(db @ b.describe([q])[0]))] == src // 3


def test_map_signature(ckpt, tmp_path):
    b = _backend(ckpt)
    sig = dict(b.map_signature())
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in sig.items())
    assert sig["backend"] == "vggt" and sig["model_embed_dim"] == "64" and sig["model_depth"] == "4"
    assert sig["model_patch_size"] == "14" and sig["model_img_size"] == "518" and sig["adapter"] == "none"
    assert sig["checkpoint_sha256"] == hashlib.sha256(open(ckpt, "rb").read()).hexdigest()
    assert sig["image_width"] == str(WIDTH) and sig["descriptor"].startswith("dinov2")
    rnd = VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=WIDTH)
    assert rnd.map_signature()["checkpoint_sha256"] == "random" and rnd.supports_map is True


def test_memory_of_another_model_is_refused(ckpt, small_ckpt, tmp_path):
    small = _backend(small_ckpt)
    fr = _frames(4, seed=4)
    small.reconstruct_window(0, fr[:2])
    small.export_window().save(str(tmp_path / "small"))
    b = _backend(ckpt)
    b.reconstruct_window(0, fr[:2])
    with pytest.raises(BackendError, match=r"small.*another model.*model_embed_dim: '32' in the memory, '64' here"):
        b.load_window(str(tmp_path / "small"))
    with pytest.raises(BackendError, match="checkpoint_sha256"):
        VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=WIDTH).load_window(
            str(tmp_path / "small"))
    with pytest.raises(BackendError, match="another model"):
        b.localize_in(small.export_window(), fr[2:])
    # a signature edited to match does not get the wrong tensors in: the shapes are checked
    meta = json.loads((tmp_path / "small" / META_FILE).read_text())
    meta["signature"] = dict(b.map_signature())
    (tmp_path / "small" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(BackendError, match="inconsistent contents.*expected"):
        b.load_window(str(tmp_path / "small"))
    # another backend's memory, or something else
    with pytest.raises(BackendError, match="not a vggt window memory"):
        b.localize_in(object(), fr[2:])
    meta["backend"] = "colmap"
    (tmp_path / "small" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(BackendError, match="backend 'colmap'"):
        b.load_window(str(tmp_path / "small"))


def test_missing_truncated_and_corrupt_files_are_refused_naming_the_file(ckpt, tmp_path):
    b = _backend(ckpt)
    b.reconstruct_window(0, _frames(2, seed=5))
    good = tmp_path / "good"
    b.export_window().save(str(good))

    def variant(name, edit):
        d = tmp_path / name
        shutil.copytree(good, d)
        edit(d)
        return str(d)

    def truncate(fname, drop_size=False):
        def edit(d):
            data = (d / fname).read_bytes()
            (d / fname).write_bytes(data[:len(data) // 2])
            if drop_size:
                meta = json.loads((d / META_FILE).read_text())
                del meta["files"][fname]
                (d / META_FILE).write_text(json.dumps(meta))
        return edit

    with pytest.raises(BackendError, match="no such folder"):
        b.load_window(str(tmp_path / "nothing"))
    with pytest.raises(BackendError, match=f"{META_FILE} is missing"):
        b.load_window(variant("nometa", lambda d: os.unlink(d / META_FILE)))
    with pytest.raises(BackendError, match=f"{META_FILE} is unreadable"):
        b.load_window(variant("badmeta", lambda d: (d / META_FILE).write_text('{"format": ')))
    with pytest.raises(BackendError, match=f"{ANCHORS_FILE} is missing"):
        b.load_window(variant("noanchors", lambda d: os.unlink(d / ANCHORS_FILE)))
    for fname in (SCENE_FILE, ANCHORS_FILE):
        with pytest.raises(BackendError, match=f"{fname} has .* bytes.*truncated"):
            b.load_window(variant("trunc_" + fname, truncate(fname)))
        # without the recorded size the reader itself refuses the cut file
        with pytest.raises(BackendError, match=f"{fname} is unreadable"):
            b.load_window(variant("trunc2_" + fname, truncate(fname, drop_size=True)))
    with pytest.raises(BackendError, match=f"{META_FILE} lacks a field"):
        def no_id(d):
            meta = json.loads((d / META_FILE).read_text())
            del meta["window_id"]
            (d / META_FILE).write_text(json.dumps(meta))
        b.load_window(variant("noid", no_id))
    assert b.load_window(str(good)).window_id == 0


def test_store_spills_window_memories_in_the_export_format(ckpt, tmp_path):
    """memory_store_dir holds evicted windows as window memories: load_window reads them too."""
    b = _backend(ckpt, memory_store_dir=str(tmp_path / "store"), memory_store_windows=2)
    fr = _frames(7, seed=6)
    b.reconstruct_window(0, fr[:3])
    expected = b.localize(fr[6:])[0].extrinsics
    exported = b.export_window()
    b.reconstruct_window(1, fr[3:6])
    stored = b.load_window(b.store.path(0))
    _same_scene(stored.scene, exported.scene)
    np.testing.assert_array_equal(stored.descriptors, exported.descriptors)
    assert_close_rel(b.localize_in_window(fr[6:], 0)[0].extrinsics, expected, 1e-6)


def test_a_failed_spill_is_counted_and_leaves_nothing_behind(ckpt, tmp_path, monkeypatch):
    b = _backend(ckpt, memory_store_dir=str(tmp_path / "store"))
    fr = _frames(6, seed=9)
    b.reconstruct_window(0, fr[:3])

    def full_disk(self, directory):
        open(os.path.join(directory, SCENE_FILE), "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(VGGTWindowMemory, "save", full_disk)
    b.reconstruct_window(1, fr[3:])  # mapping goes on
    assert b.store_failures == 1 and os.listdir(tmp_path / "store") == [] and b.export_window().window_id == 1


@pytest.fixture(scope="module")
def adapter_paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("ad")
    out = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        a = FeatureAdapter(AdapterConfig.for_backbone(VGGTConfig.tiny(sail_reloc=True)))
        out.append(save_adapter(a, d / f"adapter{seed}.safetensors"))
    return out


def test_pose_check_inliers_against_an_exported_and_a_loaded_window(adapter_paths, tmp_path, monkeypatch):
    """The query is the anchor's own image: its aligned features match the anchor's, PnP on the anchor's
    point map gives a pose G; with the learned pose set to G the check is "ok" and ``inliers`` is PnP's."""
    def backend(path):
        return VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=WIDTH, adapter=str(path),
                           pose_check="flag", pose_check_anchors=1)

    b = backend(adapter_paths[0])
    anchor = _frames(1, seed=7)[0]
    q = Frame(stamp_ns=5000, image=anchor.image.copy(), index=5)
    b.reconstruct_window(0, [anchor])
    G = b.localize([q])[0].geometric_extrinsics
    orig = vggt_backend.query_pass

    def learned_is_G(*a, **k):
        res = orig(*a, **k)
        res.extrinsics = torch.as_tensor(np.stack([G] * len(res.extrinsics)))
        return res

    monkeypatch.setattr(vggt_backend, "query_pass", learned_is_G)
    ref = b.localize([q])[0]
    assert ref.check == "ok" and ref.inliers >= 12
    mem = b.export_window()
    assert mem.anchor_store is not None and mem.adapter_fingerprint and b.map_signature()["adapter"] == "present"
    b.reconstruct_window(1, _frames(2, seed=8, start=1))
    mem.save(str(tmp_path / "w0"))
    loaded = b.load_window(str(tmp_path / "w0"))
    assert torch.equal(loaded.anchor_store.features, mem.anchor_store.features)
    for m in (mem, loaded):
        r = b.localize_in(m, [q])[0]
        assert r.check == "ok" and r.inliers == ref.inliers
        assert_close_rel(r.geometric_extrinsics, ref.geometric_extrinsics, 1e-6)
    # another adapter's features are not comparable: no check, no inliers (the pose itself is unchanged)
    other = backend(adapter_paths[1])
    r = other.localize_in(other.load_window(str(tmp_path / "w0")), [q])[0]
    assert r.check == "" and r.inliers == 0 and r.extrinsics is not None
    # without an adapter the signature differs ("adapter": "present" vs "none")
    with pytest.raises(BackendError, match="adapter"):
        VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=WIDTH).load_window(
            str(tmp_path / "w0"))

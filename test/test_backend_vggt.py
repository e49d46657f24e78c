"""VGGTBackend: protocol, weights handling, consistency with the model functions, failure paths."""
import logging

import numpy as np
import pytest
import torch

from selfi_ros.engine.backend import Backend, BackendError
from selfi_ros.backends import make_backend
from selfi_ros.backends.vggt import VGGTBackend
from selfi_ros.engine.types import Frame
from selfi_ros.model.config import VGGTConfig
from selfi_ros.model.loading import WeightsNotFoundError, build_model, save_checkpoint
from selfi_ros.model.preprocessing import preprocess_images
from selfi_ros.model.scene_memory import query_pass, run_anchor_pass
from selfi_ros_testing import assert_close_rel

torch.set_num_threads(1)
WIDTH = 56


def _frames(n, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return [Frame(stamp_ns=1000 * i, image=rng.integers(0, 255, (h, w, 3), dtype=np.uint8), index=i)
            for i in range(n)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = build_model(VGGTConfig.tiny(sail_reloc=True)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        # a plausible FoV: 4 refinement steps of 0.3 rad each -> about 69 degrees
        m.camera_head.pose_branch.fc2.weight[7:9] = 0.0
        m.camera_head.pose_branch.fc2.bias[7:9] = 0.3
    return save_checkpoint(m, tmp_path_factory.mktemp("ck") / "tiny.safetensors")


def test_protocol_and_registry(ckpt):
    b = make_backend("vggt", checkpoint=str(ckpt), image_width=WIDTH, device="cpu")
    assert isinstance(b, Backend) and isinstance(b, VGGTBackend)
    assert b.random_weights is False and b.name == "vggt"


def test_no_weights_is_an_error():
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli"):
        VGGTBackend(checkpoint=None, model_config="tiny")


def test_random_weights_flagged_everywhere(caplog):
    with caplog.at_level(logging.WARNING):
        b = VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=WIDTH)
    assert b.random_weights is True
    assert any("RANDOM WEIGHTS - plumbing only" in r.getMessage() for r in caplog.records)
    fr = _frames(4)
    win = b.reconstruct_window(0, fr[:3])
    assert win.random_weights is True and win.backend == "vggt"
    res = b.localize(fr[3:])
    assert len(res) == 1 and res[0].extrinsics is not None and np.all(np.isfinite(res[0].K))


def test_localize_before_window_raises(ckpt):
    b = VGGTBackend(checkpoint=str(ckpt), image_width=WIDTH)
    with pytest.raises(BackendError):
        b.localize(_frames(1))
    with pytest.raises(BackendError):
        b.reconstruct_window(0, [])


def test_window_and_localization_match_model_functions(ckpt):
    b = VGGTBackend(checkpoint=str(ckpt), image_width=WIDTH, query_batch_size=2, localize_points=True)
    fr = _frames(6, seed=3)
    win = b.reconstruct_window(7, fr[:3])
    imgs, metas = preprocess_images([f.image for f in fr], target=WIDTH)
    mem, out = run_anchor_pass(b.model, imgs[:3])
    assert_close_rel(win.extrinsics, out.extrinsics()[0].double().numpy(), 1e-6)
    assert_close_rel(win.intrinsics, out.intrinsics()[0].double().numpy(), 1e-6)
    assert win.window_id == 7 and win.image_size_hw == (42, 56) and win.depth.shape == (3, 42, 56)
    assert win.points.shape == (3, 42, 56, 3) and win.colors.dtype == np.uint8
    assert list(win.stamps_ns) == [0, 1000, 2000] and list(win.frame_indices) == [0, 1, 2]
    np.testing.assert_array_equal(win.colors[1], np.round(imgs[1].permute(1, 2, 0).numpy() * 255).astype(np.uint8))

    res = b.localize(fr[3:])
    q = query_pass(b.model, mem, imgs[3:], batch_size=3)
    for i, r in enumerate(res):
        assert r.stamp_ns == fr[3 + i].stamp_ns and r.frame_index == 3 + i
        assert_close_rel(r.extrinsics, q.extrinsics[i].double().numpy())
        assert_close_rel(r.K, metas[3 + i].K_net_to_orig(q.intrinsics[i].double().numpy()))
        assert 0.0 <= r.confidence <= 1.0 and r.depth.shape == (42, 56) and r.points.shape == (42, 56, 3)
    # one at a time gives the same poses (queries are independent)
    single = [b.localize([f])[0] for f in fr[3:]]
    for a, s in zip(res, single):
        assert_close_rel(a.extrinsics, s.extrinsics)


def test_pad_mode_zero_confidence_in_padding(ckpt):
    b = VGGTBackend(checkpoint=str(ckpt), image_width=WIDTH, preprocess_mode="pad")
    win = b.reconstruct_window(0, _frames(2, h=64, w=32))  # portrait: padded left/right
    assert win.image_size_hw == (56, 56)
    assert np.all(win.depth_conf[:, :, :14] == 0) and np.all(win.points_conf[:, :, -14:] == 0)
    assert np.all(win.depth_conf[:, :, 14:42] >= 1.0)


def test_invalid_fov_fails_cleanly(ckpt):
    b = VGGTBackend(checkpoint=str(ckpt), image_width=WIDTH)
    fr = _frames(4)
    b.reconstruct_window(0, fr[:2])
    mem = b.memory
    with torch.no_grad():  # FoV -> relu(negative) = 0 -> infinite focal length
        b.model.camera_head.pose_branch.fc2.weight[7:9] = 0.0
        b.model.camera_head.pose_branch.fc2.bias[7:9] = -1.0
    res = b.localize(fr[2:])
    assert all(r.extrinsics is None and "intrinsics" in r.reason for r in res)
    with pytest.raises(BackendError):
        b.reconstruct_window(1, fr[:2])
    assert b.memory is mem  # the previous memory stays valid
    assert b.memory_bytes == mem.nbytes > 0
    b.reset()
    assert b.memory is None and b.memory_bytes == 0


def test_gpu_out_of_memory_becomes_a_backend_error_naming_frames_and_resolution(ckpt, monkeypatch):
    """The engine counts BackendError and keeps the previous window; the message says what to lower."""
    b = VGGTBackend(checkpoint=str(ckpt), image_width=WIDTH)
    frames = _frames(3)
    b.reconstruct_window(0, frames[:2])

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    monkeypatch.setattr(b.model.aggregator.patch_embed, "forward", oom)
    with pytest.raises(BackendError, match=r"anchor window of 2 frame\(s\) at \d+x\d+ px.*window_size"):
        b.reconstruct_window(1, frames[1:])
    with pytest.raises(BackendError, match=r"localizing \d+ frame\(s\) at \d+x\d+ px.*image_width"):
        b.localize(frames[2:])
    assert b.memory is not None  # the previous window's memory stays valid


def test_options_come_from_the_config(ckpt, monkeypatch):
    from selfi_ros.backends.config import BackendConfigError, VGGTBackendConfig

    cfg = VGGTBackendConfig(checkpoint=str(ckpt), image_width=WIDTH, query_batch_size=3)
    b = VGGTBackend(cfg, image_width="42", tokens_per_anchor=0)  # options override and are cast
    assert b.config.image_width == 42 and b.config.query_batch_size == 3 and b.tokens_per_anchor == "all"
    assert b.memory_device is None and b.adapter is None and b.pose_check == "off" and b.online is None
    with pytest.raises(BackendConfigError, match="unknown option"):
        VGGTBackend(cfg, window_size=4)
    with pytest.raises(ValueError, match="image_width"):
        VGGTBackend(cfg, image_width=50)
    # device="cpu" is the CPU even when CUDA is present; "auto" would pick CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert VGGTBackend(cfg, device="cpu").device == torch.device("cpu")


def test_status_is_typed(ckpt):
    from selfi_ros.engine.status import BackendStatus

    b = VGGTBackend(checkpoint=str(ckpt), image_width=WIDTH)
    assert b.status() == BackendStatus()
    b.reconstruct_window(0, _frames(2))
    st = b.status()
    assert isinstance(st, BackendStatus) and st.memory_bytes == b.memory.nbytes > 0 and st.pose_checks == 0
    assert b.alignment_counts["pose_checks"] == 0
    with pytest.raises(TypeError):
        b.alignment_counts["pose_checks"] = 1  # read-only view
    b.set_idle(True)  # no online training: nothing happens
    b.close()


def test_each_frame_is_preprocessed_once(ckpt, monkeypatch):
    """A keyframe localized first, then an anchor of two windows, is preprocessed once; batches from the
    cache equal preprocess_images bit for bit (mixed sizes, pad mode)."""
    from selfi_ros.backends import vggt_preprocess

    calls = []
    orig = vggt_preprocess.preprocess_image

    def counting(image, **kw):
        calls.append(image.shape)
        return orig(image, **kw)

    monkeypatch.setattr(vggt_preprocess, "preprocess_image", counting)
    b = VGGTBackend(checkpoint=str(ckpt), image_width=WIDTH, query_batch_size=2)
    fr = _frames(6, seed=4)
    b.reconstruct_window(0, fr[0:3])
    b.localize(fr[3:5])
    b.reconstruct_window(1, fr[2:5])  # frame 2 shared by both windows, 3 and 4 localized before
    b.localize(fr[5:6])
    b.reconstruct_window(2, fr[4:6])
    assert len(calls) == 6 and b.preprocess_cache.misses == 6 and b.preprocess_cache.hits == 5
    assert len(b.preprocess_cache) <= b.preprocess_cache.capacity == max(16 + 2, 2 * 3 + 2)
    b.reset()
    assert len(b.preprocess_cache) == 0

    rng = np.random.default_rng(1)
    mixed = [Frame(stamp_ns=i, index=i, image=rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
             for i, (h, w) in enumerate([(48, 64), (64, 32), (40, 70)])]
    cache = vggt_preprocess.PreprocessCache(capacity=2)
    for mode in ("crop", "pad"):
        ref, ref_metas = preprocess_images([f.image for f in mixed], mode=mode, target=WIDTH)
        for _ in range(2):  # second round: partly from the cache (capacity 2 < 3 frames)
            got, metas = cache.get(mixed, mode, WIDTH)
            assert torch.equal(got, ref) and metas == ref_metas
    assert len(cache) == 2

"""Official VGGT preprocessing: sizes for crop/pad, offsets/metadata, intrinsics mapping, errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from selfi_ros.model.preprocessing import preprocess_images, target_size


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("hw,mode,expect", [
    ((1080, 1920), "crop", (294, 518)),
    ((1920, 1080), "crop", (518, 518)),   # portrait: centre crop
    ((1080, 1920), "pad", (518, 518)),
    ((1920, 1080), "pad", (518, 518)),
    ((480, 640), "crop", (392, 518)),
])
def test_sizes(hw, mode, expect):
    t, metas = preprocess_images([_img(*hw)], mode=mode)
    assert tuple(t.shape) == (1, 3) + expect
    assert t.dtype == torch.float32 and 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    assert metas[0].net_hw == expect and metas[0].orig_hw == hw


def test_target_size_rounding_and_portrait_pad():
    assert target_size(1920, 1080, "crop") == (518, 294)
    assert target_size(1080, 1920, "crop") == (518, 924)
    assert target_size(1080, 1920, "pad") == (294, 518)


def test_portrait_crop_offset_and_pad_offset():
    _, m = preprocess_images([_img(1920, 1080)], mode="crop")
    assert m[0].offset_xy == (0.0, -203.0)  # (924 - 518) // 2 rows removed at the top
    t, m = preprocess_images([_img(1920, 1080)], mode="pad")
    assert m[0].offset_xy == (112.0, 0.0)   # (518 - 294) // 2 white columns on the left
    assert torch.all(t[0, :, :, :112] == 1.0) and torch.all(t[0, :, :, 112 + 294:] == 1.0)


def test_matches_pillow_bicubic():
    img = _img(100, 150, seed=3)
    t, _ = preprocess_images([img], mode="crop", target=112)
    nw, nh = target_size(150, 100, "crop", 112)
    ref = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    np.testing.assert_array_equal(t[0].permute(1, 2, 0).numpy(), ref)


def test_marker_position_follows_metadata():
    """A dark blob at a known original pixel lands where ImageMeta says, in crop and pad modes."""
    for mode, (h0, w0) in [("crop", (700, 420)), ("pad", (700, 420)), ("crop", (300, 640))]:
        img = np.full((h0, w0, 3), 255, np.uint8)
        u0, v0 = 0.3 * w0, 0.55 * h0
        yy, xx = np.mgrid[0:h0, 0:w0]
        img[(xx + 0.5 - u0) ** 2 + (yy + 0.5 - v0) ** 2 < 15 ** 2] = 0
        t, m = preprocess_images([img], mode=mode, target=224)
        dark = 1.0 - t[0].mean(0).numpy()
        ys, xs = np.mgrid[0:dark.shape[0], 0:dark.shape[1]]
        u_net = (dark * xs).sum() / dark.sum()  # pixel-index (centre) coordinates
        v_net = (dark * ys).sum() / dark.sum()
        back = m[0].net_to_orig_xy([u_net, v_net])
        np.testing.assert_allclose(back, [u0 - 0.5, v0 - 0.5], atol=1.0)


def test_intrinsics_round_trip_and_centre():
    _, m = preprocess_images([_img(1080, 1920)], mode="crop")
    K0 = np.array([[1000.0, 0, 960], [0, 1000.0, 540], [0, 0, 1]])
    Kn = m[0].K_orig_to_net(K0)
    np.testing.assert_allclose(Kn[0, 2], 960.5 * 518 / 1920 - 0.5, atol=1e-9)
    np.testing.assert_allclose(Kn[1, 2], 540.5 * 294 / 1080 - 0.5, atol=1e-9)
    np.testing.assert_allclose(Kn[0, 0], 1000 * 518 / 1920, atol=1e-9)
    np.testing.assert_allclose(m[0].K_net_to_orig(Kn), K0, atol=1e-9)


def test_mixed_sizes_padded_white_and_stacked():
    t, m = preprocess_images([_img(1080, 1920), _img(480, 640)], mode="crop")
    assert tuple(t.shape) == (2, 3, 392, 518)
    assert m[0].offset_xy == (0.0, 49.0) and m[0].net_hw == (392, 518)
    assert torch.all(t[0, :, :49] == 1.0)


def test_rgba_is_composited_on_white():
    rgba = np.zeros((28, 28, 4), np.uint8)  # fully transparent black
    t, _ = preprocess_images([rgba], target=28)
    assert torch.all(t == 1.0)


def test_errors():
    with pytest.raises(ValueError):
        preprocess_images([])
    with pytest.raises(ValueError):
        preprocess_images([_img(10, 10)], mode="stretch")
    with pytest.raises(ValueError):
        preprocess_images([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(ValueError):
        preprocess_images([_img(10, 10)], target=500)
    with pytest.raises(TypeError):
        preprocess_images([42])


def test_consistent_with_geometry_scale_intrinsics():
    from selfi_ros.geometry.camera import scale_intrinsics

    _, m = preprocess_images([_img(480, 640)], mode="crop")  # no crop: 392 x 518
    K0 = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    np.testing.assert_allclose(m[0].K_orig_to_net(K0), scale_intrinsics(K0, 518 / 640, 392 / 480), atol=1e-9)

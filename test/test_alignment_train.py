"""Adapter shape/persistence and the train-adapter CLI on a tiny random backbone (plumbing)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from selfi_ros.alignment.adapter import (AdapterConfig, FeatureAdapter, load_adapter, raw_backbone_features,
                                         read_adapter_metadata, save_adapter)
from selfi_ros.model.config import VGGTConfig
from selfi_ros_testing import assert_close_rel


def _tiny_tokens(S=2, H=28, W=42, seed=0):
    from selfi_ros.model.loading import load_model
    cfg = VGGTConfig.tiny()
    m = load_model(None, config=cfg, random_weights=True, seed=seed)
    img = torch.rand(1, S, 3, H, W, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        tok, psi = m.aggregator(img)
    return cfg, tok, psi, img


def test_adapter_outputs_normalised_features_at_input_resolution(tmp_path):
    cfg, tok, psi, img = _tiny_tokens()
    ad = FeatureAdapter(AdapterConfig.for_backbone(cfg))
    f = ad(tok, img, psi)
    assert f.shape == (1, 2, 24, 28, 42)
    assert_close_rel(f.norm(dim=2), torch.ones(1, 2, 28, 42), 1e-5)
    # gradients reach the adapter only
    f.sum().backward()
    assert all(p.grad is not None for p in ad.parameters())
    raw = raw_backbone_features(tok, img, psi, layer=-1)
    assert raw.shape == (1, 2, 2 * cfg.embed_dim, 28, 42)
    # the full-size default adapter's parameter count (reported in the benchmark notes)
    assert FeatureAdapter(AdapterConfig()).num_parameters() == 7362200


def test_adapter_save_load_strict_roundtrip(tmp_path):
    cfg, tok, psi, img = _tiny_tokens()
    ad = FeatureAdapter(AdapterConfig.for_backbone(cfg, image_skip=True))
    p = save_adapter(ad, tmp_path / "a.safetensors", {"step": 7})
    back = load_adapter(p)
    assert back.cfg == ad.cfg and read_adapter_metadata(p)["step"] == "7"
    torch.testing.assert_close(back(tok, img, psi), ad.eval()(tok, img, psi))
    with pytest.raises(ValueError, match="backbone has"):
        load_adapter(p, expect_dim_in=2048)
    # a file with an extra tensor is rejected
    from safetensors.torch import load_file, save_file
    sd = load_file(str(p))
    sd["extra.weight"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "b.safetensors"), metadata=read_adapter_metadata(p))
    with pytest.raises(ValueError, match="unexpected"):
        load_adapter(tmp_path / "b.safetensors")


def _make_folder(path, n=8, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(60, 90, 3), dtype=np.uint8)
    path.mkdir()
    for i in range(n):
        Image.fromarray(np.ascontiguousarray(base[5:53, i:i + 64])).save(path / f"{i:03d}.png")


@pytest.fixture
def sane_geometry(monkeypatch):
    """A random backbone predicts noise geometry (no valid pseudo-GT, so no update). For plumbing tests of
    the self-supervised path, replace the *model's* geometry by a plausible one: constant depth, identity
    rotation and a small sideways translation per frame, fixed K."""
    from selfi_ros.alignment import train as T

    def fake(self, clip, geo):
        S, _, H, W = clip.images.shape
        E = torch.zeros(1, S, 3, 4)
        E[..., :3] = torch.eye(3)
        E[0, :, 0, 3] = -0.02 * torch.arange(S)
        K = torch.tensor([[50.0, 0, (W - 1) / 2], [0, 50.0, (H - 1) / 2], [0, 0, 1]]).expand(1, S, 3, 3)
        assert geo is not None and geo["depth"].shape == (1, S, H, W)  # the model's geometry was computed
        return dict(depth=torch.full((1, S, H, W), 2.0), conf=geo["conf"], extrinsics=E, intrinsics=K)

    monkeypatch.setattr(T.AdapterTrainer, "clip_geometry", fake)


def test_train_adapter_cli_runs_resumes_and_saves(tmp_path, capsys, sane_geometry):
    from selfi_ros.cli import main
    _make_folder(tmp_path / "imgs")
    out = tmp_path / "ad.safetensors"
    common = ["train-adapter", "--images", str(tmp_path / "imgs"), "--allow-random-weights", "--model-config",
              "tiny", "--out", str(out), "--clip-len", "3", "--image-size", "56", "--num-queries", "32",
              "--eval-every", "2", "--log-every", "1", "--save-every", "2", "--no-progress", "--seed", "3"]
    assert main(common + ["--steps", "3"]) == 0
    assert "RANDOM WEIGHTS" in capsys.readouterr().err
    st = torch.load(str(out) + ".state.pt", weights_only=False)
    assert st["step"] == 3
    ad3 = load_adapter(out)
    assert read_adapter_metadata(out)["random_backbone"] == "true"
    assert main(common + ["--steps", "5", "--resume"]) == 0
    st = torch.load(str(out) + ".state.pt", weights_only=False)
    assert st["step"] == 5
    recs = [json.loads(l) for l in open(str(out) + ".log.jsonl")]
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 and r["valid_frac"] > 0.5 for r in recs)
    assert "val_pck@3" in recs[1] and "pck@1" in recs[0]
    ad5 = load_adapter(out)
    # the resumed run kept training: weights moved
    assert any(not torch.equal(a, b) for a, b in zip(ad3.state_dict().values(), ad5.state_dict().values()))


def test_resume_is_exact(tmp_path, sane_geometry):
    """3 steps + resume for 2 more gives the same weights as 5 straight steps (RNG and optimiser restored)."""
    from selfi_ros.cli import main
    _make_folder(tmp_path / "imgs")
    base = ["train-adapter", "--images", str(tmp_path / "imgs"), "--allow-random-weights", "--model-config",
            "tiny", "--clip-len", "3", "--image-size", "56", "--num-queries", "16", "--eval-every", "100",
            "--save-every", "100", "--no-progress", "--seed", "1"]
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(base + ["--out", str(a), "--steps", "5"]) == 0
    assert main(base + ["--out", str(b), "--steps", "3"]) == 0
    assert main(base + ["--out", str(b), "--steps", "5", "--resume"]) == 0
    sa, sb = load_adapter(a).state_dict(), load_adapter(b).state_dict()
    for k in sa:
        assert_close_rel(sa[k], sb[k], 1e-5)


def test_train_adapter_requires_checkpoint_or_explicit_random(tmp_path):
    from selfi_ros.cli import main
    _make_folder(tmp_path / "imgs", n=3)
    with pytest.raises(SystemExit):
        main(["train-adapter", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "x.safetensors")])


def test_random_backbone_pseudo_gt_is_counted_not_silent(tmp_path):
    """Without the patch a random backbone yields (almost always) no valid correspondence: counted."""
    from selfi_ros.cli import main
    _make_folder(tmp_path / "imgs", n=4)
    out = tmp_path / "r.safetensors"
    assert main(["train-adapter", "--images", str(tmp_path / "imgs"), "--allow-random-weights", "--model-config",
                 "tiny", "--clip-len", "3", "--image-size", "56", "--num-queries", "16", "--steps", "2",
                 "--log-every", "1", "--no-progress", "--out", str(out)]) == 0
    recs = [json.loads(l) for l in open(str(out) + ".log.jsonl")]
    assert recs[-1]["empty_steps"] == sum(r["valid_frac"] == 0 for r in recs)


def test_load_bag_frames_reads_image_topic(tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from selfi_ros.apps.train_adapter import load_bag_frames
    from selfi_ros.ros.bag import BagWriter
    from selfi_ros.ros.conversions import rgb8_to_compressed, rgb8_to_image
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(3)]  # >= min_image_size_px
    path = str(tmp_path / "b.mcap")
    with BagWriter(path) as bag:
        for i, f in enumerate(frames):
            bag.write("/cam/image_raw", rgb8_to_image(f, 1000 * i, "cam", encoding="bgr8"), log_time_ns=1000 * i)
            bag.write("/cam/image_raw/compressed", rgb8_to_compressed(f, 1000 * i, "cam", fmt="png"), log_time_ns=1000 * i)
    got = load_bag_frames(path, topic="/cam/image_raw")
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, frames))
    got_c = load_bag_frames(path, topic="/cam/image_raw/compressed", max_frames=2)
    assert len(got_c) == 2 and np.array_equal(got_c[1], frames[1])
    with pytest.raises(ValueError, match="not an image topic"):
        load_bag_frames(path, topic="/nope")

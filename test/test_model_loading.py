"""Checkpoint loading: exact key lists at full size (meta device), round trips, strict errors, hub cache."""
import logging
from pathlib import Path

import pytest
import torch

from selfi_ros.model.config import VGGTConfig
from selfi_ros.model.loading import (CheckpointMismatchError, WeightsNotFoundError, build_model, load_model,
                                     read_state_dict, save_checkpoint)

torch.set_num_threads(1)
#: tensor names and shapes of the published checkpoints facebook/VGGT-1B and HKUST-SAIL/SAIL-Recon
SPEC = Path(__file__).parent / "data"


def _tsv(name):
    rows = [line.split("\t") for line in (SPEC / name).read_text().splitlines() if line.strip()]
    return {k: v for k, v in rows}


def _names_shapes(model):
    return {k: str(tuple(v.shape)) for k, v in model.state_dict().items()}


def test_full_vggt_1b_state_dict_matches_checkpoint_listing():
    pytest.importorskip("selfi_ros.model.heads.track_head", reason="track head not written yet")
    m = build_model(VGGTConfig(), meta=True)
    ref = _tsv("vggt_1b_state_dict.tsv")
    got = _names_shapes(m)
    assert len(ref) == 1797
    assert sorted(set(ref) - set(got)) == [] and sorted(set(got) - set(ref)) == []
    assert {k: v for k, v in got.items() if ref[k] != v} == {}
    assert sum(p.numel() for p in m.state_dict().values()) == 1_256_537_516
    assert set(m.state_dict()) == {n for n, _ in m.named_parameters()}  # no persistent buffers


def test_full_sail_recon_state_dict_matches_checkpoint_listing():
    m = build_model(VGGTConfig.sail(), meta=True)
    ref = _tsv("sail_recon_state_dict.tsv")
    got = _names_shapes(m)
    assert len(ref) == 1837 and got == ref


def _tiny(sail=False, seed=0):
    torch.manual_seed(seed)
    m = build_model(VGGTConfig.tiny(sail_reloc=sail)).eval()
    with torch.no_grad():  # make every tensor matter
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip_identical_outputs(tmp_path, suffix):
    m = _tiny()
    path = save_checkpoint(m, tmp_path / f"tiny{suffix}")
    m2 = load_model(path)
    assert m2.random_weights is False and m2.cfg == m.cfg
    x = torch.rand(2, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = m(x), m2(x)
    for name in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_sail_keys_autodetected_without_embedded_config(tmp_path):
    m = _tiny(sail=True)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    torch.save(sd, tmp_path / "bare.pt")  # no config inside: shape given, SAIL layout detected from keys
    m2 = load_model(tmp_path / "bare.pt", config=VGGTConfig.tiny())
    assert m2.cfg.sail_reloc and hasattr(m2.aggregator, "global_reloc_blocks")
    torch.testing.assert_close(m2.aggregator.camera_token_reloc, m.aggregator.camera_token_reloc)


def test_corrupted_checkpoint_names_the_problem(tmp_path):
    m = _tiny()
    sd = dict(m.state_dict())
    sd.pop("aggregator.frame_blocks.1.attn.qkv.weight")
    sd["aggregator.bogus.weight"] = torch.zeros(3)
    sd["depth_head.norm.weight"] = torch.zeros(7)
    torch.save({"model": sd, "config": None}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as ei:
        load_model(tmp_path / "bad.pt", config=m.cfg)
    msg = str(ei.value)
    assert "aggregator.frame_blocks.1.attn.qkv.weight" in msg
    assert "aggregator.bogus.weight" in msg
    assert "depth_head.norm.weight" in msg and "(7,)" in msg
    assert ei.value.missing == ["aggregator.frame_blocks.1.attn.qkv.weight"]


def test_no_weights_gives_instructions(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download"):
        load_model(None)
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download"):
        load_model(tmp_path / "nothing.pt")


def test_random_weights_warns_and_marks(caplog):
    with caplog.at_level(logging.WARNING):
        m = load_model(None, config=VGGTConfig.tiny(), random_weights=True)
    assert m.random_weights is True
    assert any("RANDOM WEIGHTS - plumbing only" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    with torch.no_grad():
        assert m(torch.rand(1, 3, 14, 14)).random_weights is True


def test_repo_id_offline_from_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hfc

    m = _tiny(sail=True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--HKUST-SAIL--SAIL-Recon"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    save_checkpoint(m, snap / "sailrecon.pt")
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    m2 = load_model("HKUST-SAIL/SAIL-Recon")
    assert m2.cfg.sail_reloc
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    # a repo that is not cached: clear error mentioning offline mode
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE"):
        load_model("facebook/VGGT-1B")


def test_read_state_dict_strips_module_prefix(tmp_path):
    torch.save({"state_dict": {"module.a": torch.ones(2)}}, tmp_path / "x.pt")
    sd, cfg = read_state_dict(tmp_path / "x.pt")
    assert list(sd) == ["a"] and cfg is None


@pytest.mark.parametrize("tsv,sail,track", [("vggt_1b_state_dict.tsv", False, True),
                                            ("sail_recon_state_dict.tsv", True, False)])
def test_official_layouts_detected_and_strictly_accepted(tsv, sail, track):
    """A state_dict with exactly the official names/shapes (meta tensors, no data) is detected as the
    right layout and passes the strict check against the model built for it."""
    from selfi_ros.model.loading import check_state_dict, detect_config

    if track:
        pytest.importorskip("selfi_ros.model.heads.track_head")
    sd = {k: torch.empty(eval(v), device="meta") for k, v in _tsv(tsv).items()}
    cfg = detect_config(sd)
    assert cfg.sail_reloc is sail and cfg.enable_track is track and cfg.embed_dim == 1024
    check_state_dict(build_model(cfg, meta=True), sd, tsv)
    bad = dict(sd)
    bad["aggregator.camera_token"] = torch.empty(1, 2, 1, 1023, device="meta")
    with pytest.raises(CheckpointMismatchError, match="aggregator.camera_token"):
        check_state_dict(build_model(cfg, meta=True), bad, tsv)


# --- unusable files: one exception type (CheckpointError), one line naming the file -------------------
def _bad_files(tmp_path):
    """name -> path of a bad checkpoint made from a real one (tiny model) or from bytes."""
    import random

    m = _tiny()
    good_st = save_checkpoint(m, tmp_path / "good.safetensors").read_bytes()
    good_pt = save_checkpoint(m, tmp_path / "good.pt").read_bytes()
    rnd = random.Random(9).randbytes(4096)  # fixed: the same garbage every run
    files = {
        "truncated.safetensors": good_st[: len(good_st) // 2],
        "header_only.safetensors": good_st[:20],
        "random.safetensors": rnd,
        "empty.safetensors": b"",
        "truncated.pt": good_pt[: len(good_pt) // 2],
        "random.pt": rnd,
        "empty.pt": b"",
    }
    out = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = tmp_path / name
    (tmp_path / "no_weights_dir").mkdir()
    (tmp_path / "no_weights_dir" / "readme.txt").write_text("not weights")
    out["no_weights_dir"] = tmp_path / "no_weights_dir"
    out["missing.pt"] = tmp_path / "missing.pt"
    out["missing_dir/model"] = tmp_path / "missing_dir" / "model"
    return out


BAD_KINDS = ["truncated.safetensors", "header_only.safetensors", "random.safetensors", "empty.safetensors",
             "truncated.pt", "random.pt", "empty.pt", "no_weights_dir", "missing.pt", "missing_dir/model"]
#: what each message must say is wrong (a word of the problem, independent of the library's wording)
BAD_WHAT = {"truncated.safetensors": "safetensors", "header_only.safetensors": "safetensors",
            "random.safetensors": "safetensors", "empty.safetensors": "empty (0 bytes)",
            "truncated.pt": "PyTorch", "random.pt": "PyTorch", "empty.pt": "empty (0 bytes)",
            "no_weights_dir": "directory holding none of", "missing.pt": "no such file",
            "missing_dir/model": "no such file"}


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_checkpoint_one_line_naming_the_file(tmp_path, kind, recwarn):
    from selfi_ros.model.errors import CheckpointError

    path = _bad_files(tmp_path)[kind]
    with pytest.raises(CheckpointError) as ei:
        load_model(path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"checkpoint {path}: ")
    assert ei.value.path == str(path)
    assert BAD_WHAT[kind] in msg
    assert "huggingface-cli download" in msg  # what to do
    assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg
    assert isinstance(ei.value, ValueError)
    if kind.startswith(("missing", "no_weights")):
        assert isinstance(ei.value, (WeightsNotFoundError, FileNotFoundError))
    # read_state_dict on a file raises the same (load_model adds nothing)
    if path.is_file():
        with pytest.raises(CheckpointError, match="^checkpoint "):
            read_state_dict(path)
    # no warning from the failed read leaks out (a bad file gives one line)
    assert [str(w.message) for w in recwarn] == []


def test_pickle_with_objects_is_refused_without_advising_an_unsafe_load(tmp_path):
    """weights_only=True semantics stay: a pickle holding a non-tensor class is refused, the message
    names the class and says to re-save the tensors, never to turn weights_only off."""
    import fractions

    from selfi_ros.model.errors import CheckpointError

    torch.save({"model": {"a": torch.ones(2)}, "extra": fractions.Fraction(1, 3)}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError) as ei:
        read_state_dict(tmp_path / "obj.pt")
    msg = str(ei.value)
    assert "\n" not in msg and str(tmp_path / "obj.pt") in msg
    assert "fractions.Fraction" in msg and "state_dict()" in msg and "weights_only=False" not in msg


def test_no_tensors_and_not_a_dict_are_checkpoint_errors(tmp_path):
    from selfi_ros.model.errors import CheckpointError

    torch.save({"model": {"step": 3}}, tmp_path / "notensors.pt")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        read_state_dict(tmp_path / "notensors.pt")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a state_dict"):
        read_state_dict(tmp_path / "list.pt")
    torch.save({"model": {"a": torch.ones(2)}, "config": "{not json"}, tmp_path / "badcfg.pt")
    with pytest.raises(CheckpointError, match="unreadable embedded model config"):
        read_state_dict(tmp_path / "badcfg.pt")


def test_mismatch_and_not_found_are_checkpoint_errors_too():
    """One type to catch: the existing errors keep their old bases and are CheckpointErrors."""
    from selfi_ros.model.errors import CheckpointError

    assert issubclass(WeightsNotFoundError, CheckpointError) and issubclass(WeightsNotFoundError, FileNotFoundError)
    assert issubclass(CheckpointMismatchError, CheckpointError) and issubclass(CheckpointMismatchError, RuntimeError)
    e = CheckpointMismatchError(["a"], [], [], "x.pt")
    assert e.path == "x.pt" and "missing 1: a" in str(e)


def test_warnings_of_a_successful_read_still_reach_the_caller(tmp_path, monkeypatch):
    """Warnings raised inside torch.load are held back only while the read may still fail: a read that
    succeeds re-emits them (a failed one gives its one line only, see the test above)."""
    import warnings

    real_load = torch.load

    def warning_load(*a, **k):
        warnings.warn("probe warning from torch.load", UserWarning)
        return real_load(*a, **k)

    m = _tiny()
    path = save_checkpoint(m, tmp_path / "ok.pt")
    monkeypatch.setattr(torch, "load", warning_load)
    with pytest.warns(UserWarning, match="probe warning from torch.load"):
        sd, cfg = read_state_dict(path)
    assert cfg == m.cfg and set(sd) == set(m.state_dict())

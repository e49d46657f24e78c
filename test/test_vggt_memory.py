"""Bounded memory of the vggt backend over long runs: a window roll-over releases the previous scene
memory (RAM holds only the current one), and the optional on-disk store keeps at most N evicted window
memories (the export_window format) that relocalize exactly like the in-RAM memory did. Tiny random-weight
model (plumbing)."""
import gc
import os
import weakref

import numpy as np
import pytest
import torch

from selfi_ros.engine.backend import BackendError
from selfi_ros.backends.memory_store import SceneMemoryStore, load_scene_memory, save_scene_memory
from selfi_ros.backends.vggt import VGGTBackend
from selfi_ros.engine.engine import Engine, EngineConfig
from selfi_ros.engine.types import Frame
from selfi_ros_testing import assert_close_rel

torch.set_num_threads(1)

WIDTH = 56


def _frames(n, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return [Frame(stamp_ns=10_000_000 * (i + 1), image=rng.integers(0, 255, (h, w, 3), dtype=np.uint8), index=i)
            for i in range(n)]


def _backend(**kw):
    torch.manual_seed(0)
    return VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=WIDTH, **kw)


def test_window_rollover_releases_previous_memory():
    b = _backend()
    fr = _frames(9)
    refs = []
    for w in range(3):
        b.reconstruct_window(w, fr[3 * w:3 * w + 3])
        refs.append(weakref.ref(b.memory))
    gc.collect()
    assert [r() is not None for r in refs] == [False, False, True]
    assert b.memory_bytes == refs[-1]().nbytes > 0
    assert b.store is None  # off by default: nothing written anywhere


def test_engine_long_run_holds_one_memory():
    """Through the engine: many windows, and only the current window's memory is alive at the end."""
    b = _backend()
    seen = []
    orig = b.reconstruct_window

    def spy(wid, anchors):
        out = orig(wid, anchors)
        seen.append(weakref.ref(b.memory))
        return out

    b.reconstruct_window = spy
    e = Engine(b, EngineConfig(window_size=3, window_overlap=1, window_max_keyframes=3, keyframe_min_interval_s=0.0,
                               keyframe_max_interval_s=0.005, voxel_size=0.05))
    for f in _frames(24, seed=1):
        out = e.process_frame(f)
        assert not out.rejected, out.rejected
    gc.collect()
    alive = [r() is not None for r in seen]
    assert len(seen) >= 5 and alive.count(True) == 1 and alive[-1], alive
    assert e.status().windows == len(seen)


def test_memory_file_round_trip(tmp_path):
    b = _backend()
    b.reconstruct_window(0, _frames(3))
    m = b.memory
    n = save_scene_memory(m, str(tmp_path / "m.safetensors"), {"window_id": 0})
    assert n > m.nbytes * 0.9
    m2, extra = load_scene_memory(str(tmp_path / "m.safetensors"))
    assert extra == {"window_id": 0}
    assert (m2.num_anchors, m2.tokens_per_anchor, m2.image_size_hw, m2.kv_source, m2.query_special,
            m2.random_weights) == (m.num_anchors, m.tokens_per_anchor, tuple(m.image_size_hw), m.kv_source,
                                   m.query_special, True)
    for a, c in zip(m.keys + m.values + m.positions + [m.anchor_camera_tokens],
                    m2.keys + m2.values + m2.positions + [m2.anchor_camera_tokens]):
        assert a.dtype == c.dtype and torch.equal(a, c)
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(Exception):
        load_scene_memory(str(tmp_path / "bad.safetensors"))


def test_store_bounded_and_relocalizes_like_ram(tmp_path):
    store_dir = tmp_path / "mem"
    b = _backend(memory_store_dir=str(store_dir), memory_store_windows=2)
    fr = _frames(16, seed=2)
    probe = fr[15:]
    expected = {}
    for w in range(5):
        b.reconstruct_window(w, fr[3 * w:3 * w + 3])
        expected[w] = b.localize(probe)[0].extrinsics  # against the window while it is current
    # windows 0..3 were evicted in turn; the store keeps the newest 2 of them
    assert b.store.window_ids() == [2, 3]
    assert sorted(os.listdir(store_dir)) == ["window_2", "window_3"]  # window memory folders, nothing else
    assert sorted(os.listdir(store_dir / "window_2")) == ["anchors.safetensors", "memory.json",
                                                         "scene_memory.safetensors"]
    assert 0 < b.store.nbytes <= 2.2 * b.memory_bytes
    for w in (2, 3):  # stored windows relocalize exactly as before (same K/V, same query pass)
        r = b.localize_in_window(probe, w)[0]
        assert_close_rel(r.extrinsics, expected[w], 1e-6)
    assert_close_rel(b.localize_in_window(probe, 4)[0].extrinsics, expected[4], 1e-6)  # current
    assert not np.allclose(expected[2], expected[3], atol=1e-4)  # different windows give different answers
    with pytest.raises(BackendError, match="not in the scene-memory store"):
        b.localize_in_window(probe, 0)
    # the store belongs to one map: reset empties it, and so does a new backend on the same folder
    b.reset()
    assert b.store.window_ids() == [] and b.memory is None
    b.reconstruct_window(0, fr[:3])
    b.reconstruct_window(1, fr[3:6])
    assert b.store.window_ids() == [0]
    b2 = _backend(memory_store_dir=str(store_dir), memory_store_windows=2)
    assert b2.store.window_ids() == []
    for w in range(4):
        b2.reconstruct_window(w, fr[3 * w:3 * w + 3])
    assert b2.store.window_ids() == [1, 2]


def test_store_arguments():
    with pytest.raises(ValueError):
        SceneMemoryStore("", 2)
    b = _backend()
    b.reconstruct_window(0, _frames(3))
    with pytest.raises(BackendError, match="no memory_store_dir"):
        b.localize_in_window(_frames(1), 5)


def test_backend_options_from_node_parameters(tmp_path):
    """The node builds the vggt backend from its parameters memory_store_dir / memory_store_windows /
    torch_threads (defaults: no store, 8 windows, torch's threads)."""
    from selfi_ros.ros.params import configs_from_values, make_backend_from_config

    d = configs_from_values({"backend": "vggt"}).backend
    assert (d.memory_store_dir, d.memory_store_windows, d.torch_threads) == ("", 8, 0)
    node, _, cfg = configs_from_values(dict(backend="vggt", allow_random_weights=True, model_config="tiny",
                                            image_width=WIDTH, memory_store_dir=str(tmp_path / "m"),
                                            memory_store_windows=3, torch_threads=1))
    assert cfg.memory_store_dir == str(tmp_path / "m") and cfg.memory_store_windows == 3
    b = make_backend_from_config(node, cfg)
    assert b.store is not None and b.store.max_windows == 3 and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="torch_threads"):
        VGGTBackend(allow_random_weights=True, model_config="tiny", torch_threads=-1)

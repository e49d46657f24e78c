"""Map save / load and localization-only mode (oracle backend): the round trip (poses in the saved map's frame),
refusal of maps from another backend signature or camera and of broken map folders, atomic replacement,
and the window database's RAM budget (spill to disk, read back) and window bound."""
import json
import os
import shutil

import numpy as np
import pytest

from selfi_ros.backends.oracle import OracleBackend, make_box_room_sequence
from selfi_ros.engine import io as eio
from selfi_ros.engine.backend import BackendBase
from selfi_ros.engine.engine import Engine, EngineConfig
from selfi_ros.engine.map_store import MapLoadError
from selfi_ros.engine.types import Frame, LocalizationResult, WindowReconstruction

W, H = 64, 48
CFG = dict(keyframe_min_flow_px=5.0, keyframe_max_interval_s=1.0, window_size=8, window_overlap=2,
           window_max_keyframes=6, voxel_size=0.02)


@pytest.fixture(scope="module")
def seq():
    return make_box_room_sequence(60, width=W, height=H)


def oracle(scene, seed=0):
    return OracleBackend(scene, rot_noise_deg=0.1, trans_noise_m=0.002, scale_range=(0.5, 2.0), downsample=2, seed=seed)


def mapped(seq, **cfg):
    frames, scene = seq
    eng = Engine(oracle(scene), EngineConfig(**dict(CFG, **cfg)))
    for f in frames:
        eng.process_frame(f)
    return eng


def later(frames, k=1):
    return [Frame(f.stamp_ns + k * 100_000_000_000, f.image, f.K, f.frame_id, f.index, f.source) for f in frames]


def test_save_load_localization_only_round_trip(seq, tmp_path):
    frames, scene = seq
    eng = mapped(seq)
    paths = eng.save(str(tmp_path / "out"))  # the offline outputs and the reusable map beside them
    d = paths["map_dir"]
    assert d == str(tmp_path / "out" / "map")
    for name in ("metadata.json", "windows.json", "windows.npz", "graph.json", "trajectory.tum", "map.ply"):
        assert os.path.isfile(os.path.join(d, name)), name
    meta = json.load(open(os.path.join(d, "metadata.json")))
    assert meta["signature"] == {"backend": "oracle", "descriptor": "grey_thumbnail_8x6"}
    assert meta["windows"] == eng.status().windows and meta["camera"]["width"] == W
    np.testing.assert_allclose(meta["camera"]["K"], scene.K)
    saved = {p.frame_index: p.T_map_cam for p in eng.trajectory()}
    n_points = eng.status().map_points
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".")]  # no temporary folder left

    loc = Engine(oracle(scene, seed=5), EngineConfig(**CFG, localization_only=True))
    meta2 = loc.load_map(d)
    assert meta2["windows"] == meta["windows"] and loc.status().state == "localizing"
    assert abs(loc.status().map_points - n_points) <= 0.05 * n_points  # the map cloud rebuilt from the windows
    outs = [loc.process_frame(f) for f in later(frames)]
    st = loc.status()
    assert st.windows == 0 and len(loc.db) == meta["windows"] and st.state == "localizing"
    posed = {o.poses[0].frame_index: o.poses[0].T_map_cam for o in outs if o.poses}
    assert len(posed) >= 0.95 * len(frames)
    # poses in the saved map's frame, no re-alignment: the same views land where the first run put them
    c = np.array([T[:3, 3] for T in saved.values()])
    ext = float(np.sqrt(((c - c.mean(0)) ** 2).sum(1).mean()))
    err = np.array([np.linalg.norm(posed[i][:3, 3] - saved[i][:3, 3]) for i in posed if i in saved])
    assert np.median(err) < 0.02 * ext and err.max() < 0.1 * ext, (np.median(err), err.max(), ext)
    # the trajectory file of the map reads back as the first run's trajectory (map units)
    stamps, T = eio.read_tum(os.path.join(d, "trajectory.tum"))
    assert len(stamps) == len(saved)


def test_localization_only_without_a_map_poses_nothing(seq):
    frames, scene = seq
    loc = Engine(oracle(scene), EngineConfig(**CFG, localization_only=True))
    outs = [loc.process_frame(f) for f in frames[:5]]
    assert not any(o.poses for o in outs) and loc.status().windows == 0
    assert "no map loaded" in loc.status().last_error


class OtherDescriptor(OracleBackend):
    def map_signature(self):
        return {"backend": "oracle", "descriptor": "netvlad_64"}


class NoMaps(BackendBase):
    name = "line"

    def reconstruct_window(self, window_id, anchors) -> WindowReconstruction:
        raise NotImplementedError

    def localize(self, frames) -> list[LocalizationResult]:
        raise NotImplementedError

    def reset(self):
        pass


def test_maps_from_another_signature_camera_or_broken_are_refused(seq, tmp_path):
    frames, scene = seq
    eng = mapped(seq)
    d = eng.save_map(str(tmp_path / "map"))["directory"]
    other = Engine(OtherDescriptor(scene), EngineConfig(**CFG))
    with pytest.raises(MapLoadError, match="descriptor='grey_thumbnail_8x6'.*'netvlad_64'"):
        other.load_map(d)
    with pytest.raises(MapLoadError, match="keeps no window memories"):
        Engine(NoMaps(), EngineConfig(**CFG)).load_map(d)
    K2 = scene.K.copy()
    K2[0, 0] *= 1.1
    with pytest.raises(MapLoadError, match="intrinsics"):
        Engine(oracle(scene), EngineConfig(**CFG)).load_map(d, camera=(K2, W, H))
    with pytest.raises(MapLoadError, match="size"):
        Engine(oracle(scene), EngineConfig(**CFG)).load_map(d, camera=(scene.K, W * 2, H))
    # broken folders: a missing file, a corrupt array file, a corrupt memory; the engine is left as it was
    target = mapped(seq)
    before = (target.status().windows, len(target.db), len(target.trajectory()))
    for name, breaker, reason in (("graph.json", os.remove, "graph.json is missing"),
                                  ("windows.npz", lambda p: open(p, "wb").write(b"junk"), "corrupt"),
                                  ("metadata.json", lambda p: open(p, "w").write("{"), "metadata.json is unreadable")):
        b = str(tmp_path / f"broken_{name}")
        shutil.copytree(d, b)
        breaker(os.path.join(b, name))
        with pytest.raises(MapLoadError, match=reason) as ei:
            target.load_map(b)
        assert "\n" not in str(ei.value)
    b = str(tmp_path / "broken_memory")
    shutil.copytree(d, b)
    mem = os.path.join(b, "memories", sorted(os.listdir(os.path.join(b, "memories")))[0], "memory.npz")
    open(mem, "wb").write(b"junk")
    with pytest.raises(MapLoadError, match="corrupt"):
        target.load_map(b)
    with pytest.raises(MapLoadError, match="no such folder"):
        target.load_map(str(tmp_path / "nothing"))
    assert (target.status().windows, len(target.db), len(target.trajectory())) == before
    # a frame of another camera is refused in localization-only mode
    loc = Engine(oracle(scene), EngineConfig(**CFG, localization_only=True))
    loc.load_map(d)
    f = frames[3]
    o = loc.process_frame(Frame(f.stamp_ns, f.image, K2, f.frame_id, f.index, f.source))
    assert "intrinsics" in o.rejected and not o.poses


def test_save_map_is_atomic_and_replaces_an_old_map(seq, tmp_path, monkeypatch):
    eng = mapped(seq)
    d = str(tmp_path / "map")
    eng.save_map(d)
    first = json.load(open(os.path.join(d, "metadata.json")))["saved_utc"]

    def boom(directory):
        raise OSError("disk full")

    monkeypatch.setattr(eng.db, "save_memories", boom)
    with pytest.raises(OSError, match="disk full"):
        eng.save_map(d)
    assert json.load(open(os.path.join(d, "metadata.json")))["saved_utc"] == first  # the old map is intact
    assert sorted(os.listdir(tmp_path)) == ["map"]  # no temporary folder left
    monkeypatch.undo()
    eng.save_map(d)  # replaces it
    assert sorted(os.listdir(tmp_path)) == ["map"]
    with pytest.raises(MapLoadError, match="no window"):
        Engine(oracle(seq[1]), EngineConfig(**CFG)).save_map(str(tmp_path / "empty"))


def test_window_database_spills_to_disk_and_is_bounded(seq, tmp_path):
    frames, scene = seq
    eng = Engine(oracle(scene), EngineConfig(**CFG, window_db_ram_mb=0.0, window_db_spill_dir=str(tmp_path / "spill")))
    for k in range(2):
        for f in later(frames, k):
            eng.process_frame(f)
    db = eng.db
    st = eng.status()
    assert len(db) == st.windows >= 4
    # every memory on disk but the current one and the one read back last (needed again next frame)
    assert db.spilled == st.window_db_spilled >= len(db) - 2
    assert sum(e.memory is not None for e in db.entries.values()) <= 2
    assert db.evictions["spilled"] >= len(db) - 1 and st.window_db_evictions >= len(db) - 1
    assert st.loop_closures + st.relocalizations >= 1 or st.window_db_loads >= 1
    assert db.loads >= 1  # lap 2 localized against windows read back from disk
    spill = db._spill
    assert spill is not None and spill.startswith(str(tmp_path / "spill")) and len(os.listdir(spill)) >= len(db) - 1
    loc = Engine(oracle(scene), EngineConfig(**CFG, localization_only=True))
    loc.load_map(eng.save_map(str(tmp_path / "map"))["directory"])  # spilled memories are copied into the map
    assert sum(bool(o.poses) for o in (loc.process_frame(f) for f in later(frames, 3))) >= 55
    eng.reset()
    assert not os.path.exists(spill)  # the spill folder goes with the database
    # a bound on windows: the oldest are dropped, counted
    small = mapped(seq, window_db_max_windows=3)
    assert len(small.db) == 3 and small.db.evictions["max_windows"] == small.status().windows - 3


class _Mem:
    """A minimal WindowMemory: ``nbytes`` as given; ``save`` writes one file or fails."""

    backend = "fake"

    def __init__(self, window_id, nbytes, fail=False):
        self.window_id, self._n, self.fail = window_id, nbytes, fail

    def nbytes(self):
        return self._n

    def save(self, directory):
        if self.fail:
            raise OSError("read-only file system")
        open(os.path.join(directory, "m.json"), "w").write(json.dumps({"id": self.window_id, "n": self._n}))


class _Loader:
    def load_window(self, directory):
        with open(os.path.join(directory, "m.json")) as fh:
            d = json.load(fh)
        return _Mem(d["id"], d["n"])


def test_window_database_retrieval_budget_and_failures(tmp_path):
    from selfi_ros.engine.window_db import WindowDatabase

    db = WindowDatabase(_Loader(), ram_budget_bytes=3500, max_windows=10, spill_dir=str(tmp_path))
    rng = np.random.default_rng(0)
    D = rng.normal(size=(5, 3, 16)).astype(np.float32)
    for w in range(5):
        db.add(w, 0, _Mem(w, 1000), D[w], [w * 10, w * 10 + 1, w * 10 + 2])
    # RAM budget: at most 2 memories of 1000 bytes stay (plus the small arrays), the rest spilled, counted
    assert db.spilled == 3 and db.evictions == {"spilled": 3}
    assert sorted(os.listdir(db._spill)) == [f"window_{w:06d}" for w in range(3)]
    # retrieval: a noisy copy of window 3's second anchor descriptor ranks window 3 first (cosine of rows
    # normalised by the database), exclusions and the similarity floor apply
    q = D[3, 1] + 0.05 * rng.normal(size=16)
    q = q / np.linalg.norm(q)
    got = db.retrieve(q, 2)
    assert got[0][0] == 3 and len(got) == 2
    d3 = D[3] / np.linalg.norm(D[3], axis=1, keepdims=True)
    assert abs(got[0][1] - float(np.max(d3 @ q))) < 1e-5
    assert 3 not in [w for w, _ in db.retrieve(q, 5, exclude={3})]
    assert [w for w, _ in db.retrieve(q, 5, min_similarity=0.9)] == [3]  # only the near copy is similar enough
    # a spilled memory is read back on demand (counted), another spilled in its place
    m = db.memory(0)
    assert m.window_id == 0 and m.nbytes() == 1000 and db.loads == 1 and db.spilled == 3
    # a memory that cannot be written is dropped, counted; one that cannot be read back likewise
    db.add(5, 0, _Mem(5, 1000, fail=True), D[0], [50])
    db.add(6, 0, _Mem(6, 1000), D[1], [60])
    db.add(7, 0, _Mem(7, 1000), D[2], [70])  # the least recently used in RAM (5) must go now
    assert db.evictions.get("spill_failed", 0) == 1 and 5 not in db
    shutil.rmtree(db.entries[1].folder)
    assert db.memory(1) is None and 1 not in db and db.evictions["load_failed"] == 1
    # the bound on windows drops the oldest, its spill folder with it
    small = WindowDatabase(_Loader(), 0, max_windows=2, spill_dir=str(tmp_path / "b"))
    for w in range(4):
        small.add(w, 0, _Mem(w, 10), D[w], [w])
    assert small.ids() == [2, 3] and small.evictions["max_windows"] == 2
    assert sorted(os.listdir(small._spill)) == ["window_000002", "window_000003"]
    folder = small._spill
    # a bound on the spill folder's bytes: the oldest spilled windows go, counted
    disk = WindowDatabase(_Loader(), 0, max_windows=100, spill_dir=str(tmp_path / "c"), disk_budget_bytes=100)
    for w in range(6):
        disk.add(w, 0, _Mem(w, 10), D[w % 5], [w])
    per = disk.entries[5].disk_nbytes  # every folder holds one small file of the same size
    assert per > 0 and disk.disk_bytes <= 100 and disk.evictions["disk_budget"] == 6 - len(disk)
    assert len(disk) == 100 // per and disk.ids() == list(range(6 - len(disk), 6))  # the oldest went
    small.clear()
    assert not os.path.exists(folder) and small._spill is None and len(small) == 0


def test_vggt_plumbing_map_round_trip(tmp_path):
    """The vggt backend (tiny, RANDOM weights: plumbing only, poses meaningless) through the window database:
    retrieval and localize_in run, the map is saved with the outputs, loaded into a fresh engine and frames
    are localized against it in localization-only mode; a map of the oracle is refused by its signature."""
    pytest.importorskip("torch")
    from selfi_ros.backends.vggt import VGGTBackend

    frames, scene = make_box_room_sequence(14, width=W, height=H)

    def vggt():
        return VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=56)

    cfg = dict(keyframe_min_flow_px=5.0, keyframe_max_interval_s=1.0, window_size=4, window_overlap=1,
               window_max_keyframes=3)
    eng = Engine(vggt(), EngineConfig(**cfg))
    for f in frames + later(frames):
        assert not eng.process_frame(f).rejected
    st = eng.status()
    assert st.windows >= 2 and st.window_db_windows == len(eng.db) >= 2 and st.random_weights
    paths = eng.save(str(tmp_path / "out"))
    assert "map_error" not in paths
    meta = json.load(open(os.path.join(paths["map_dir"], "metadata.json")))
    assert meta["signature"]["backend"] == "vggt" and meta["signature"]["checkpoint_sha256"] == "random"
    loc = Engine(vggt(), EngineConfig(**cfg, localization_only=True))
    loc.load_map(paths["map_dir"])
    outs = [loc.process_frame(f) for f in later(frames[:6], 2)]
    assert all(not o.rejected for o in outs) and loc.status().windows == 0 and loc.status().state in ("localizing", "lost")
    assert sum(bool(o.poses) for o in outs) + loc.status().localization_failures == 6
    with pytest.raises(MapLoadError, match="backend='oracle'"):
        loc.load_map(mapped((frames, scene)).save_map(str(tmp_path / "oracle_map"))["directory"])

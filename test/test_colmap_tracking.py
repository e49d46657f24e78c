"""ColmapBackend's cheap per-frame path and its window memories, on the real sample images against the
exact ground truth: KLT tracking (and its loss and recovery through SIFT), the feature cache shared by
windows, a window grown into the previous model against the same keyframes reconstructed from scratch,
export / save / load / localize_in, and the VLAD place-recognition descriptors."""
import numpy as np
import pytest

from selfi_ros.apps.reconstruct import frames_from_bag
from selfi_ros.backends.colmap import ColmapBackend
from selfi_ros.backends.colmap_features import match_features
from selfi_ros.backends.colmap_memory import MEMORY_FILE, ColmapWindowMemory
from selfi_ros.data import SAMPLE_BAG, SAMPLE_GT_TUM
from selfi_ros.engine.backend import BackendError, WindowMemory
from selfi_ros.engine.io import read_tum
from selfi_ros.engine.types import Frame
from selfi_ros.geometry.sim3 import umeyama

WIN_A = [0, 2, 4, 6, 8, 10]
WIN_B = [8, 10, 12, 14, 16, 18]  # shares anchors 8 and 10 with WIN_A


@pytest.fixture(scope="module")
def sample():
    frames = list(frames_from_bag(SAMPLE_BAG))[:24]
    stamps, T = read_tum(SAMPLE_GT_TUM)
    return frames, dict(zip(stamps.tolist(), T))


@pytest.fixture(scope="module")
def grown(sample):
    """One backend, window A then window B (grown into A's model)."""
    frames, _ = sample
    b = ColmapBackend(seed=1)
    win_a = b.reconstruct_window(0, [frames[i] for i in WIN_A])
    extractions_a = b.features.extractions
    memory_a = b.export_window()
    win_b = b.reconstruct_window(1, [frames[i] for i in WIN_B])
    return b, win_a, win_b, extractions_a, memory_a


def _T_win_cam(E):
    return np.linalg.inv(np.vstack([E, [0, 0, 0, 1]]))


def _rot_err_deg(Ra, Rb):
    return float(np.degrees(np.arccos(np.clip((np.trace(Ra.T @ Rb) - 1) / 2, -1, 1))))


def _gt(gt, frames, ref, i):
    """Ground-truth camera-to-window pose of frame i, window = camera of frame ``ref``."""
    return np.linalg.inv(gt[frames[ref].stamp_ns]) @ gt[frames[i].stamp_ns]


def _scale(win, gt, frames, ids):
    """Least-squares scale from the window's camera centres to the ground truth's."""
    C_est = np.array([_T_win_cam(E)[:3, 3] for E in win.extrinsics])
    C_ref = np.array([_gt(gt, frames, ids[0], i)[:3, 3] for i in ids])
    return float(np.sum(C_est * C_ref) / np.sum(C_est * C_est))


def _check_pose(res, gt, frames, ref, i, s, tol=0.1, rot_tol_deg=0.5):
    assert res.extrinsics is not None, res.reason
    T = _T_win_cam(res.extrinsics)
    Tr = _gt(gt, frames, ref, i)
    # 0.1 scene units = 1% of the camera's distance to the box
    assert np.linalg.norm(s * T[:3, 3] - Tr[:3, 3]) < tol
    assert _rot_err_deg(T[:3, :3], Tr[:3, :3]) < rot_tol_deg


def test_tracked_frames_need_no_sift(sample):
    """Non-keyframes next to the window are tracked (KLT + PnP): accurate poses, inliers filled, and not a
    single SIFT extraction."""
    frames, gt = sample
    b = ColmapBackend(seed=1)
    win = b.reconstruct_window(0, [frames[i] for i in WIN_A])
    s = _scale(win, gt, frames, WIN_A)
    n_extract = b.features.extractions
    queries = [1, 3, 5, 7, 9, 11]
    res = b.localize([frames[i] for i in queries])
    for i, r in zip(queries, res):
        _check_pose(r, gt, frames, 0, i, s)
        assert r.inliers >= b.config.track_min_points and 0.5 < r.confidence <= 1.0
    assert b.counters["tracked"] == len(queries) and b.counters["sift_localized"] == 0
    assert b.features.extractions == n_extract


def test_tracking_loss_and_recovery(sample):
    """A frame with nothing to track fails with a reason; far (in time) from every posed image the tracker
    is lost and SIFT localizes the frame and re-seeds the tracks; the next frame is tracked from those."""
    frames, gt = sample
    b = ColmapBackend(seed=1, track_min_points=20)  # SIFT finds about 45 inliers in a sample frame
    win = b.reconstruct_window(0, [frames[i] for i in WIN_A])
    s = _scale(win, gt, frames, WIN_A)

    def later(i, dt_s):  # the same image, stamped dt_s later: out of reach of every anchor (track_max_gap_s)
        f = frames[i]
        return Frame(f.stamp_ns + int(dt_s * 1e9), f.image, K=f.K, index=f.index)

    blank = Frame(frames[5].stamp_ns, np.full_like(frames[5].image, 90), K=frames[5].K, index=5)
    (r,) = b.localize([blank])
    assert r.extrinsics is None and r.reason and b.counters["localize_failed"] == 1
    assert b.tracker.last is None  # a failed frame never becomes a seed
    (r5,) = b.localize([later(5, 10.0)])
    _check_pose(r5, gt, frames, 0, 5, s)
    assert b.counters["sift_localized"] == 1 and b.counters["tracked"] == 0
    assert b.tracker.last.stamp_ns == frames[5].stamp_ns + int(10e9)
    (r7,) = b.localize([later(7, 10.2)])  # tracked from the re-seeded frame 5
    # fewer, coarser seeds (SIFT at first octave 0) than an anchor's: measured 0.57 deg
    _check_pose(r7, gt, frames, 0, 7, s, rot_tol_deg=1.0)
    assert b.counters["tracked"] == 1 and b.counters["sift_localized"] == 1 and r7.inliers >= 20
    # tracking off: every frame is a SIFT localization
    b2 = ColmapBackend(seed=1, track_non_keyframes=False)
    b2.reconstruct_window(0, [frames[i] for i in WIN_A])
    (r,) = b2.localize([frames[5]])
    assert r.extrinsics is not None and b2.counters["tracked"] == 0 and b2.counters["sift_localized"] == 1


def test_feature_cache_is_shared_by_windows(sample, grown):
    """Window B extracts SIFT for its 4 new anchors only, and the pair it shares with window A is matched
    once; localizing a cached keyframe needs no extraction either."""
    frames, _ = sample
    b, _, _, extractions_a, _ = grown
    assert extractions_a == len(WIN_A)
    assert b.features.extractions == len(set(WIN_A) | set(WIN_B))
    assert b.features.hits >= 2 and b.pairs.hits >= 1
    n = b.features.extractions
    b.tracker.clear()  # force the SIFT path
    (r,) = b.localize([frames[14]])
    assert r.extrinsics is not None and b.features.extractions == n  # anchor 14's features reused


def test_cache_is_bounded(sample):
    frames, _ = sample
    b = ColmapBackend(seed=1, feature_cache_size=3)
    for f in frames[:5]:
        b.features.get(f, -1)
    assert len(b.features) == 3 and b.features.extractions == 5
    assert b.features.peek(frames[0]) is None and b.features.peek(frames[4], -1) is not None
    for f in frames[5:20]:  # non-keyframes (keep=False) never evict keyframes
        b.features.get(f, 0, keep=False)
    assert len(b.features) == 3 and b.features.peek(frames[4], -1) is not None
    assert b.features.peek(frames[19], 0) is not None and b.features.peek(frames[5], 0) is None


def test_grown_window_matches_from_scratch(sample, grown):
    """Window B grown into A's model (shared anchors fixed) and B reconstructed from scratch agree after a
    Sim(3) alignment, and both agree with the ground truth."""
    frames, gt = sample
    b, _, win_b, _, _ = grown
    assert b.counters["windows_grown"] == 1 and b.counters["windows_scratch"] == 1
    scratch = ColmapBackend(seed=1, grow_windows=False).reconstruct_window(1, [frames[i] for i in WIN_B])
    assert list(win_b.frame_indices) == list(scratch.frame_indices) == WIN_B
    # both windows are in the camera frame of anchor 8 (identity extrinsics), so the Sim(3) between them is
    # a scale (each window fixes its own by its points' median depth); fit it on the camera centres
    np.testing.assert_allclose(win_b.extrinsics[0], scratch.extrinsics[0], atol=1e-12)
    C_g = np.array([_T_win_cam(E)[:3, 3] for E in win_b.extrinsics])
    C_s = np.array([_T_win_cam(E)[:3, 3] for E in scratch.extrinsics])
    k = float(np.sum(C_g * C_s) / np.sum(C_g * C_g))
    extent = np.linalg.norm(C_s[-1] - C_s[0])
    assert np.max(np.linalg.norm(k * C_g - C_s, axis=1)) < 0.02 * extent
    assert umeyama(C_g, C_s).s == pytest.approx(k, rel=0.05)
    for Eg, Es in zip(win_b.extrinsics, scratch.extrinsics):  # each is within 1 deg of the truth (below)
        assert _rot_err_deg(_T_win_cam(Eg)[:3, :3], _T_win_cam(Es)[:3, :3]) < 1.5
    for win in (win_b, scratch):  # both against the ground truth, window = camera of anchor 8
        s = _scale(win, gt, frames, WIN_B)
        C_ref = np.array([_gt(gt, frames, WIN_B[0], i)[:3, 3] for i in WIN_B])
        C = np.array([_T_win_cam(E)[:3, 3] for E in win.extrinsics])
        assert np.max(np.linalg.norm(s * C - C_ref, axis=1)) < 0.03 * np.linalg.norm(C_ref[-1] - C_ref[0])
        for E, i in zip(win.extrinsics, WIN_B):  # measured: grown <= 0.52 deg, from scratch <= 0.96 deg
            assert _rot_err_deg(_T_win_cam(E)[:3, :3], _gt(gt, frames, WIN_B[0], i)[:3, :3]) < 1.0


def test_windows_are_built_in_memory(sample, monkeypatch):
    """No image or database file is written on the hot path."""
    import cv2
    import tempfile

    def refuse(*a, **k):
        raise AssertionError("wrote to disk")

    monkeypatch.setattr(cv2, "imwrite", refuse)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    frames, _ = sample
    b = ColmapBackend(seed=1)
    b.reconstruct_window(0, [frames[i] for i in WIN_A])
    assert b.localize([frames[1]])[0].extrinsics is not None


def test_memory_export_save_load_localize_in(sample, grown, tmp_path):
    """Window A's memory, exported before window B, saved and loaded by a fresh backend, localizes frames in
    A's frame (not B's) with inliers; the round trip keeps every array; broken folders are clear errors."""
    frames, gt = sample
    b, win_a, _, _, mem = grown
    assert isinstance(mem, WindowMemory) and mem.window_id == 0 and mem.backend == "colmap"
    assert mem.nbytes() >= mem.descriptors.nbytes + mem.points.nbytes > 0
    np.testing.assert_allclose(mem.points, win_a.sparse_points, rtol=1e-6, atol=1e-6)
    assert len(mem.descriptors) == len(mem.point_index) == len(mem.obs_xy) >= len(mem.points)
    mem.save(str(tmp_path))
    fresh = ColmapBackend(seed=1)
    loaded = fresh.load_window(str(tmp_path))
    for name in ("points", "colors", "descriptors", "point_index", "K", "anchor_stamps_ns", "obs_anchor",
                 "obs_xy", "vocabulary"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(mem, name), err_msg=name)
    assert loaded.image_size_hw == mem.image_size_hw and loaded.window_id == 0
    np.testing.assert_array_equal(fresh.vlad.centres, b.vlad.centres)  # vocabulary adopted
    s = _scale(win_a, gt, frames, WIN_A)
    for backend in (fresh, b):  # b's current window is B: localize_in must still answer in A's frame
        res = backend.localize_in(loaded, [frames[1], frames[9]])
        for i, r in zip((1, 9), res):
            _check_pose(r, gt, frames, 0, i, s)
            assert r.inliers >= b.min_inliers
    with pytest.raises(BackendError, match="no colmap_window.npz"):
        fresh.load_window(str(tmp_path / "absent"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MEMORY_FILE).write_bytes(b"not a zip")
    with pytest.raises(BackendError, match="unreadable"):
        fresh.load_window(str(tmp_path / "bad"))
    with pytest.raises(BackendError, match="before any window"):
        ColmapBackend().export_window()
    with pytest.raises(BackendError):
        fresh.localize_in(object(), [frames[1]])


def test_describe_vlad(sample, grown):
    """Unit-norm VLAD rows of dimension 128 k; the same frame gives the same row; a neighbouring view is more
    similar than a far one, and far more than noise; the window carries its anchors' rows."""
    frames, _ = sample
    b, win_a, _, _, _ = grown
    D = b.describe([frames[10], frames[11], frames[23]])
    assert D.shape == (3, 128 * b.config.vlad_clusters) and D.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(b.describe([frames[10]])[0], D[0], rtol=1e-6, atol=1e-7)
    rng = np.random.default_rng(0)
    noise = Frame(1, rng.integers(0, 255, (360, 480, 3), dtype=np.uint8), index=99)
    (n,) = b.describe([noise])
    assert D[0] @ D[1] > D[0] @ D[2] > D[0] @ n
    assert win_a.descriptors.shape == (len(WIN_A), D.shape[1])
    np.testing.assert_allclose(win_a.descriptors[-1], D[0], rtol=1e-5, atol=1e-6)
    sig = b.map_signature()
    assert sig["backend"] == "colmap" and "vlad16" in sig["global"] and "sift" in sig["features"]
    assert b.supports_map is True


def test_match_features_is_mutual_ratio():
    """Mutual nearest neighbours under Lowe's ratio: planted pairs are found, an ambiguous one is not."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 255, (50, 128)).astype(np.float32)
    perm = rng.permutation(50)
    b = a[perm] + rng.normal(0, 2, (50, 128)).astype(np.float32)
    b[0] = b[1] + 0.5  # two near-identical rows: ambiguous for their partner
    m = match_features(a, b, 0.8)
    found = {(int(i), int(j)) for i, j in m}
    truth = {(int(perm[j]), j) for j in range(2, 50)}
    assert truth <= found and not any(j in (0, 1) for _, j in found)
    assert match_features(a[:1], b, 0.8).shape == (0, 2)


def test_memory_load_rejects_inconsistent_arrays(tmp_path):
    mem = ColmapWindowMemory(window_id=0, points=np.zeros((2, 3)), colors=np.zeros((2, 3), np.uint8),
                             descriptors=np.zeros((3, 128), np.uint8), point_index=np.array([0, 1, 5]),
                             K=np.eye(3), image_size_hw=(10, 10), anchor_stamps_ns=np.zeros(1, np.int64),
                             obs_anchor=np.zeros(3, np.int64), obs_xy=np.zeros((3, 2), np.float32))
    mem.save(str(tmp_path))
    with pytest.raises(BackendError, match="inconsistent"):
        ColmapWindowMemory.load(str(tmp_path))


def test_klt_follows_a_known_shift():
    """KLT tracks of a textured image shifted by (3.0, -2.0) px land 3 px right and 2 px up; tracks that
    leave the image are dropped; seeds too far in time or of another size are not used."""
    from selfi_ros.backends.colmap_tracking import KltTracker, TrackSeed

    rng = np.random.default_rng(5)
    import cv2

    base = cv2.GaussianBlur(rng.integers(0, 255, (240, 320)).astype(np.uint8), (0, 0), 2.0)
    M = np.float32([[1, 0, 3.0], [0, 1, -2.0]])
    moved = cv2.warpAffine(base, M, (320, 240), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    xy = np.array([[x, y] for x in range(40, 300, 20) for y in range(40, 220, 20)], np.float32)
    xy = np.vstack([xy, [[1.0, 1.0]]]).astype(np.float32)  # moves out of the image (y - 2 < 0)
    tr = KltTracker(max_gap_s=1.0)
    seed = TrackSeed(0, base, xy, np.arange(len(xy)))
    out, rows = tr.track(seed, moved)
    assert len(rows) >= len(xy) - 3 and len(xy) - 1 not in set(rows.tolist())
    np.testing.assert_allclose(out - xy[rows], np.tile([3.0, -2.0], (len(rows), 1)), atol=0.1)
    tr.reset_window([seed])
    assert tr.nearest_seed(int(0.5e9), (240, 320)) is seed
    assert tr.nearest_seed(int(2e9), (240, 320)) is None and tr.nearest_seed(0, (480, 640)) is None


def test_large_keyframes_skip_the_upsampled_octave():
    b = ColmapBackend()
    small = Frame(0, np.zeros((360, 480, 3), np.uint8))
    large = Frame(1, np.zeros((480, 640, 3), np.uint8))
    assert b._anchor_octave(small) == -1 and b._anchor_octave(large) == 0
    assert ColmapBackend(upsample_max_side_px=0)._anchor_octave(large) == -1
    assert ColmapBackend(anchor_first_octave=1)._anchor_octave(large) == 1


def test_parallel_extraction_equals_sequential(sample):
    """get_many's thread pool (one extractor per thread) gives the features one thread gives, counted once."""
    from selfi_ros.backends.colmap_features import FeatureCache

    frames, _ = sample
    par = FeatureCache(2048, 640, 0.004, 2, 16)
    seq = FeatureCache(2048, 640, 0.004, 1, 16)
    a = par.get_many(frames[:3], [-1, -1, 0])
    b = [seq.get(f, o) for f, o in zip(frames[:3], [-1, -1, 0])]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.descriptors, y.descriptors)
        np.testing.assert_allclose(x.keypoints, y.keypoints, rtol=1e-6)
    assert par.extractions == 3 and par.get_many(frames[:3], [-1, -1, 0])[2] is a[2] and par.extractions == 3
    par.close()

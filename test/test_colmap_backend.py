"""ColmapBackend on the real sample images: window geometry and localization against the exact ground
truth, the window-frame conventions, and the failure paths."""
import numpy as np
import pytest

from selfi_ros.data import SAMPLE_BAG, SAMPLE_GT_TUM
from selfi_ros.engine.backend import Backend, BackendError
from selfi_ros.backends import make_backend
from selfi_ros.backends.colmap import ColmapBackend
from selfi_ros.engine.io import read_tum
from selfi_ros.engine.types import Frame
from selfi_ros.apps.reconstruct import frames_from_bag

ANCHORS = [0, 2, 4, 6, 8, 10]


@pytest.fixture(scope="module")
def sample():
    frames = list(frames_from_bag(SAMPLE_BAG))[:24]
    stamps, T = read_tum(SAMPLE_GT_TUM)
    gt = dict(zip(stamps.tolist(), T))
    return frames, gt


@pytest.fixture(scope="module")
def window(sample):
    frames, _ = sample
    backend = ColmapBackend(seed=1)
    win = backend.reconstruct_window(3, [frames[i] for i in ANCHORS])
    return backend, win


def _rot_err_deg(Ra, Rb):
    c = (np.trace(Ra.T @ Rb) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))))


def _gt_in_window(gt, frames, i):
    """Ground-truth T_win_cam of frame i, with the window = camera of anchor 0 (unit scale)."""
    return np.linalg.inv(gt[frames[ANCHORS[0]].stamp_ns]) @ gt[frames[i].stamp_ns]


def test_is_a_backend_and_registered():
    b = make_backend("colmap")
    assert isinstance(b, Backend) and b.name == "colmap" and b.random_weights is False


def test_window_matches_ground_truth(sample, window):
    frames, gt = sample
    _, win = window
    assert win.window_id == 3 and win.num_frames == len(ANCHORS) and win.backend == "colmap"
    assert list(win.frame_indices) == ANCHORS
    assert list(win.stamps_ns) == [frames[i].stamp_ns for i in ANCHORS]
    assert win.extrinsics.shape == (6, 3, 4) and win.intrinsics.shape == (6, 3, 3)
    np.testing.assert_allclose(win.extrinsics[0], np.hstack([np.eye(3), np.zeros((3, 1))]), atol=1e-12)
    np.testing.assert_allclose(win.intrinsics[0], frames[0].K, atol=1e-9)  # known K stays fixed
    assert win.image_size_hw == (360, 480)
    # camera-to-window poses vs ground truth, up to the window's (arbitrary) scale
    est = [np.linalg.inv(np.vstack([E, [0, 0, 0, 1]])) for E in win.extrinsics]
    ref = [_gt_in_window(gt, frames, i) for i in ANCHORS]
    C_est = np.array([T[:3, 3] for T in est])
    C_ref = np.array([T[:3, 3] for T in ref])
    s = np.sum(C_est * C_ref) / np.sum(C_est * C_est)
    extent = np.linalg.norm(C_ref[-1] - C_ref[0])
    assert np.max(np.linalg.norm(s * C_est - C_ref, axis=1)) < 0.03 * extent
    for Te, Tr in zip(est, ref):
        assert _rot_err_deg(Te[:3, :3], Tr[:3, :3]) < 0.5


def test_window_points_scale_and_reprojection(sample, window):
    frames, _ = sample
    _, win = window
    P = win.sparse_points.astype(np.float64)
    assert len(P) > 100 and win.sparse_colors.shape == (len(P), 3) and win.sparse_colors.dtype == np.uint8
    # scale convention: median depth in the first anchor is 1
    assert np.median(P[:, 2]) == pytest.approx(1.0, rel=1e-6)
    # the points project into every anchor image, in front of the camera
    for E, K in zip(win.extrinsics, win.intrinsics):
        Xc = P @ E[:, :3].T + E[:, 3]
        uv = Xc[:, :2] / Xc[:, 2:3] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
        inside = (Xc[:, 2] > 0) & (uv[:, 0] > -1) & (uv[:, 0] < 481) & (uv[:, 1] > -1) & (uv[:, 1] < 361)
        assert inside.mean() > 0.6
    # the colours are the scene's (brownish wood), not a constant fill
    assert win.sparse_colors.std() > 5


def test_localize_queries_against_ground_truth(sample, window):
    frames, gt = sample
    backend, win = window
    E0 = win.extrinsics
    C_est = np.array([np.linalg.inv(np.vstack([E, [0, 0, 0, 1]]))[:3, 3] for E in E0])
    C_ref = np.array([_gt_in_window(gt, frames, i)[:3, 3] for i in ANCHORS])
    s = np.sum(C_est * C_ref) / np.sum(C_est * C_est)
    queries = [frames[i] for i in (1, 5, 9, 13)]
    res = backend.localize(queries)
    assert [r.frame_index for r in res] == [1, 5, 9, 13]
    for i, r in zip((1, 5, 9, 13), res):
        assert r.extrinsics is not None, r.reason
        assert 0.3 < r.confidence <= 1.0
        T = np.linalg.inv(np.vstack([r.extrinsics, [0, 0, 0, 1]]))
        Tr = _gt_in_window(gt, frames, i)
        # 0.1 scene units = 1% of the camera's distance to the box (frame 13 lies outside the window)
        assert np.linalg.norm(s * T[:3, 3] - Tr[:3, 3]) < 0.1
        assert _rot_err_deg(T[:3, :3], Tr[:3, :3]) < 0.5
        np.testing.assert_allclose(r.K, frames[i].K)


def test_localize_failure_is_reported_not_raised(window):
    backend, _ = window
    rng = np.random.default_rng(0)
    noise = Frame(1, rng.integers(0, 255, (360, 480, 3), dtype=np.uint8), K=np.diag([400.0, 400.0, 1.0]), index=99)
    flat = Frame(2, np.full((360, 480, 3), 90, np.uint8), K=None, index=100)
    r1, r2 = backend.localize([noise, flat])
    assert r1.extrinsics is None and r1.reason and r1.frame_index == 99
    assert r2.extrinsics is None and "feature" in r2.reason


def test_unknown_intrinsics_are_estimated(sample):
    frames, _ = sample
    # self-calibration needs some rotation: anchors 4 frames apart (about 27 degrees of orbit in all)
    anchors = [Frame(f.stamp_ns, f.image, None, f.frame_id, f.index) for f in (frames[i] for i in range(0, 24, 4))]
    win = ColmapBackend(seed=1).reconstruct_window(0, anchors)
    f_true = frames[0].K[0, 0]
    assert win.intrinsics[0, 0, 0] == pytest.approx(f_true, rel=0.06)
    assert win.intrinsics[0, 0, 2] == pytest.approx(239.5, abs=1.0)  # SIMPLE_RADIAL keeps the centre


def test_errors(sample):
    frames, _ = sample
    b = ColmapBackend()
    with pytest.raises(BackendError, match="before any window"):
        b.localize([frames[0]])
    with pytest.raises(BackendError, match=">= 2 anchors"):
        b.reconstruct_window(0, [frames[0]])
    small = Frame(frames[1].stamp_ns, frames[1].image[:200, :300].copy(), None, index=1)
    with pytest.raises(BackendError, match="image size"):
        b.reconstruct_window(0, [frames[0], small])
    rng = np.random.default_rng(1)
    noise = [Frame(i, rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), index=i) for i in range(3)]
    with pytest.raises(BackendError):
        b.reconstruct_window(0, noise)
    b.reset()
    with pytest.raises(BackendError):
        b.localize([frames[0]])


def test_anchor_first_octave_is_a_speed_option(sample, window):
    """anchor_first_octave=0 (no upsampled SIFT octave for anchors) reconstructs the same anchors from
    fewer 3D points than the default -1 (measured about half)."""
    frames, _ = sample
    _, win_default = window
    win = ColmapBackend(seed=1, anchor_first_octave=0).reconstruct_window(0, [frames[i] for i in ANCHORS])
    assert win.num_frames == len(ANCHORS)
    assert 10 <= len(win.sparse_points) < len(win_default.sparse_points)


def test_options_come_from_one_config():
    """ColmapBackend(config=None, **options): options are ColmapBackendConfig fields; an unknown option or a
    bad value is a clear error, not ignored."""
    from selfi_ros.backends import backend_config_class
    from selfi_ros.backends.config import BackendConfigError, ColmapBackendConfig

    assert backend_config_class("colmap") is ColmapBackendConfig and backend_config_class("oracle") is None
    with pytest.raises(ValueError, match="unknown backend"):
        backend_config_class("nerf")
    b = make_backend("colmap", ColmapBackendConfig(max_num_features=512), min_inliers=9)
    assert (b.config.max_num_features, b.config.min_inliers, b.work_dir) == (512, 9, None)
    assert ColmapBackend(min_inliers="12").min_inliers == 12  # cast to the field's type
    with pytest.raises(BackendConfigError, match="unknown option.*max_features.*options: "):
        ColmapBackend(max_features=100)
    with pytest.raises(BackendConfigError, match="ratio"):
        ColmapBackend(ratio=1.5)
    with pytest.raises(BackendConfigError, match="min_inliers=.*not a int"):
        make_backend("colmap", min_inliers="many")

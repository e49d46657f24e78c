"""`selfi-ros reconstruct` on image folders and bags (colmap backend, real sample images): output files,
stamps, cameras.json consistency with the trajectory, and accuracy against the ground truth."""
import json
import os

import cv2
import numpy as np
import pytest

from selfi_ros.cli import main
from selfi_ros.data import CAMERA_INFO_TOPIC, IMAGE_TOPIC, SAMPLE_BAG, SAMPLE_GT_TUM
from selfi_ros.engine.io import read_ply, read_tum, write_tum
from selfi_ros.engine.types import PoseEstimate
from selfi_ros.apps.evaluate import evaluate
from selfi_ros.apps.reconstruct import frames_from_bag, frames_from_folder

# 12 wide-baseline frames (every 2nd of the sample); the default window_size (6). One COLMAP thread makes the
# run deterministic (its multi-threaded mapper is not). With window_size 4 the same frames need 9 chained
# windows and drift to ATE ~0.10 (known limit: no loop closure / global optimisation across windows).
ENGINE_ARGS = ["--keyframe-min-flow-px", "3", "--window-size", "6", "--backend-option", "num_threads=1"]


@pytest.fixture(scope="module")
def sample_frames():
    return list(frames_from_bag(SAMPLE_BAG))


def _check_cameras_match_trajectory(out, K, names=None):
    stamps, T = read_tum(os.path.join(out, "trajectory.tum"))
    cams = json.load(open(os.path.join(out, "cameras.json")))["frames"]
    assert len(cams) == len(stamps) > 0
    by_stamp = dict(zip(stamps.tolist(), T))
    for c in cams:
        E = np.array(c["extrinsics"])
        assert E.shape == (3, 4)
        T_map_cam = by_stamp[c["stamp_ns"]]
        np.testing.assert_allclose(E, np.linalg.inv(T_map_cam)[:3, :], atol=1e-6)  # camera-from-world
        np.testing.assert_allclose(np.array(c["intrinsics"]), K, atol=1e-6)
        assert (c["width"], c["height"]) == (480, 360)
        assert c["timestamp"] == pytest.approx(c["stamp_ns"] * 1e-9)
        if names is not None:
            assert c["image"] == names[c["frame_index"]]
    return stamps, T


def test_folder(tmp_path, sample_frames):
    src = sample_frames[0:24:2]
    d = tmp_path / "imgs"
    d.mkdir()
    names = [f"view_{k:03d}.png" for k in range(len(src))]
    for k in reversed(range(len(src))):  # creation order must not matter, only sorted names
        cv2.imwrite(str(d / names[k]), src[k].image[:, :, ::-1])
    (d / "notes.txt").write_text("not an image")
    K = src[0].K
    out = tmp_path / "out"
    rc = main(["reconstruct", "--images", str(d), "--out", str(out), "--fx", str(K[0, 0]), "--fy", str(K[1, 1]),
               "--cx", str(K[0, 2]), "--cy", str(K[1, 2])] + ENGINE_ARGS)
    assert rc == 0
    for f in ("trajectory.tum", "map.ply", "cameras.json", "metadata.json", "summary.json"):
        assert (out / f).exists()
    stamps, T = _check_cameras_match_trajectory(str(out), K, names)
    # folder stamps: frame index in seconds
    assert set((stamps // 10**9).tolist()) <= set(range(len(src))) and np.all(stamps % 10**9 == 0)
    assert len(stamps) >= len(src) - 2
    # accuracy: ground truth of the same frames re-stamped with their folder index
    gt_s, gt_T = read_tum(SAMPLE_GT_TUM)
    gt = dict(zip(gt_s.tolist(), gt_T))
    write_tum(str(tmp_path / "gt.tum"), [PoseEstimate(k * 10**9, gt[f.stamp_ns]) for k, f in enumerate(src)])
    res = evaluate(str(out / "trajectory.tum"), str(tmp_path / "gt.tum"))
    # bound: 1% of the ~10 unit camera-to-scene distance (measured 0.027, deterministic with one thread)
    assert res.ate_rmse < 0.1
    pts, cols = read_ply(str(out / "map.ply"))
    assert len(pts) > 100 and cols is not None


def test_bag(tmp_path):
    from selfi_ros.ros.bag import BagWriter, read_messages

    bag = str(tmp_path / "short.mcap")
    n = 0
    with BagWriter(bag) as w:
        for m in read_messages(SAMPLE_BAG, topics=[IMAGE_TOPIC, CAMERA_INFO_TOPIC]):
            if m.log_time_ns >= 1_763_000_000 * 10**9 + 24 * 200_000_000:
                break
            w.write(m.topic, m.message, m.log_time_ns)
            n += m.topic == IMAGE_TOPIC
    assert n == 24
    out = tmp_path / "out"
    assert main(["reconstruct", "--bag", bag, "--out", str(out), "--keyframe-min-flow-px", "5", "--window-size", "5",
                 "--backend-option", "num_threads=1"]) == 0
    frames = list(frames_from_bag(bag))
    stamps, _ = _check_cameras_match_trajectory(str(out), frames[0].K)
    assert set(stamps.tolist()) <= {f.stamp_ns for f in frames}  # stamps are the image header stamps
    assert len(stamps) >= 20
    res = evaluate(str(out / "trajectory.tum"), SAMPLE_GT_TUM)
    assert res.ate_rmse < 0.1  # same bound as above; path length about 8 units
    summary = json.load(open(out / "summary.json"))
    assert summary["frames"] == 24 and summary["backend"] == "colmap" and summary["random_weights"] is False


def test_frame_sources(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("b.png", "a.jpg", "c.txt"):
        if name.endswith("txt"):
            (d / name).write_text("x")
        else:
            cv2.imwrite(str(d / name), np.full((8, 10, 3), 100, np.uint8))
    (d / "z.png").write_bytes(b"not a png")  # unreadable: skipped, not indexed
    frames = list(frames_from_folder(str(d), rate_hz=2.0))
    assert [f.source for f in frames] == ["a.jpg", "b.png"]
    assert [f.index for f in frames] == [0, 1] and [f.stamp_ns for f in frames] == [0, 500_000_000]
    assert frames[0].K is None and frames[0].image.shape == (8, 10, 3)
    with pytest.raises(FileNotFoundError):
        list(frames_from_folder(str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        list(frames_from_folder(str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="not in bag"):
        list(frames_from_bag(SAMPLE_BAG, image_topic="/nope"))
    with pytest.raises(SystemExit):
        main(["reconstruct", "--images", str(d), "--out", str(tmp_path / "o"), "--fx", "100"])
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        main(["reconstruct", "--backend-option", "num_threads", "--images", str(d), "--out", str(tmp_path / "o")])


# ------------------------------------------------------------------ the real sample (TUM RGB-D fr1_rpy)
def _tum_folder_from_sample(root):
    """The committed real sample back in TUM's layout (rgb/<stamp>.jpg with the bag's JPEG bytes, rgb.txt,
    camera_info.yaml and groundtruth.txt)."""
    from selfi_ros.data import TUM_SAMPLE_BAG
    from selfi_ros.ros.bag import read_messages
    from selfi_ros_testing import tum_folder_from_messages

    return tum_folder_from_messages(root, read_messages(TUM_SAMPLE_BAG, topics=["/camera/image_raw/compressed"]))


#: bounds of the real-sample test, from measured runs of exactly its command (one COLMAP thread: the runs
#: repeat bit for bit here; 60 frames at 5 Hz; figures in the docstring below)
MIN_POSED = 30  # measured 42 and 55 of 60: 0.7x the lower
BOUND_RPE_ROT_MEDIAN_DEG = 2.0  # measured 0.97 deg: 2x, and a third of the constant estimate's 11 deg
BOUND_ATE_OVER_CONSTANT = 0.95  # measured ATE / constant-estimate ATE: 0.60 and 0.81 (two backend versions)


def test_real_sample_reconstruct_tum_accuracy(tmp_path, capsys):
    """`reconstruct --tum --every 2` on the committed real sample (60 of its 120 distorted frames, 5 Hz,
    rectified with the folder's camera_info.yaml, ground truth found beside), deterministic with one COLMAP
    thread. Measured with the colmap backend of 0065438: 42 of 60 frames posed, 5 windows, no map
    discontinuity, ATE 0.0275 m (constant estimate 0.046 m), rotation RPE median 0.97 deg per step; with that
    of 0604c3f and of 1882a41 (3 runs, identical): 55 posed, 7 windows, ATE 0.037 m (0.046 m), median 0.85 deg,
    about 22 s.

    Why these bounds: fr1_rpy mostly rotates about the optical centre (positions within 4.6 cm of their
    mean over the span), and a Sim(3) with free scale can always shrink an estimate towards a point: an ATE
    bound of 2x the measured 0.0275 m would be above what a CONSTANT estimate gets (0.046 m) and test nothing.
    So the ATE is bounded relative to the constant estimate (BOUND_ATE_OVER_CONSTANT: it catches an estimate
    that says nothing about the positions; measured ratios 0.60 / 0.81), and the rotations, which carry the sequence's information, by 2x the measured median per-step error
    (also at most a third of the ground truth's own rotation per step). Every 2nd frame: at the sample's
    10 Hz the windows' baselines are too short (31 failed window attempts, ATE no better than constant);
    every 6th frame of the full sequence gives 3.5 cm against 6.4 cm (benchmarks/bench_tum.py)."""
    from selfi_ros.data.camera_model import CameraModel, Rectifier

    src = _tum_folder_from_sample(tmp_path / "seq")
    out = tmp_path / "out"
    rc = main(["reconstruct", "--tum", str(src), "--every", "2", "--out", str(out), "--backend-option", "num_threads=1"])
    text = capsys.readouterr().out
    assert rc == 0
    s = json.load(open(out / "summary.json"))
    print(text, {k: v for k, v in s.items() if k not in ("status", "outputs")})
    assert "ATE RMSE" in text and f"frames {s['frames']}" in text
    assert s["frames"] == 60 and s["groundtruth"].endswith("groundtruth.txt")
    K_rect = Rectifier(CameraModel.from_yaml(str(src / "camera_info.yaml"))).K_rect
    cams = json.load(open(out / "cameras.json"))["frames"]
    assert cams and all(np.allclose(c["intrinsics"], K_rect, rtol=1e-9) for c in cams)
    assert s["poses"] >= MIN_POSED
    assert s["rpe_rot_median_deg"] < BOUND_RPE_ROT_MEDIAN_DEG < s["rpe_rot_trivial_deg"] / 3
    assert s["ate_rmse"] < BOUND_ATE_OVER_CONSTANT * s["ate_trivial"]
    assert s["map_segments"] <= 1  # measured 0


def test_tum_and_bag_give_the_same_frames(tmp_path):
    """The two roads into the engine agree on the real sample: `--tum` (files + camera_info.yaml through
    data.camera_model.Rectifier) and `--bag` (the node's input code with the bag's CameraInfo) give the same
    stamps, the same rectified intrinsics and the same rectified pixels."""
    from selfi_ros.apps.reconstruct import camera_from_yaml
    from selfi_ros.data import TUM_SAMPLE_BAG
    from selfi_ros.data.tum import TumSequence, frames_from_tum

    src = _tum_folder_from_sample(tmp_path / "seq")
    seq = TumSequence.open(str(src))
    K, rect = camera_from_yaml(seq.camera_yaml)
    a = list(frames_from_tum(seq.images[:5], K=K, rectify=rect))
    b = list(frames_from_bag(TUM_SAMPLE_BAG))[:5]
    assert [f.stamp_ns for f in a] == [f.stamp_ns for f in b]
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.K, fb.K, rtol=1e-12)
        np.testing.assert_array_equal(fa.image, fb.image)
    K_raw, none = camera_from_yaml(seq.camera_yaml, rectify=False)  # --no-rectify: the lens is ignored
    assert none is None and np.allclose(K_raw, [[517.306408, 0, 318.643040], [0, 516.469215, 255.313989], [0, 0, 1]])
    raw = next(frames_from_tum(seq.images[:1], K=K_raw))
    assert np.abs(raw.image.astype(float) - a[0].image.astype(float)).mean() > 5.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_width: 640\n")
    with pytest.raises(SystemExit, match="bad.yaml"):
        camera_from_yaml(str(bad))
    with pytest.raises(SystemExit, match="exclude"):
        main(["reconstruct", "--tum", str(src), "--out", str(tmp_path / "o"), "--camera-info", str(bad),
              "--fx", "1", "--fy", "1", "--cx", "1", "--cy", "1"])


def test_progress_bar_only_on_a_terminal(monkeypatch):
    import io
    import sys

    from selfi_ros.apps.reconstruct import _progress_bar, format_summary

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert _progress_bar(10, True) is None  # not a terminal (CI logs, pipes): no bar
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert _progress_bar(10, False) is None  # --quiet
    bar = _progress_bar(10, True)
    bar.update(3)
    bar.set_postfix_str("keyframes 2, windows 1, posed 3")
    bar.close()
    assert "3/10" in tty.getvalue() and "frame/s" in tty.getvalue() and "windows 1" in tty.getvalue()
    line = format_summary({"frames": 9, "rejected": 0, "poses": 7, "keyframes": 5, "windows": 2, "window_failures": 1,
                           "map_segments": 0, "run_time_s": 3.0, "frames_per_s": 3.0, "backend": "colmap",
                           "outputs": {"trajectory": "/o/trajectory.tum"}, "ate_rmse": 0.01, "ate_matched": 7,
                           "ate_trivial": 0.05, "gt_path_length": 1.0, "groundtruth": "gt.txt",
                           "rpe_rot_median_deg": 0.5, "rpe_rot_rmse_deg": 1.0, "rpe_rot_trivial_deg": 6.0})
    assert "frames 9" in line and "posed 7" in line and "windows 2" in line and "map segments 0" in line
    assert "ATE RMSE" in line and "0.01" in line and "outputs in /o" in line


def test_map_saved_then_localization_only(tmp_path, capsys):
    """`--out OUT` writes the reusable map to OUT/map (Engine.save via save_map); `--map OUT/map
    --localization-only` loads it and only localizes (no keyframes, no windows), its poses in the saved map's
    frame: they agree with the first run's poses of the same frames. A missing or broken map is refused with
    one line and exit 2."""
    from selfi_ros.ros.bag import BagWriter, read_messages

    bag = str(tmp_path / "short.mcap")
    with BagWriter(bag) as w:
        for m in read_messages(SAMPLE_BAG, topics=[IMAGE_TOPIC, CAMERA_INFO_TOPIC]):
            if m.log_time_ns < 1_763_000_000 * 10**9 + 24 * 200_000_000:
                w.write(m.topic, m.message, m.log_time_ns)
    first = tmp_path / "first"
    assert main(["reconstruct", "--bag", bag, "--out", str(first), "--keyframe-min-flow-px", "5", "--window-size", "5",
                 "--backend-option", "num_threads=1", "--quiet"]) == 0
    assert (first / "map").is_dir()
    again = tmp_path / "again"
    rc = main(["reconstruct", "--bag", bag, "--out", str(again), "--map", str(first / "map"), "--localization-only",
               "--backend-option", "num_threads=1"])
    text = capsys.readouterr().out
    assert rc == 0 and "localization only" in text
    s = json.load(open(again / "summary.json"))
    assert s["localization_only"] is True and s["windows"] == 0 and s["keyframes"] == 0
    s1, T1 = read_tum(str(first / "trajectory.tum"))
    s2, T2 = read_tum(str(again / "trajectory.tum"))
    common = sorted(set(s1.tolist()) & set(s2.tolist()))
    assert len(common) >= 12
    a = {k: T for k, T in zip(s1.tolist(), T1)}
    b = {k: T for k, T in zip(s2.tolist(), T2)}
    C1 = np.array([a[k][:3, 3] for k in common])
    C2 = np.array([b[k][:3, 3] for k in common])
    extent = np.linalg.norm(C1.max(0) - C1.min(0))
    assert np.median(np.linalg.norm(C1 - C2, axis=1)) < 0.02 * extent  # same frame, no Sim(3) needed
    bad = tmp_path / "not_a_map"
    bad.mkdir()
    assert main(["reconstruct", "--bag", bag, "--out", str(tmp_path / "o"), "--map", str(bad),
                 "--localization-only", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot load the map" in err[0]
    with pytest.raises(SystemExit, match="needs --map"):
        main(["reconstruct", "--bag", bag, "--out", str(tmp_path / "o"), "--localization-only"])


def test_camera_info_yaml_rectifies_folder_and_bag_frames(tmp_path):
    """`--camera-info FILE.yaml` on an image folder or a bag (replacing its CameraInfo): every frame is the
    Rectifier's image with its K_rect (the lens undone as in the node)."""
    from selfi_ros.apps.reconstruct import _rectified, camera_from_yaml
    from selfi_ros.data import TUM_SAMPLE_BAG, TUM_SAMPLE_CAMERA_YAML
    from selfi_ros.data.camera_model import CameraModel, Rectifier
    from selfi_ros.ros.bag import read_messages
    from selfi_ros.ros.conversions import compressed_to_rgb8

    raw = [compressed_to_rgb8(m.message) for m, _ in zip(read_messages(TUM_SAMPLE_BAG, topics=[IMAGE_TOPIC]), range(3))]
    d = tmp_path / "imgs"
    d.mkdir()
    for k, img in enumerate(raw):
        cv2.imwrite(str(d / f"f{k}.png"), img[:, :, ::-1])
    K, rect = camera_from_yaml(TUM_SAMPLE_CAMERA_YAML)
    ref = Rectifier(CameraModel.from_yaml(TUM_SAMPLE_CAMERA_YAML))
    got = list(_rectified(frames_from_folder(str(d)), rect, K))
    assert len(got) == 3
    for f, img in zip(got, raw):
        np.testing.assert_array_equal(f.image, ref.rectify(img)[0])
        np.testing.assert_allclose(f.K, ref.K_rect, rtol=1e-12)
    bag_frames = list(_rectified(frames_from_bag(TUM_SAMPLE_BAG, use_camera_info=False), rect, K))[:3]
    for f, img in zip(bag_frames, raw):
        np.testing.assert_array_equal(f.image, ref.rectify(img)[0])

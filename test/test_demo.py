"""The demo end to end over DDS (node + recorder + player as separate processes, local discovery only)
on the sample bag (copied with its ground-truth topic) with the CPU colmap backend and the node's default
parameters, played at half its recorded rate: that is still faster than the node can process every frame
on this CPU, so frames are dropped/skipped (counted) and every processed frame must still get a pose; half
speed leaves a 2x margin for a loaded shared test machine (the demo's default rate 1.0 is measured in
benchmarks/results/demo.md: same accounting, ATE 0.058)."""
import json
import os

import numpy as np
import pytest

from selfi_ros.data import CAMERA_INFO_TOPIC, GT_TOPIC, IMAGE_TOPIC, SAMPLE_BAG
from selfi_ros.apps.demo import count_messages, format_summary, run_demo
from selfi_ros.engine.io import read_ply, read_tum
from selfi_ros.apps.evaluate import evaluate

N_FRAMES = 48


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from selfi_ros.ros.bag import BagWriter, read_messages

    d = tmp_path_factory.mktemp("demo")
    bag = str(d / "short.mcap")
    with BagWriter(bag) as w:
        for m in read_messages(SAMPLE_BAG, topics=[IMAGE_TOPIC, CAMERA_INFO_TOPIC, GT_TOPIC]):
            if m.log_time_ns < 1_763_000_000 * 10**9 + N_FRAMES * 200_000_000:
                w.write(m.topic, m.message, m.log_time_ns)
    out = str(d / "out")
    domain = 120 + os.getpid() % 80  # a domain of its own, so parallel runs do not see each other
    summary = run_demo(bag=bag, out_dir=out, rate=0.5, domain_id=domain, timeout_s=400, verbose=False)
    return bag, out, summary


def test_frames_arrive_and_outputs_exist(demo):
    bag, out, s = demo
    print(format_summary(s))
    assert s["images_in_bag"] == N_FRAMES == count_messages(bag, IMAGE_TOPIC)
    assert s["clean_stop"] is True
    assert s["frames_in"] >= N_FRAMES - 2  # loopback, best effort: (almost) nothing lost in transport
    # keyframes are not starved by the dropped frames (measured 19 at rate 0.5, 16 at rate 1.0)
    assert s["windows"] >= 3 and s["keyframes"] >= 10
    assert s["tf_messages"] > 0 and s["poses_received"] >= 10
    # accounting: every drop has a counted reason, and every processed frame has a pose on /tf unless its
    # localization failed (anchors and frames held for the first window get theirs when the window is made)
    assert s["frames_dropped"] == s["frames_dropped_queue_full"] + s["frames_skipped_under_load"]
    processed = s["frames_in"] - s["frames_dropped"] - s["frames_rejected"]
    assert processed - s["localization_failures"] <= s["poses_received"] <= processed
    assert s["window_failures"] is not None and s["map_segments"] is not None  # reported by the node
    assert s["cloud_messages"].get("/selfi_node/map_cloud", 0) >= 1
    assert s["cloud_messages"].get("/selfi_node/window_cloud", 0) >= 1
    for f in ("trajectory.tum", "map.ply", "plot.png", "summary.json"):
        assert os.path.getsize(os.path.join(out, f)) > 0
    assert json.load(open(os.path.join(out, "summary.json")))["poses_received"] == s["poses_received"]
    lat = s["latency_image_to_tf_ms"]
    assert lat["count"] > 0 and 0 < lat["p50_ms"] <= lat["p95_ms"]  # a pose never precedes its image


def test_tf_poses_are_image_stamped_and_accurate(demo):
    """map -> camera_optical_frame transforms carry image stamps and match the ground truth after Sim(3)
    alignment. Bound 0.3 scene units: 3% of the ~10 unit camera-to-box distance and 2% of the 16 unit path
    (measured demo runs: 0.046-0.063 at rates 0.25-1.0). What it catches is off by units: poses published
    with a wrong convention (inverted, or camera-from-map), or windows chained with a wrong Sim(3). A map
    discontinuity (windows that could not be chained; 2.4-3.2 in development runs when a new segment was
    placed at the last pose, ~0.14 with the constant-velocity placement in an offline model of the node
    run 2x slower) is checked by its counter."""
    bag, out, s = demo
    stamps, _ = read_tum(os.path.join(out, "trajectory.tum"))
    from selfi_ros.apps.reconstruct import frames_from_bag

    assert set(stamps.tolist()) <= {f.stamp_ns for f in frames_from_bag(bag)}
    assert s["groundtruth"] and s["groundtruth"].endswith("groundtruth.tum")  # taken from the bag's GT topic
    assert s["ate_rmse"] is not None and s["ate_rmse"] < 0.3
    assert s["map_segments"] == 0  # every window was chained into one map


def test_map_cloud_is_the_scene(demo):
    """After the trajectory's Sim(3) alignment, the map points lie around the box (the scene centre is
    near the map origin, the cameras about 10 units away), not around the cameras or at infinity."""
    _, out, s = demo
    pts, cols = read_ply(os.path.join(out, "map.ply"))
    assert len(pts) == s["map_points"] > 100 and cols is not None and cols.std() > 5
    assert np.all(np.isfinite(pts))
    res = evaluate(os.path.join(out, "trajectory.tum"), s["groundtruth"])
    P = res.scale * pts.astype(np.float64) @ np.array(res.rotation).T + np.array(res.translation)
    d = np.linalg.norm(P - np.array([0.0, 0.0, 1.0]), axis=1)
    assert np.median(d) < 5.0
    assert np.mean(P[:, 2] > -1.0) > 0.9  # above the floor (z = 0), up to noise


def test_recorder_in_process(tmp_path):
    """The recorder on its own: TF of the recorded frame pair only, the last transform per stamp kept,
    latency from the image's receive time to the first TF's, the latched map saved as PLY."""
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, PointCloud2
    from tf2_msgs.msg import TFMessage

    from selfi_ros.ros.conversions import points_to_pointcloud2, rgb8_to_compressed, tf_message, transform_stamped
    from selfi_ros.ros.recorder import Recorder, RecorderConfig

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=120 + (os.getpid() + 41) % 80)
    try:
        pub_node = rclpy.create_node("fake_selfi", context=ctx)
        rec_node = rclpy.create_node("rec", context=ctx)
        rec = Recorder(rec_node, RecorderConfig())
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(pub_node)
        ex.add_node(rec_node)
        p_img = pub_node.create_publisher(CompressedImage, IMAGE_TOPIC, 10)
        p_tf = pub_node.create_publisher(TFMessage, "/tf", 100)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        p_map = pub_node.create_publisher(PointCloud2, "/selfi_node/map_cloud", latched)

        def spin(seconds, until=lambda: False):
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end and not until():
                ex.spin_once(timeout_sec=0.02)

        spin(10.0, lambda: p_img.get_subscription_count() > 0 and p_tf.get_subscription_count() > 0
             and p_map.get_subscription_count() > 0)
        stamps = [1_000_000_000 * k for k in (5, 6)]
        img = np.full((8, 8, 3), 128, np.uint8)
        T1 = np.eye(4)
        T1[:3, 3] = [1.0, 2.0, 3.0]
        T2 = np.eye(4)
        T2[:3, 3] = [1.5, 2.0, 3.0]
        for s in stamps:
            p_img.publish(rgb8_to_compressed(img, s, "camera_optical_frame"))
        spin(0.3, lambda: len(rec.progress()["counts"]) and rec.progress()["images"] == 2)
        time.sleep(0.1)  # the "node" takes at least 100 ms
        p_tf.publish(tf_message([transform_stamped(T1, "map", "camera_optical_frame", stamps[0]),
                                 transform_stamped(T1, "odom", "base_link", stamps[0])]))
        spin(0.3)
        p_tf.publish(tf_message([transform_stamped(T2, "map", "camera_optical_frame", stamps[0])]))  # refined
        pts = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
        p_map.publish(points_to_pointcloud2(pts, np.full((50, 3), 7, np.uint8), stamps[0], "map"))
        spin(5.0, lambda: rec.progress()["map_points"] == 50 and rec.progress()["counts"].get("/tf", 0) == 2)
        summary = rec.save(str(tmp_path))
    finally:
        ex.shutdown()
        rclpy.shutdown(context=ctx)
    assert summary["images_seen"] == 2 and summary["poses"] == 1  # stamps[1] never got a pose
    assert summary["tf_other_frames"] == ["odom->base_link"]
    s, T = read_tum(str(tmp_path / "trajectory.tum"))
    assert list(s) == [stamps[0]]
    np.testing.assert_allclose(T[0], T2, atol=1e-9)  # the refined transform replaces the first
    lat = summary["latency_image_to_tf"]
    assert lat["count"] == 1 and lat["p50_ms"] >= 100.0  # from the image's receive time to the first TF
    assert summary["latency_stamp_to_tf"]["count"] == 0
    assert summary["latency_image_to_tf_after_first_pose"]["count"] == 0  # its image came before any pose
    P, C = read_ply(str(tmp_path / "map.ply"))
    np.testing.assert_allclose(P, pts, atol=1e-6)
    assert np.all(C == 7)


def test_demo_exit_status(monkeypatch, capsys):
    """`selfi-ros demo` exits 1 when no pose or no cloud arrived, 0 when both did."""
    import argparse

    import selfi_ros.apps.demo as demo_mod

    base = {"frames_in": 0, "images_in_bag": 48, "frames_dropped": 0, "frames_rejected": 0,
            "frames_lost_in_transport": 48, "keyframes": 0, "windows": 0, "poses_received": 0, "map_points": 0,
            "latency_image_to_tf_ms": {"count": 0, "p50_ms": None, "p95_ms": None}, "ate_rmse": None,
            "gt_path_length": None, "rpe_trans_rmse": None, "rpe_rot_rmse_deg": None, "run_time_s": 1.0,
            "play_time_s": 1.0, "processing_time_s": 1.0, "clean_stop": True,
            "outputs": {"summary": "/tmp/x/summary.json"}}
    p = argparse.ArgumentParser()
    demo_mod.add_arguments(p)
    args = p.parse_args([])
    monkeypatch.setattr(demo_mod, "run_demo", lambda *a, **k: dict(base))
    assert demo_mod.run(args) == 1
    assert "FAILED" in capsys.readouterr().err
    monkeypatch.setattr(demo_mod, "run_demo", lambda *a, **k: dict(base, poses_received=5, map_points=9))
    assert demo_mod.run(args) == 0


def test_demo_plays_the_real_sample_by_default(tmp_path):
    """`selfi-ros demo` (and `make demo`) defaults to the real TUM sample at its slowed rate, with the ground
    truth beside it; `--sample woodbox` gives the rendered one at its recorded rate; `--bag` any bag, whose
    ground truth is <stem>_groundtruth.txt beside it."""
    import argparse

    import selfi_ros.apps.demo as demo_mod
    from selfi_ros.data import SAMPLE_GT_TUM, TUM_SAMPLE_BAG, TUM_SAMPLE_GT

    p = argparse.ArgumentParser()
    demo_mod.add_arguments(p)
    a = p.parse_args([])
    assert demo_mod.resolve_sample(a.sample, a.bag, a.rate) == (TUM_SAMPLE_BAG, demo_mod.SAMPLE_RATES["tum_fr1_rpy"])
    assert demo_mod.default_groundtruth(TUM_SAMPLE_BAG, str(tmp_path)) == TUM_SAMPLE_GT
    a = p.parse_args(["--sample", "woodbox"])
    assert demo_mod.resolve_sample(a.sample, a.bag, a.rate) == (SAMPLE_BAG, 1.0)
    assert demo_mod.default_groundtruth(SAMPLE_BAG, str(tmp_path)) == SAMPLE_GT_TUM
    a = p.parse_args(["--bag", str(tmp_path / "x.mcap"), "--rate", "0.5"])
    assert demo_mod.resolve_sample(a.sample, a.bag, a.rate) == (str(tmp_path / "x.mcap"), 0.5)
    import shutil

    shutil.copyfile(TUM_SAMPLE_BAG, tmp_path / "copy.mcap")
    shutil.copyfile(TUM_SAMPLE_GT, tmp_path / "copy_groundtruth.txt")
    assert demo_mod.default_groundtruth(str(tmp_path / "copy.mcap"), str(tmp_path)) == str(
        tmp_path / "copy_groundtruth.txt")
    with pytest.raises(ValueError, match="rate"):
        demo_mod.resolve_sample(rate=0.0)
    with pytest.raises(SystemExit):
        p.parse_args(["--sample", "nope"])


def test_demo_on_a_real_excerpt(tmp_path):
    """The demo's pipeline over DDS on the first 4 s of the real sample (40 distorted frames, CameraInfo with
    plumb_bob D: the node rectifies) at the default real-sample rate: every frame arrives, drops are counted,
    poses come, and the per-step rotations are right where the positions of a rotating hand-held camera say
    little (see test_reconstruct_cli's real-sample test). Bounds: measured on this excerpt at rate 0.1, 37 of 40
    frames posed, rotation RPE median 1.0 deg against 8.0 deg for a constant estimate; on the whole sample at
    the default 0.5, 77 of 120 posed, 0.82 deg against 9.2 deg."""
    from selfi_ros.apps.demo import SAMPLE_RATES
    from selfi_ros.data import TUM_SAMPLE_BAG, TUM_SAMPLE_GT
    from selfi_ros.ros.bag import BagWriter, read_messages

    bag = str(tmp_path / "excerpt.mcap")
    n = 0
    with BagWriter(bag) as w:
        for m in read_messages(TUM_SAMPLE_BAG):  # CameraInfo, then its image, 40 times
            if n == 40:
                break
            w.write(m.topic, m.message, m.log_time_ns)
            n += m.topic == IMAGE_TOPIC
    assert n == 40
    domain = 120 + (os.getpid() + 17) % 80
    s = run_demo(bag=bag, out_dir=str(tmp_path / "out"), gt=TUM_SAMPLE_GT, rate=SAMPLE_RATES["tum_fr1_rpy"],
                 domain_id=domain, timeout_s=400, verbose=False)
    print(format_summary(s))
    assert s["clean_stop"] is True and s["frames_in"] >= n - 2 and s["frames_rejected"] == 0
    assert s["frames_dropped"] == (s["frames_dropped_queue_full"] + s["frames_skipped_under_load"]
                                   + s["frames_dropped_out_of_order"])
    assert s["poses_received"] >= 8 and s["windows"] >= 1
    assert s["rpe_rot_median_deg"] is not None and s["rpe_rot_median_deg"] < s["rpe_rot_trivial_deg"] / 3

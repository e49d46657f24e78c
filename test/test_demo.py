"""The demo end to end over DDS (node + recorder + player as separate processes, local discovery only)
on the first 32 frames of the sample bag, with the CPU colmap backend."""
import json
import os

import numpy as np
import pytest

from selfi_ros.data import CAMERA_INFO_TOPIC, GT_TOPIC, IMAGE_TOPIC, SAMPLE_BAG
from selfi_ros.demo import count_messages, format_summary, run_demo
from selfi_ros.engine.io import read_ply, read_tum
from selfi_ros.evaluation import evaluate

N_FRAMES = 32


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
    summary = run_demo(bag=bag, out_dir=out, rate=0.25, domain_id=domain, timeout_s=400, verbose=False)
    return bag, out, summary


def test_frames_arrive_and_outputs_exist(demo):
    bag, out, s = demo
    print(format_summary(s))
    assert s["images_in_bag"] == N_FRAMES == count_messages(bag, IMAGE_TOPIC)
    assert s["clean_stop"] is True
    assert s["frames_in"] >= N_FRAMES - 2  # loopback, best effort: (almost) nothing lost in transport
    assert s["windows"] >= 1 and s["keyframes"] >= 6
    assert s["tf_messages"] > 0 and s["poses_received"] >= N_FRAMES // 2
    assert s["cloud_messages"].get("/selfi_node/map_cloud", 0) >= 1
    assert s["cloud_messages"].get("/selfi_node/window_cloud", 0) >= 1
    for f in ("trajectory.tum", "map.ply", "plot.png", "summary.json"):
        assert os.path.getsize(os.path.join(out, f)) > 0
    assert json.load(open(os.path.join(out, "summary.json")))["poses_received"] == s["poses_received"]
    lat = s["latency_image_to_tf_ms"]
    assert lat["count"] > 0 and 0 < lat["p50_ms"] <= lat["p95_ms"]  # a pose never precedes its image


def test_tf_poses_are_image_stamped_and_accurate(demo):
    """map -> camera_optical_frame transforms carry image stamps and match the ground truth after Sim(3)
    alignment. Bound 0.3 scene units: 3% of the ~10 unit camera-to-box distance (measured runs give
    0.03-0.06); poses published with a wrong convention (inverted, or camera-from-map) are off by units."""
    bag, out, s = demo
    stamps, _ = read_tum(os.path.join(out, "trajectory.tum"))
    from selfi_ros.reconstruct import frames_from_bag

    assert set(stamps.tolist()) <= {f.stamp_ns for f in frames_from_bag(bag)}
    assert s["groundtruth"] and s["groundtruth"].endswith("groundtruth.tum")  # taken from the bag's GT topic
    assert s["ate_rmse"] is not None and s["ate_rmse"] < 0.3


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

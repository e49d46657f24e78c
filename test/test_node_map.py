"""``~/save_map`` -> ``~/load_map`` and ``map_path`` over DDS with a backend that keeps window memories (colmap,
on frames of the bundled sample bag): the reusable map lands in ``<path>/map`` next to the node's outputs and
the ROS map anchor, ``~/load_map`` of that folder succeeds, and a second node started with ``map_path`` loads
it (no exit 2) and keeps running. Nodes in their own processes, inputs and service calls from this one.
"""
import time

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("pycolmap")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_interfaces.sh)")
status_mod = pytest.importorskip("selfi_ros.msg", reason="selfi_ros interfaces not built (scripts/build_interfaces.sh)")
srv = pytest.importorskip("selfi_ros.srv", reason="selfi_ros interfaces not built (scripts/build_interfaces.sh)")

from sensor_msgs.msg import CameraInfo, CompressedImage  # noqa: E402

from selfi_ros.data import SAMPLE_BAG  # noqa: E402
from selfi_ros_testing import NodeProcess, RosClient, free_domain_id, publish_bag_images  # noqa: E402

PARAMS = dict(backend="colmap", image_transport="compressed", qos="reliable", window_size=4, window_overlap=2,
              window_max_keyframes=4, keyframe_max_interval_s=0.4, keyframe_min_interval_s=0.0, num_threads=1,
              status_period_s=0.5, tf_static_timeout_s=0.2)


def _request(c, srv_type, name, node, timeout=120.0, **fields):
    cli = c.node.create_client(srv_type, name)
    assert c.wait_for(lambda: cli.service_is_ready(), 30, node), f"service {name} not available"
    fut = cli.call_async(srv_type.Request(**fields))
    assert c.wait_for(lambda: fut.done(), timeout, node), f"{name} did not answer"
    return fut.result()


def test_save_map_then_load_map_and_map_path(tmp_path):
    d = free_domain_id()
    node = NodeProcess(d, PARAMS, str(tmp_path / "node.log"))
    c = RosClient(d)
    saved = tmp_path / "saved"
    try:
        c.record(status_mod.SelfiStatus, "/selfi_node/status")
        pi = c.publisher(CompressedImage, "/camera/image_raw/compressed")
        pc = c.publisher(CameraInfo, "/camera/camera_info")
        assert c.wait_subscribers(pi, timeout=60, node=node) and c.wait_subscribers(pc, node=node), node.log()[-2000:]
        c.wait_for(lambda: False, 0.5)
        publish_bag_images(c, pi, pc, SAMPLE_BAG, 16)
        assert c.wait_for(lambda: any(s.windows >= 2 for s in c.get("/selfi_node/status")), 240, node), \
            node.log()[-3000:]
        r = _request(c, srv.SaveMap, "/selfi_node/save_map", node, path=str(saved))
        assert r.success and r.path == str(saved), r.message
        assert "reusable map in map/" in r.message, r.message
        for f in ("map.ply", "trajectory.tum", "ros_map_frame.json", "map/metadata.json", "map/windows.json"):
            assert (saved / f).is_file(), f
        r = _request(c, srv.LoadMap, "/selfi_node/load_map", node, path=str(saved))
        assert r.success and r.message == f"loaded {saved / 'map'}", r.message
        r = _request(c, srv.LoadMap, "/selfi_node/load_map", node, path=str(tmp_path / "nothing"))
        assert not r.success and "no such folder" in r.message, r.message
        assert node.alive()
    finally:
        c.close()
        assert node.stop() == 0, node.log()[-3000:]

    second = NodeProcess(free_domain_id(), {**PARAMS, "map_path": str(saved)}, str(tmp_path / "node2.log"))
    try:
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end and second.alive() and "map_path: loaded" not in second.log():
            time.sleep(0.2)
        assert "map_path: loaded" in second.log() and second.alive(), second.log()[-3000:]
        time.sleep(1.0)
        assert second.alive(), second.log()[-3000:]
    finally:
        assert second.stop() == 0, second.log()[-3000:]
    assert "Traceback" not in second.log()

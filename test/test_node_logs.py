"""selfi_node's log volume: a few lines per window at most. The node runs the colmap backend (the default,
whose COLMAP/glog INFO log once made up 41,005 of 41,375 lines of a 10-minute run) on frames of the bundled
sample bag published over DDS by this process; every line the node process writes (stdout and stderr: rclpy
log lines, COLMAP's glog, libjpeg warnings) after its start-up line is counted against the windows it built.
"""
import re

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("pycolmap")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_interfaces.sh)")
status_mod = pytest.importorskip("selfi_ros.msg", reason="selfi_ros interfaces not built (scripts/build_interfaces.sh)")

from sensor_msgs.msg import CameraInfo, CompressedImage  # noqa: E402

from selfi_ros.data import SAMPLE_BAG  # noqa: E402
from selfi_ros_testing import NodeProcess, RosClient, free_domain_id, publish_bag_images  # noqa: E402

#: node log lines allowed per window built, and once (start-up, TF mode, shutdown)
LINES_PER_WINDOW = 3
LINES_ONCE = 6


def test_node_logs_a_few_lines_per_window(tmp_path):
    d = free_domain_id()
    params = dict(backend="colmap", image_transport="compressed", qos="reliable", window_size=4, window_overlap=2,
                  window_max_keyframes=4, keyframe_max_interval_s=0.4, keyframe_min_interval_s=0.0,
                  num_threads=1, status_period_s=0.5, tf_static_timeout_s=0.2)
    node = NodeProcess(d, params, str(tmp_path / "node.log"))
    c = RosClient(d)
    try:
        c.record(status_mod.SelfiStatus, "/selfi_node/status")
        pi = c.publisher(CompressedImage, "/camera/image_raw/compressed")
        pc = c.publisher(CameraInfo, "/camera/camera_info")
        assert c.wait_subscribers(pi, timeout=60, node=node) and c.wait_subscribers(pc, node=node), node.log()[-2000:]
        c.wait_for(lambda: False, 0.5)
        publish_bag_images(c, pi, pc, SAMPLE_BAG, 24)
        assert c.wait_for(lambda: any(s.windows >= 3 for s in c.get("/selfi_node/status")), 240, node), \
            node.log()[-3000:]
        c.wait_for(lambda: False, 1.0)
        windows = max(s.windows + s.window_failures for s in c.get("/selfi_node/status"))
    finally:
        c.close()
        rc = node.stop()
    log = node.log()
    lines = [ln for ln in log.splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if "selfi_node: backend=" in ln)
    after = lines[start + 1:]
    assert rc == 0, log[-3000:]
    assert not [ln for ln in after if re.match(r"^[IWEF]\d{4} ", ln) and ln.startswith("I")], log[-3000:]  # glog INFO
    assert len(after) <= LINES_PER_WINDOW * windows + LINES_ONCE, (windows, "\n".join(after[-60:]))

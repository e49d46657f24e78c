"""`selfi-ros play` in its own process publishes a bag's messages, byte-identical and in order, over DDS; Ctrl-C
(SIGINT) stops it with exit status 0 and no traceback; a context shut down under an in-process play ends it."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_interfaces.sh)")

from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from selfi_ros.ros.bag import BagWriter  # noqa: E402
from selfi_ros.ros.conversions import image_to_rgb8, stamp_to_ns, transform_stamped  # noqa: E402
from selfi_ros_testing import REPO, RosClient, free_domain_id, image_pair, ros_env  # noqa: E402

T0 = 3_000_000_000_000


def test_play_bag_over_dds(tmp_path):
    bag = str(tmp_path / "s.mcap")
    sent = []
    with BagWriter(bag) as w:
        w.write("/tf_static", tf2_msgs.TFMessage(transforms=[transform_stamped(np.eye(4), "base_link", "cam", T0)]), T0)
        for k in range(6):
            im, ci = image_pair(T0 + k * 50_000_000, seed=k)
            w.write("/camera/camera_info", ci, T0 + k * 50_000_000)
            w.write("/camera/image_raw", im, T0 + k * 50_000_000 + 1)
            sent.append(image_to_rgb8(im))
    d = free_domain_id()
    c = RosClient(d)
    try:
        c.record(Image, "/camera/image_raw")
        c.record(CameraInfo, "/camera/camera_info")
        c.record(tf2_msgs.TFMessage, "/tf_static", c.latched)
        c.record(Clock, "/clock")
        proc = subprocess.run([sys.executable, "-m", "selfi_ros.cli", "play", bag, "--rate", "2", "--clock",
                               "--wait-subscribers", "10", "--topics", "/camera/image_raw", "/camera/camera_info",
                               "/tf_static"], cwd=REPO, env=ros_env(d), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert "published 13 messages" in proc.stdout
        assert c.wait_for(lambda: len(c.get("/camera/image_raw")) == 6 and len(c.get("/tf_static")) == 1, 5)
        imgs = c.get("/camera/image_raw")
        assert [stamp_to_ns(m.header.stamp) for m in imgs] == [T0 + k * 50_000_000 for k in range(6)]
        for m, rgb in zip(imgs, sent):
            np.testing.assert_array_equal(image_to_rgb8(m), rgb)
        assert len(c.get("/camera/camera_info")) == 6
        clocks = [stamp_to_ns(m.clock) for m in c.get("/clock")]
        assert clocks and clocks == sorted(clocks) and T0 <= clocks[-1] <= T0 + 250_000_001
    finally:
        c.close()


SAMPLE_BAG = os.path.join(REPO, "data", "sample", "woodbox_orbit.mcap")


def test_play_stops_cleanly_on_sigint():
    d = free_domain_id()
    c = RosClient(d)
    try:
        c.record(CameraInfo, "/camera/camera_info")
        proc = subprocess.Popen([sys.executable, "-m", "selfi_ros.cli", "play", SAMPLE_BAG, "--loop",
                                 "--wait-subscribers", "10"], cwd=REPO, env=ros_env(d),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # playback is under way (not still importing) once a message arrived; then about 1 s more
            assert c.wait_for(lambda: len(c.get("/camera/camera_info")) >= 1, 30), "no message from the player"
            time.sleep(1.0)
            assert proc.poll() is None  # --loop: still playing
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, out + err
        assert "Traceback" not in out + err and "RCLError" not in out + err, out + err
        m = re.search(r"interrupted after (\d+) messages", out)
        assert m, out + err
        assert int(m.group(1)) >= len(c.get("/camera/camera_info")) >= 1  # it counts what it published
    finally:
        c.close()


def test_play_returns_when_its_context_is_shut_down():
    import rclpy

    from selfi_ros.ros.player import play

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=free_domain_id())
    node = rclpy.create_node("selfi_player_test", context=ctx)
    result = {}

    def target():
        try:
            result["count"] = play(SAMPLE_BAG, loop=True, wait_subscribers=0, quiet=True, node=node)
        except BaseException as e:  # noqa: BLE001 - the test reports it
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    time.sleep(1.5)
    assert t.is_alive()  # --loop: still playing
    rclpy.shutdown(context=ctx)
    t.join(10)
    assert not t.is_alive() and "error" not in result, result
    assert result["count"] >= 1  # ~12 messages/s recorded: some were published before the shutdown
    node.destroy_node()

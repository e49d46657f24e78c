"""`selfi-ros play` in its own process publishes a bag's messages, byte-identical and in order, over DDS."""
import subprocess
import sys

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


def test_play_ctrl_c_exits_0_with_a_count(tmp_path):
    """SIGINT to `selfi-ros play --loop` while it plays: exit status 0, 'interrupted after N messages', no
    traceback. Robust against a loaded machine: the signal is sent only after this process has received a
    message from the player (so the player is inside its playing loop), and every wait is generous."""
    import re
    import signal

    bag = str(tmp_path / "loop.mcap")
    with BagWriter(bag) as w:
        for k in range(20):
            im, ci = image_pair(T0 + k * 100_000_000, seed=k)
            w.write("/camera/camera_info", ci, T0 + k * 100_000_000)
            w.write("/camera/image_raw", im, T0 + k * 100_000_000 + 1)
    d = free_domain_id()
    c = RosClient(d)
    out_path, err_path = tmp_path / "play.out", tmp_path / "play.err"
    try:
        c.record(Image, "/camera/image_raw")
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "selfi_ros.cli", "play", bag, "--loop",
                                     "--wait-subscribers", "30"], cwd=REPO, env=ros_env(d), stdout=out, stderr=err)
            try:
                got = c.wait_for(lambda: len(c.get("/camera/image_raw")) >= 2 or proc.poll() is not None, 120)
                assert got and proc.poll() is None, (out_path.read_text(), err_path.read_text())
                proc.send_signal(signal.SIGINT)
                rc = proc.wait(120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        stdout, stderr = out_path.read_text(), err_path.read_text()
        assert rc == 0, stdout + stderr
        assert "Traceback" not in stderr + stdout and "RCLError" not in stderr, stderr
        m = re.search(r"interrupted after (\d+) messages", stdout)
        assert m, stdout
        assert int(m.group(1)) >= 2  # at least the images this process received
    finally:
        c.close()

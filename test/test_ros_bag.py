"""MCAP ROS 2 bag round trip (selfi_ros.ros.bag) checked against the independent mcap_ros2 decoder."""
import os

import numpy as np
import pytest

pytest.importorskip("rclpy")
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from selfi_ros.ros.bag import BagWriter, bag_topics, message_definition, read_messages  # noqa: E402


def _image(i):
    m = Image()
    m.header.stamp.sec = 10 + i
    m.header.stamp.nanosec = 5
    m.header.frame_id = "cam"
    m.height, m.width, m.encoding, m.step = 2, 3, "rgb8", 9
    m.data = bytes((np.arange(18) + i) % 256)
    return m


def test_bag_round_trip_and_independent_decoder(tmp_path):
    path = str(tmp_path / "b.mcap")
    with BagWriter(path) as bag:
        for i in range(3):
            bag.write("/img", _image(i), log_time_ns=(10 + i) * 10**9)
        ci = CameraInfo()
        ci.k = [500.0, 0, 1.5, 0, 500.0, 1.0, 0, 0, 1]
        bag.write("/ci", ci, log_time_ns=10 * 10**9 + 1)
    assert not os.path.exists(path + ".tmp")
    assert bag_topics(path) == {"/img": "sensor_msgs/msg/Image", "/ci": "sensor_msgs/msg/CameraInfo"}
    msgs = list(read_messages(path))
    assert [m.topic for m in msgs] == ["/img", "/ci", "/img", "/img"]
    assert msgs[1].message.k[0] == 500.0
    assert bytes(msgs[3].message.data) == bytes((np.arange(18) + 2) % 256)
    assert [m.log_time_ns for m in msgs if m.topic == "/img"] == [10**10, 11 * 10**9, 12 * 10**9]
    only = list(read_messages(path, topics=["/ci"], deserialize=False))
    assert len(only) == 1 and only[0].message is None and len(only[0].data) > 0

    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(path, "rb") as fh:
        dec = [(c.topic, m) for _, c, _, m in make_reader(fh, decoder_factories=[DecoderFactory()]).iter_decoded_messages()]
    imgs = [m for t, m in dec if t == "/img"]
    assert imgs[0].encoding == "rgb8" and imgs[0].width == 3 and imgs[2].header.stamp.sec == 12


def test_log_time_defaults_to_header_stamp(tmp_path):
    path = str(tmp_path / "h.mcap")
    with BagWriter(path) as bag:
        bag.write("/img", _image(1))
        with pytest.raises(ValueError, match="no header"):
            from std_msgs.msg import String

            bag.write("/s", String(data="x"))
    (m,) = read_messages(path)
    assert m.log_time_ns == 11 * 10**9 + 5


def test_message_definition_has_dependencies():
    text = message_definition("sensor_msgs/msg/CameraInfo")
    assert "MSG: std_msgs/msg/Header" in text and "MSG: builtin_interfaces/msg/Time" in text
    assert "MSG: sensor_msgs/msg/RegionOfInterest" in text
    assert text.count("MSG: std_msgs/msg/Header") == 1


def test_failed_write_leaves_no_bag(tmp_path):
    path = str(tmp_path / "c.mcap")
    with pytest.raises(RuntimeError):
        with BagWriter(path) as bag:
            bag.write("/img", _image(0), 1)
            raise RuntimeError("boom")
    assert not os.path.exists(path) and not os.path.exists(path + ".tmp")

"""selfi_node's run-time parameters over DDS: the node in its own process, changed and read through the
``rcl_interfaces`` SetParameters / GetParameters services by this process (per-test ROS_DOMAIN_ID,
LOCALHOST discovery). The parameters of ``DYNAMIC_PARAMETERS`` take effect (no /tf after
``publish_tf:=none`` while ``~/pose`` goes on, ``~/save_map`` writes into the new ``save_dir``, the status
rate follows ``status_period_s``, no keyframe within a long ``keyframe_min_interval_s``); the others are
refused with a reason and keep their value; invalid values are refused with the validation message.
"""
import pytest

pytest.importorskip("rclpy")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_interfaces.sh)")
status_mod = pytest.importorskip("selfi_ros.msg", reason="selfi_ros interfaces not built (scripts/build_interfaces.sh)")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from rclpy.parameter import Parameter, parameter_value_to_python  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from selfi_ros.ros.conversions import stamp_to_ns  # noqa: E402
from selfi_ros.ros.params import DYNAMIC_PARAMETERS, check_parameter_update, default_parameters  # noqa: E402
from selfi_ros_testing import node_and_client_factory, publish_image_pairs  # noqa: E402

T0 = 1_000_000_000_000  # first image stamp (ns)
DT = 100_000_000  # 10 Hz
NODE = "/selfi_node"


@pytest.fixture
def ros(tmp_path):
    """Yield a factory starting (node, client); both are stopped at teardown."""
    yield from node_and_client_factory(tmp_path)


def _service(c, srv_type, name, request, node, timeout=20.0):
    cli = c.node.create_client(srv_type, name)
    assert c.wait_for(lambda: cli.service_is_ready(), 15, node), f"service {name} not available"
    fut = cli.call_async(request)
    assert c.wait_for(lambda: fut.done(), timeout, node), f"{name} did not answer"
    return fut.result()


def set_param(c, node, name, value):
    """One parameter through ``~/set_parameters``: its ``SetParametersResult``."""
    req = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    res = _service(c, SetParameters, f"{NODE}/set_parameters", req, node)
    assert len(res.results) == 1
    return res.results[0]


def get_param(c, node, name):
    """The value of one parameter through ``~/get_parameters`` (Python value)."""
    res = _service(c, GetParameters, f"{NODE}/get_parameters", GetParameters.Request(names=[name]), node)
    assert len(res.values) == 1
    return parameter_value_to_python(res.values[0])


def _publish(c, node, first, n, pubs):
    pi, pc = pubs
    return publish_image_pairs(c, pi, pc, [T0 + k * DT for k in range(first, first + n)])


def _tf_stamps(c):
    return [stamp_to_ns(t.header.stamp) for m in c.get("/tf") for t in m.transforms]


def _count_status_over(c, seconds):
    n0 = len(c.get(f"{NODE}/status"))
    c.wait_for(lambda: False, seconds)
    return len(c.get(f"{NODE}/status")) - n0


def test_dynamic_parameters_take_effect_and_others_are_refused(ros, tmp_path):
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    node, c = ros(save_dir=str(first_dir))
    c.record(tf2_msgs.TFMessage, "/tf")
    c.record(PoseStamped, f"{NODE}/pose")
    c.record(status_mod.SelfiStatus, f"{NODE}/status")
    pubs = (c.publisher(Image, "/camera/image_raw"), c.publisher(CameraInfo, "/camera/camera_info"))
    assert c.wait_subscribers(pubs[0], node=node), node.log()[-2000:]
    assert c.wait_subscribers(pubs[1], node=node)
    c.wait_for(lambda: False, 0.5)
    _publish(c, node, 0, 6, pubs)
    assert c.wait_for(lambda: len(_tf_stamps(c)) >= 4, 15, node), node.log()[-3000:]
    assert c.wait_for(lambda: any(s.keyframes >= 3 for s in c.get(f"{NODE}/status")), 10, node)

    # refused: an invalid value (validation message), read-only parameters (the reason), values kept
    r = set_param(c, node, "publish_tf", "map_to_moon")
    assert not r.successful and "publish_tf" in r.reason and "map_to_camera" in r.reason, r.reason
    assert get_param(c, node, "publish_tf") == "auto"
    for name, value, old in (("backend", "colmap", "selfi_ros_testing:LineBackend"), ("window_size", 5, 3),
                             ("image_topic", "/other", "/camera/image_raw")):
        r = set_param(c, node, name, value)
        assert not r.successful and r.reason == f"{name} is read-only at run time: restart the node", r.reason
        assert get_param(c, node, name) == old
    r = set_param(c, node, "model_random_weights", True)  # read_only descriptor: refused by rclpy itself
    assert not r.successful and "model_random_weights" in r.reason, r.reason
    assert get_param(c, node, "model_random_weights") is False
    r = set_param(c, node, "keyframe_min_interval_s", -1.0)
    assert not r.successful and "keyframe_min_interval_s" in r.reason and ">= 0" in r.reason, r.reason
    assert get_param(c, node, "keyframe_min_interval_s") == 0.0

    # accepted: no TF any more, no keyframe within 100 s
    assert set_param(c, node, "publish_tf", "none").successful
    assert get_param(c, node, "publish_tf") == "none"
    assert set_param(c, node, "keyframe_min_interval_s", 100.0).successful
    assert get_param(c, node, "keyframe_min_interval_s") == 100.0
    c.wait_for(lambda: False, 1.0)  # the last window's status has arrived
    kf_before = c.get(f"{NODE}/status")[-1].keyframes
    poses_before = len(c.get(f"{NODE}/pose"))
    new_stamps = _publish(c, node, 6, 6, pubs)
    assert c.wait_for(lambda: len(c.get(f"{NODE}/pose")) >= poses_before + 3, 15, node), node.log()[-3000:]
    c.wait_for(lambda: False, 1.0)
    new_pose_stamps = {stamp_to_ns(m.header.stamp) for m in c.get(f"{NODE}/pose")[poses_before:]}
    assert new_pose_stamps <= set(new_stamps) and len(new_pose_stamps) >= 3  # poses of the new frames
    assert not [s for s in _tf_stamps(c) if s >= new_stamps[0]], "TF published after publish_tf:=none"
    assert c.get(f"{NODE}/status")[-1].keyframes == kf_before

    # save_dir: ~/save_map writes into the new folder
    from selfi_ros.srv import SaveMap

    assert set_param(c, node, "save_dir", str(second_dir)).successful
    r = _service(c, SaveMap, f"{NODE}/save_map", SaveMap.Request(), node)  # empty path: save_dir
    assert r.success and str(second_dir) in r.message, r.message
    assert (second_dir / "map.ply").is_file() and (second_dir / "trajectory.tum").is_file()
    assert not first_dir.exists()

    # status_period_s: 0.2 s -> 1 s (an integer for a float parameter is accepted)
    fast = _count_status_over(c, 2.0)
    assert 6 <= fast <= 14, fast  # 10 expected at 0.2 s
    assert set_param(c, node, "status_period_s", 1).successful
    assert get_param(c, node, "status_period_s") == 1
    c.wait_for(lambda: False, 0.3)
    slow = _count_status_over(c, 3.0)
    assert 1 <= slow <= 4, slow  # 3 expected at 1 s
    assert node.alive()


def test_check_parameter_update_without_ros():
    cur = default_parameters()
    new = check_parameter_update(cur, {"publish_tf": "none", "keyframe_min_flow_px": 9})
    assert new.node.publish_tf == "none" and new.engine.keyframe_min_flow_px == 9.0
    assert new.engine.window_size == cur["window_size"]
    with pytest.raises(ValueError, match="^queue_size is read-only at run time: restart the node$"):
        check_parameter_update(cur, {"queue_size": 8})
    with pytest.raises(ValueError, match="status_period_s must be > 0"):
        check_parameter_update(cur, {"status_period_s": 0.0})
    assert check_parameter_update(cur, {"use_sim_time": True}).node.publish_tf == cur["publish_tf"]
    # every dynamic parameter is a node or engine parameter (not a backend option)
    from selfi_ros.ros.params import parameter_specs

    groups = {s.name: s.group for s in parameter_specs()}
    assert all(groups.get(n) in ("node", "engine") for n in DYNAMIC_PARAMETERS)


def test_readme_lists_the_dynamic_parameters():
    import pathlib

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    after = text.split("<!-- params:end -->", 1)[1].split("\n## ", 1)[0]
    import re

    listed = set(re.findall(r"`([a-z_]+)`", after))
    assert set(DYNAMIC_PARAMETERS) <= listed, set(DYNAMIC_PARAMETERS) - listed
    assert listed == set(DYNAMIC_PARAMETERS), listed - set(DYNAMIC_PARAMETERS)


def test_keyframe_thresholds_change_and_the_last_keyframe_is_kept():
    import numpy as np

    from selfi_ros.engine.keyframes import KeyframeSelector
    from selfi_ros.engine.types import Frame

    img = np.full((48, 64, 3), 128, np.uint8)
    sel = KeyframeSelector(min_interval_s=0.0, max_interval_s=1.0, min_flow_px=5.0)
    assert sel.check(Frame(0, img)).reason == "first"
    assert not sel.check(Frame(300_000_000, img)).is_keyframe  # 0.3 s < 1 s, a static image
    sel.set_thresholds(0.0, 0.2, 5.0, 0.1)
    d = sel.check(Frame(400_000_000, img))  # 0.4 s after the kept first keyframe >= 0.2 s
    assert d.is_keyframe and d.reason == "time"
    sel.set_thresholds(10.0, 0.2, 5.0, 0.1)
    assert sel.check(Frame(5_000_000_000, img)).reason == "too_soon"  # 4.6 s < 10 s
    assert sel.check(Frame(14_500_000_000, img)).reason == "time"  # 10.1 s

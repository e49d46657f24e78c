"""``selfi_node`` started with a bad parameter value (wrong type, out of range, unknown backend or enum value,
a plug-in that cannot be imported, an invalid topic name) or without weights: exit status 2 and ONE line on
stderr, ``selfi_node: ...`` naming the parameter and the problem, no traceback (rclpy's own exceptions
included). Each case is a real ``python -m selfi_ros.ros.node`` subprocess."""
import subprocess

import pytest

pytest.importorskip("rclpy")

from selfi_ros.ros.node import node_command  # noqa: E402
from selfi_ros_testing import REPO, free_domain_id, ros_env  # noqa: E402

CASES = [  # (overrides, text the one line must contain)
    ({"window_size": "abc"}, "parameter 'window_size' must be int, got 'abc'"),
    ({"window_size": -1}, "parameter window_size must be >= 2, got -1"),
    ({"voxel_size": "big"}, "parameter 'voxel_size' must be float"),
    ({"backend": "nope"}, "parameter backend='nope': unknown backend"),
    ({"backend": "no_such_module:Cls"}, "parameter backend='no_such_module:Cls': cannot import Cls"),
    ({"backend": "selfi_ros_testing:NoSuchBackend"}, "cannot import NoSuchBackend"),
    ({"publish_tf": "map_to_moon"}, "parameter publish_tf='map_to_moon'; allowed: auto"),
    ({"qos": "fast"}, "parameter qos='fast'; allowed: sensor_data, reliable"),
    ({"queue_size": 0}, "parameter queue_size must be >= 1, got 0"),
    ({"image_topic": "bad topic!"}, "parameter image_topic='bad topic!': Invalid topic name"),
    ({"map_path": "/no/such/map"}, "parameter map_path='/no/such/map'"),
    ({"backend": "vggt"}, "parameter checkpoint='' (backend vggt): No VGGT"),  # a missing weight
]


@pytest.mark.parametrize("params,expected", CASES, ids=[next(iter(p)) + "=" + str(next(iter(p.values())))
                                                       for p, _ in CASES])
def test_bad_parameter_exits_2_with_one_line(tmp_path, params, expected):
    env = ros_env(free_domain_id())
    env["ROS_LOG_DIR"] = str(tmp_path / "ros_log")
    env["HF_HUB_OFFLINE"] = "1"
    p = subprocess.run(node_command(params), cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert "Traceback" not in out, out
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith("selfi_node: ") and expected in lines[0], out

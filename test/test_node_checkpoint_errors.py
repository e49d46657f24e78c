"""``selfi_node`` with an unusable vggt checkpoint: exit code 2 and one line on stderr, no traceback."""
import random
import subprocess

import pytest

pytest.importorskip("rclpy")

from selfi_ros.ros.node import node_command  # noqa: E402
from selfi_ros_testing import free_domain_id, ros_env  # noqa: E402


def _run_node(checkpoint: str, tmp_path):
    env = ros_env(free_domain_id())
    env["ROS_LOG_DIR"] = str(tmp_path / "ros_log")
    cmd = node_command({"backend": "vggt", "checkpoint": checkpoint})
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("kind", ["random.pt", "missing.safetensors"])
def test_node_exits_2_with_one_line_for_a_bad_checkpoint(tmp_path, kind):
    path = tmp_path / kind
    if kind == "random.pt":
        path.write_bytes(random.Random(9).randbytes(4096))
    p = _run_node(str(path), tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert "Traceback" not in out, out
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("selfi_node: ")]
    assert len(errors) == 1, out
    assert errors[0].startswith(f"selfi_node: checkpoint {path}: "), out
    assert "huggingface-cli download" in errors[0]
    assert "weights_only=False" not in out

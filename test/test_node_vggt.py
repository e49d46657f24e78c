"""selfi_node with the vggt backend end to end over DDS (issue "Anchors and localization").

The node runs in its own process (LOCALHOST discovery, own ROS_DOMAIN_ID) with the VGGT / SAIL-Recon
backend on a TINY RANDOM-WEIGHT model (``allow_random_weights``, ``model_config: tiny``, 112 px input):
plumbing only, so nothing here checks accuracy. The bundled bag data/sample/woodbox_orbit.mcap
(CompressedImage + CameraInfo, 48 frames at 5 Hz) is played through :func:`selfi_ros.ros.player.play`.

Checked: TF and PointCloud2 arrive, stamped with image stamps; >= 2 windows are reconstructed and chained
(finite chain residual) and frames are localized against the scene memory (query poses in the saved
cameras.json); TF agrees with the saved trajectory; and every output that can carry a flag says
"random weights": ~/status, /diagnostics (WARN + message), the log, the read-only parameter
``model_random_weights``, and every file written by ~/save_map (metadata.json, cameras.json, PLY and TUM
comments).
"""
import json
import os

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("torch")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_interfaces.sh)")
status_mod = pytest.importorskip("selfi_ros.msg", reason="selfi_ros interfaces not built (scripts/build_interfaces.sh)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from selfi_ros.engine.io import read_ply, read_tum  # noqa: E402
from selfi_ros.ros.bag import read_messages  # noqa: E402
from selfi_ros.ros.conversions import pointcloud2_to_points, stamp_to_ns, transform_to_matrix  # noqa: E402
from selfi_ros.ros.player import play  # noqa: E402
from selfi_ros_testing import REPO, NodeProcess, RosClient, diag_values, free_domain_id  # noqa: E402

BAG = os.path.join(REPO, "data", "sample", "woodbox_orbit.mcap")
IMAGE_TOPIC = "/camera/image_raw"
STATUS = "/selfi_node/status"

#: tiny random-weight VGGT, small windows: 48 frames give ~12 windows in a few seconds on one core
VGGT_PARAMS = dict(
    backend="vggt", allow_random_weights=True, model_config="tiny", image_width=112,
    image_transport="compressed", qos="reliable", queue_size=64, publish_tf="map_to_camera",
    window_size=4, window_overlap=2, window_max_keyframes=6,
    keyframe_min_interval_s=0.0, keyframe_max_interval_s=0.5,
    status_period_s=0.3, map_publish_period_s=0.5,
    skip_stale_non_keyframes=False,  # localize every frame even when the worker lags (counts below are exact)
)


def _bag_stamps() -> set:
    return {stamp_to_ns(m.message.header.stamp)
            for m in read_messages(BAG, topics=[IMAGE_TOPIC + "/compressed"])}


def _call_save_map(c, name, node, timeout=60.0):
    from selfi_ros.srv import SaveMap

    cli = c.node.create_client(SaveMap, name)
    assert c.wait_for(lambda: cli.service_is_ready(), 20, node), f"service {name} not available"
    fut = cli.call_async(SaveMap.Request())  # empty path: save_dir
    assert c.wait_for(lambda: fut.done(), timeout, node), f"{name} did not answer"
    return fut.result()


def _get_param(c, name, node):
    from rcl_interfaces.srv import GetParameters

    cli = c.node.create_client(GetParameters, "/selfi_node/get_parameters")
    assert c.wait_for(lambda: cli.service_is_ready(), 20, node)
    fut = cli.call_async(GetParameters.Request(names=[name]))
    assert c.wait_for(lambda: fut.done(), 20, node)
    return fut.result().values[0]


def test_vggt_node_on_sample_bag_random_weights_flagged_everywhere(tmp_path):
    d = free_domain_id()
    save_dir = tmp_path / "saved"
    node = NodeProcess(d, {**VGGT_PARAMS, "save_dir": str(save_dir)}, str(tmp_path / "node.log"))
    c = RosClient(d)
    try:
        c.record(tf2_msgs.TFMessage, "/tf")
        c.record(PointCloud2, "/selfi_node/window_cloud")
        c.record(PointCloud2, "/selfi_node/map_cloud", c.latched)
        c.record(status_mod.SelfiStatus, STATUS)
        c.record(DiagnosticArray, "/diagnostics")
        # the node builds the model before it subscribes: wait for it (torch import + model build)
        assert c.wait_for(lambda: c.node.count_subscribers(IMAGE_TOPIC + "/compressed") >= 1, 60, node), \
            node.log()[-3000:]
        c.wait_for(lambda: False, 0.5)  # let matching finish on both sides
        n_pub = play(BAG, rate=1.0, topics=[IMAGE_TOPIC + "/compressed", "/camera/camera_info"], node=c.node,
                     wait_subscribers=10.0, quiet=True)
        assert n_pub == 96  # 48 images + 48 CameraInfo

        def done():
            s = c.get(STATUS)
            return bool(s) and s[-1].frames_in >= 48 and s[-1].queue_depth == 0 and s[-1].windows >= 2
        assert c.wait_for(done, 60, node), (c.get(STATUS)[-1:], node.log()[-3000:])
        c.wait_for(lambda: False, 1.0)  # last poses / status after the queue emptied

        # ---- reconstruction counts: windows chained, frames localized
        st = c.get(STATUS)[-1]
        assert st.backend == "vggt" and st.frames_in == 48
        assert st.frames_dropped == 0 and st.frames_rejected == 0, st
        assert st.windows >= 2, st
        assert np.isfinite(st.chain_residual), "no window was chained (residual NaN)"
        assert st.poses >= 40 and st.localization_failures == 0, st

        # ---- TF: map -> camera_optical_frame, stamped with image stamps, proper rotations
        stamps = _bag_stamps()
        tfs = [t for m in c.get("/tf") for t in m.transforms]
        assert len(tfs) >= 40
        assert all(t.header.frame_id == "map" and t.child_frame_id == "camera_optical_frame" for t in tfs)
        tf_by_stamp = {stamp_to_ns(t.header.stamp): transform_to_matrix(t) for t in tfs}
        assert set(tf_by_stamp) <= stamps
        for T in tf_by_stamp.values():
            assert np.all(np.isfinite(T)) and np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)

        # ---- clouds
        win = c.get("/selfi_node/window_cloud")
        assert len(win) >= 2 and all(m.header.frame_id == "map" for m in win)
        xyz, _ = pointcloud2_to_points(win[-1])
        assert len(xyz) > 0 and np.all(np.isfinite(xyz))
        assert c.wait_for(lambda: len(c.get("/selfi_node/map_cloud")) >= 1, 10, node)
        mxyz, _ = pointcloud2_to_points(c.get("/selfi_node/map_cloud")[-1])
        assert len(mxyz) > 0

        # ---- random weights: status, diagnostics, log, read-only parameter
        assert st.random_weights is True
        diags = [diag_values(m) for m in c.get("/diagnostics") if m.status and m.status[0].name.startswith("selfi_node")]
        assert diags, "no /diagnostics from the node"
        assert all(dv["_level"] >= 1 and "RANDOM WEIGHTS" in dv["_message"] for dv in diags), diags[-1]
        assert diags[-1]["random_weights"] == "True"
        log = node.log()
        assert "RANDOM WEIGHTS" in log and "backend=vggt (RANDOM WEIGHTS)" in log
        assert "published from a model with RANDOM WEIGHTS" in log  # reminder when windows are published
        pv = _get_param(c, "model_random_weights", node)
        assert pv.type == 1 and pv.bool_value is True  # PARAMETER_BOOL

        # ---- ~/save_map: every file says so; TF agrees with the saved trajectory
        r = _call_save_map(c, "/selfi_node/save_map", node)
        assert r.success, r.message
        meta = json.loads((save_dir / "metadata.json").read_text())
        assert meta["random_weights"] is True and "RANDOMLY INITIALISED" in meta["WARNING"]
        assert meta["backend"] == "vggt" and meta["status"]["windows"] == st.windows
        cams = json.loads((save_dir / "cameras.json").read_text())
        assert cams["random_weights"] is True
        kinds = [f["kind"] for f in cams["frames"]]
        # >= 2 windows of 4 anchors sharing 2: >= 6 distinct anchor frames (revisits of stored windows may
        # replace further windows, so the count is not larger in general)
        assert kinds.count("query") >= 20 and kinds.count("anchor") >= 6, kinds
        assert len({f["window_id"] for f in cams["frames"]}) >= 2
        tum = (save_dir / "trajectory.tum").read_text()
        assert tum.startswith("# selfi_ros vggt: outputs come from a RANDOMLY INITIALISED model")
        with open(save_dir / "map.ply", "rb") as fh:
            head = fh.read(400)
        assert b"comment selfi_ros vggt: outputs come from a RANDOMLY INITIALISED model" in head
        P, _ = read_ply(str(save_dir / "map.ply"))
        assert len(P) > 0 and np.all(np.isfinite(P))
        ts, Ts = read_tum(str(save_dir / "trajectory.tum"))
        saved = dict(zip(ts.tolist(), Ts))
        # query poses are published once, when localized (anchor poses of later windows may refine a frame)
        queries = [f["stamp_ns"] for f in cams["frames"] if f["kind"] == "query" and f["stamp_ns"] in tf_by_stamp]
        assert len(queries) >= 20
        for s in queries:
            assert np.allclose(tf_by_stamp[s], saved[s], atol=1e-5), s
        assert node.alive()
    finally:
        c.close()
        node.stop()

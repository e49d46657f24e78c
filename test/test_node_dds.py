"""selfi_node over DDS: the node in its own process (python -m selfi_ros.ros.node), inputs published and
outputs recorded by this process, on a per-test ROS_DOMAIN_ID with LOCALHOST discovery.

The backend is LineBackend (test/selfi_ros_testing.py): the camera moves along +x at a known speed in
front of a wall at a known depth, so every published pose and point can be checked against the truth.
"""
import numpy as np
import pytest

pytest.importorskip("rclpy")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_interfaces.sh)")
status_mod = pytest.importorskip("selfi_ros.msg", reason="selfi_ros interfaces not built (scripts/build_interfaces.sh)")

from nav_msgs.msg import Odometry, Path  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from selfi_ros.ros.conversions import pointcloud2_to_points, stamp_to_ns, transform_stamped  # noqa: E402
from selfi_ros_testing import (LINE_SPEED, WALL_DEPTH, image_pair, node_and_client_factory,  # noqa: E402
                               publish_image_pairs)

T0 = 1_000_000_000_000  # first image stamp (ns)
DT = 100_000_000  # 10 Hz


@pytest.fixture
def ros(tmp_path):
    """Yield a factory starting (node, client); both are stopped at teardown."""
    yield from node_and_client_factory(tmp_path)


def _publish_stream(client, node, n, static_tf=None):
    pi = client.publisher(Image, "/camera/image_raw")
    pc = client.publisher(CameraInfo, "/camera/camera_info")
    assert client.wait_subscribers(pi, node=node), f"node never subscribed:\n{node.log()[-2000:]}"
    assert client.wait_subscribers(pc, node=node)
    client.wait_for(lambda: False, 0.5)  # let the subscriber side finish matching too
    return publish_image_pairs(client, pi, pc, [T0 + k * DT for k in range(n)])


def test_tf_and_clouds_arrive_with_true_geometry(ros):
    node, c = ros()
    c.record(tf2_msgs.TFMessage, "/tf")
    c.record(PointCloud2, "/selfi_node/window_cloud")
    c.record(PointCloud2, "/selfi_node/map_cloud", c.latched)
    c.record(status_mod.SelfiStatus, "/selfi_node/status")
    c.record(Path, "/selfi_node/path")
    c.record(Odometry, "/selfi_node/odometry")
    stamps = _publish_stream(c, node, 10)
    assert c.wait_for(lambda: sum(len(m.transforms) for m in c.get("/tf")) >= 9, 15, node), node.log()[-3000:]
    assert c.wait_for(lambda: len(c.get("/selfi_node/map_cloud")) >= 1, 10, node)

    tfs = [t for m in c.get("/tf") for t in m.transforms]
    assert all(t.header.frame_id == "map" and t.child_frame_id == "cam_optical" for t in tfs)
    by_stamp = {stamp_to_ns(t.header.stamp): t for t in tfs}
    assert set(by_stamp) <= set(stamps) and len(by_stamp) >= 9  # stamped with the image stamps
    # map frame = first anchor's camera: x(t) - x(t_first) along the camera x axis, no rotation
    first = min(by_stamp)
    for s, t in by_stamp.items():
        tr, q = t.transform.translation, t.transform.rotation
        assert tr.x == pytest.approx(LINE_SPEED * (s - first) * 1e-9, abs=1e-6)
        assert abs(tr.y) < 1e-6 and abs(tr.z) < 1e-6
        assert [q.x, q.y, q.z, q.w] == pytest.approx([0, 0, 0, 1], abs=1e-6)

    win = c.get("/selfi_node/window_cloud")
    assert win and all(m.header.frame_id == "map" for m in win)
    xyz, rgb = pointcloud2_to_points(win[0])
    assert len(xyz) > 10 and np.allclose(xyz[:, 2], WALL_DEPTH, atol=1e-4)
    assert np.all(rgb[:, 0] == 200) and np.all(rgb[:, 1:] == 0)
    mxyz, _ = pointcloud2_to_points(c.get("/selfi_node/map_cloud")[-1])
    assert len(mxyz) > 10 and np.allclose(mxyz[:, 2], WALL_DEPTH, atol=0.05)

    # images are best effort (sensor_data QoS): allow the very first one to be lost in discovery
    assert c.wait_for(lambda: any(s.windows >= 1 and s.frames_in >= 9 and s.poses >= 9
                                  for s in c.get("/selfi_node/status")), 5, node)
    st = c.get("/selfi_node/status")[-1]
    assert st.backend == "line" and not st.random_weights and st.frames_in >= 9
    assert st.frames_dropped == 0 and st.frames_rejected == 0 and st.poses >= 9
    # ~/path is published at a bounded rate (at most every status_period_s): wait for the one with every pose
    assert c.wait_for(lambda: any(len(m.poses) >= 9 for m in c.get("/selfi_node/path")), 5, node)
    path = c.get("/selfi_node/path")[-1]
    assert path.header.frame_id == "map" and len(path.poses) >= 9
    od = c.get("/selfi_node/odometry")[-1]
    assert od.child_frame_id == "cam_optical" and od.pose.covariance[0] > 0
    assert node.alive()


def test_base_link_mode_from_tf_static(ros):
    """With a URDF-like static chain base_link -> camera_link -> cam_optical, TF goes to base_link and the map
    is anchored to base_link at the first image (REP-105: x forward, z up), not to the camera's optical frame:
    map -> base_link is the identity at the first frame, the camera's motion along its x axis is the base's
    -y, and the wall's points lie forward (+x) with the image's up as +z."""
    node, c = ros(publish_tf="auto", tf_static_timeout_s=3.0)
    c.record(tf2_msgs.TFMessage, "/tf")
    c.record(PointCloud2, "/selfi_node/window_cloud")
    c.record(Odometry, "/selfi_node/odometry")
    T_base_link = np.eye(4)
    T_base_link[:3, 3] = [0.3, 0.0, 0.2]
    T_link_opt = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]])  # REP-103 optical
    static = c.publisher(tf2_msgs.TFMessage, "/tf_static", c.latched)
    static.publish(tf2_msgs.TFMessage(transforms=[
        transform_stamped(T_base_link, "base_link", "camera_link", 0),
        transform_stamped(T_link_opt, "camera_link", "cam_optical", 0)]))
    stamps = _publish_stream(c, node, 8)
    assert c.wait_for(lambda: sum(len(m.transforms) for m in c.get("/tf")) >= 6, 15, node), node.log()[-3000:]
    assert c.wait_for(lambda: len(c.get("/selfi_node/window_cloud")) >= 1, 10, node)
    tfs = [t for m in c.get("/tf") for t in m.transforms]
    assert all(t.header.frame_id == "map" and t.child_frame_id == "base_link" for t in tfs)
    from selfi_ros.ros.conversions import transform_to_matrix

    T_base_cam = T_base_link @ T_link_opt
    by_stamp = {stamp_to_ns(t.header.stamp): transform_to_matrix(t) for t in tfs}
    first = min(by_stamp)  # the first image that got through (best effort): the first anchor keyframe
    assert first in stamps[:2]
    assert np.allclose(by_stamp[first], np.eye(4), atol=1e-9)  # map = base_link at the first frame
    for s, T_map_base in by_stamp.items():
        d = LINE_SPEED * (s - first) * 1e-9  # camera travel along its own x axis since the first anchor
        # the camera's +x is the base's -y: the base drives sideways in a level plane (z stays 0)
        assert T_map_base[:3, 3] == pytest.approx([0, -d, 0], abs=1e-6)
        assert np.allclose(T_map_base[:3, :3], np.eye(3), atol=1e-6)
        # engine-frame camera pose (independent of the anchor): inv(T_base_cam) @ T_map_base @ T_base_cam
        T_eng_cam = np.linalg.inv(T_base_cam) @ T_map_base @ T_base_cam
        assert T_eng_cam[:3, 3] == pytest.approx([d, 0, 0], abs=1e-6)
    assert all(o.child_frame_id == "base_link" for o in c.get("/selfi_node/odometry"))
    # the wall WALL_DEPTH in front of the camera: x = forward in map; image rows (camera y, down) -> map -z
    xyz, _ = pointcloud2_to_points(c.get("/selfi_node/window_cloud")[0])
    assert np.allclose(xyz[:, 0], WALL_DEPTH + 0.3, atol=1e-5)
    H, W = 6, 8  # LineBackend's maps: rows v, K = [[0.8 W, 0, W/2], [0, 0.8 W, H/2]]
    y_cam = (np.arange(H) + 0.5 - H / 2) / (0.8 * W) * WALL_DEPTH
    assert np.unique(np.round(xyz[:, 2], 5)) == pytest.approx(np.sort(0.2 - y_cam), abs=1e-5)


def _request(c, srv_type, name, node, timeout=20.0, **fields):
    cli = c.node.create_client(srv_type, name)
    assert c.wait_for(lambda: cli.service_is_ready(), 10, node), f"service {name} not available"
    fut = cli.call_async(srv_type.Request(**fields))
    assert c.wait_for(lambda: fut.done(), timeout, node), f"{name} did not answer"
    return fut.result()


def test_services_save_map_and_reset(ros, tmp_path):
    """~/save_map (selfi_ros/srv/SaveMap) writes into the requested folder or, with an empty path, save_dir;
    a failed save answers success=False with the reason and logs at ERROR; ~/reset forgets the map AND zeroes
    frames_in / frames_dropped / frames_rejected as ~/status says; ~/load_map answers."""
    from std_srvs.srv import Trigger

    from selfi_ros.engine.engine import Engine
    from selfi_ros.srv import LoadMap, SaveMap

    save_dir, target = tmp_path / "saved", tmp_path / "requested" / "here"
    node, c = ros(save_dir=str(save_dir))
    c.record(status_mod.SelfiStatus, "/selfi_node/status")
    _publish_stream(c, node, 6)
    assert c.wait_for(lambda: any(s.windows >= 1 and s.poses >= 5 for s in c.get("/selfi_node/status")), 10, node)
    r = _request(c, SaveMap, "/selfi_node/save_map", node, path=str(target))
    assert r.success and r.path == str(target), r.message
    for f in ("map.ply", "trajectory.tum", "metadata.json", "ros_map_frame.json"):
        assert (target / f).is_file(), (f, r.message)
    assert not save_dir.exists()
    rows = [l.split() for l in (target / "trajectory.tum").read_text().splitlines() if l and not l.startswith("#")]
    assert len(rows) >= 5
    first_t = float(rows[0][0])
    for row in rows:  # TUM: t x y z qx qy qz qw; LineBackend truth along x
        t, x = float(row[0]), float(row[1])
        assert x == pytest.approx(LINE_SPEED * (t - first_t), abs=1e-4)
    r = _request(c, SaveMap, "/selfi_node/save_map", node)  # empty path: save_dir
    assert r.success and r.path == str(save_dir) and (save_dir / "map.ply").is_file(), r.message
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = _request(c, SaveMap, "/selfi_node/save_map", node, path=str(blocker / "sub"))
    assert not r.success and r.path == "" and r.message.startswith(f"save to {blocker / 'sub'} failed: "), r.message
    assert c.wait_for(lambda: "[ERROR]" in node.log() and "~/save_map: save to" in node.log(), 5, node)

    r = _request(c, LoadMap, "/selfi_node/load_map", node, path=str(target))
    assert not r.success and r.message  # LineBackend keeps no reusable map
    if not hasattr(Engine, "load_map"):
        assert r.message == "map loading not available"

    st = c.get("/selfi_node/status")[-1]
    assert st.frames_in >= 5
    r = _request(c, Trigger, "/selfi_node/reset", node)
    assert r.success, r.message
    n = len(c.get("/selfi_node/status"))
    assert c.wait_for(lambda: len(c.get("/selfi_node/status")) > n + 1, 5, node)
    st = c.get("/selfi_node/status")[-1]
    assert st.windows == 0 and st.map_points == 0 and st.poses == 0
    assert st.frames_in == 0 and st.frames_dropped == 0 and st.frames_rejected == 0
    assert st.keyframes == 0 and st.frames_skipped == 0 and st.localization_failures == 0
    assert node.alive()


def test_compressed_transport(ros):
    from sensor_msgs.msg import CompressedImage

    from selfi_ros.ros.conversions import image_to_rgb8, rgb8_to_compressed

    node, c = ros(image_transport="compressed")
    c.record(tf2_msgs.TFMessage, "/tf")
    pi = c.publisher(CompressedImage, "/camera/image_raw/compressed")
    pc = c.publisher(CameraInfo, "/camera/camera_info")
    assert c.wait_subscribers(pi, node=node) and c.wait_subscribers(pc, node=node), node.log()[-2000:]
    c.wait_for(lambda: False, 0.5)
    for k in range(6):
        im, ci = image_pair(T0 + k * DT)
        pc.publish(ci)
        pi.publish(rgb8_to_compressed(image_to_rgb8(im), T0 + k * DT, "cam_optical", "png"))
        c.wait_for(lambda: False, 0.08)
    assert c.wait_for(lambda: sum(len(m.transforms) for m in c.get("/tf")) >= 5, 15, node), node.log()[-3000:]
    stamps = {stamp_to_ns(t.header.stamp) for m in c.get("/tf") for t in m.transforms}
    assert stamps <= {T0 + k * DT for k in range(6)}


def test_map_to_odom_with_odometry(ros):
    """REP-105: with odometry and a static base_link -> camera, the node publishes map -> odom, and
    map -> odom -> base_link -> camera reproduces the camera pose; odometry here drifts, so map -> odom moves."""
    from selfi_ros.ros.conversions import odometry, transform_to_matrix

    node, c = ros(odom_topic="/odom", tf_static_timeout_s=3.0)
    c.record(tf2_msgs.TFMessage, "/tf")
    T_base_cam = np.array([[0, 0, 1, 0.2], [-1, 0, 0, 0], [0, -1, 0, 0.5], [0, 0, 0, 1.0]])
    static = c.publisher(tf2_msgs.TFMessage, "/tf_static", c.latched)
    static.publish(tf2_msgs.TFMessage(transforms=[transform_stamped(T_base_cam, "base_link", "cam_optical", 0)]))
    po = c.publisher(Odometry, "/odom")

    def T_odom_base(s):  # odometry: base moves along its -y (= camera +x) with a 10 % scale error
        T = np.eye(4)
        T[1, 3] = -1.1 * LINE_SPEED * (s - T0) * 1e-9
        return T

    pi = c.publisher(Image, "/camera/image_raw")
    pc = c.publisher(CameraInfo, "/camera/camera_info")
    assert c.wait_subscribers(pi, node=node) and c.wait_subscribers(po, node=node), node.log()[-2000:]
    c.wait_for(lambda: False, 0.5)
    for k in range(8):
        s = T0 + k * DT
        po.publish(odometry(T_odom_base(s), "odom", "base_link", s))
        im, ci = image_pair(s)
        pc.publish(ci)
        pi.publish(im)
        c.wait_for(lambda: False, 0.08)
    assert c.wait_for(lambda: sum(len(m.transforms) for m in c.get("/tf")) >= 6, 15, node), node.log()[-3000:]
    tfs = [t for m in c.get("/tf") for t in m.transforms]
    assert all(t.header.frame_id == "map" and t.child_frame_id == "odom" for t in tfs), tfs[0]
    first = None
    for t in sorted(tfs, key=lambda t: stamp_to_ns(t.header.stamp)):
        s = stamp_to_ns(t.header.stamp)
        # map is anchored to base_link at the first anchor (T_map_engine = T_base_cam): undo it
        T_map_cam = np.linalg.inv(T_base_cam) @ transform_to_matrix(t) @ T_odom_base(s) @ T_base_cam
        first = T_map_cam[0, 3] if first is None else first
        assert T_map_cam[0, 3] - first == pytest.approx(LINE_SPEED * (s - min(stamp_to_ns(u.header.stamp) for u in tfs)) * 1e-9, abs=0.02)
        assert np.allclose(T_map_cam[:3, :3], np.eye(3), atol=1e-3)

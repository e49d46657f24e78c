"""The committed sample bag and its ground truth: contents, conventions, and the ground truth checked
against the images themselves (epipolar geometry of SIFT matches) and, where POV-Ray is installed,
against fresh renders."""
import math
import os
import shutil

import numpy as np
import pytest

from selfi_ros.data import (CAMERA_FRAME, CAMERA_INFO_TOPIC, GT_TOPIC, IMAGE_TOPIC, MAP_FRAME, SAMPLE_BAG,
                            SAMPLE_DIR, SAMPLE_GT_TUM)
from selfi_ros.data import sample
from selfi_ros.engine.io import read_tum
from selfi_ros.ros.bag import bag_topics, read_messages
from selfi_ros.ros.conversions import compressed_to_rgb8, pose_to_matrix, stamp_to_ns


@pytest.fixture(scope="module")
def bag_messages():
    out = {IMAGE_TOPIC: [], CAMERA_INFO_TOPIC: [], GT_TOPIC: []}
    for m in read_messages(SAMPLE_BAG):
        out[m.topic].append(m)
    return out


def test_files_small_and_credited():
    assert os.path.getsize(SAMPLE_BAG) < 5 * 2**20
    text = open(os.path.join(SAMPLE_DIR, "README.md")).read()
    assert "CC-BY-SA" in text or "ShareAlike" in text
    assert "Dan Farmer" in text and "woodbox.pov" in text


def test_topics_and_types():
    assert bag_topics(SAMPLE_BAG) == {
        IMAGE_TOPIC: "sensor_msgs/msg/CompressedImage",
        CAMERA_INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
        GT_TOPIC: "geometry_msgs/msg/PoseStamped",
    }


def test_stamps_frames_and_rate(bag_messages):
    imgs = bag_messages[IMAGE_TOPIC]
    assert len(imgs) == 48 == len(bag_messages[CAMERA_INFO_TOPIC]) == len(bag_messages[GT_TOPIC])
    stamps = [stamp_to_ns(m.message.header.stamp) for m in imgs]
    assert stamps == [stamp_to_ns(m.message.header.stamp) for m in bag_messages[CAMERA_INFO_TOPIC]]
    assert stamps == [stamp_to_ns(m.message.header.stamp) for m in bag_messages[GT_TOPIC]]
    assert stamps == [m.log_time_ns for m in imgs]
    assert np.all(np.diff(stamps) == 200_000_000)  # 5 Hz
    assert {m.message.header.frame_id for m in imgs} == {CAMERA_FRAME}
    assert {m.message.header.frame_id for m in bag_messages[GT_TOPIC]} == {MAP_FRAME}
    rgb = compressed_to_rgb8(imgs[0].message)
    assert rgb.shape == (360, 480, 3) and rgb.std() > 20  # textured, not blank


def test_camera_info_is_the_pov_ray_pinhole(bag_messages):
    info = bag_messages[CAMERA_INFO_TOPIC][0].message
    K = np.array(info.k).reshape(3, 3)
    f = 240.0 / math.tan(math.radians(30.0))  # horizontal FOV 60 deg over 480 px
    np.testing.assert_allclose(K, [[f, 0, 239.5], [0, f, 179.5], [0, 0, 1]], atol=1e-9)
    assert (info.width, info.height) == (480, 360)
    assert list(info.d) == [0.0] * 5


def test_tum_equals_bag_ground_truth_and_rotations_are_proper(bag_messages):
    stamps, T = read_tum(SAMPLE_GT_TUM)
    gt = bag_messages[GT_TOPIC]
    assert list(stamps) == [stamp_to_ns(m.message.header.stamp) for m in gt]
    for Ti, m in zip(T, gt):
        np.testing.assert_allclose(Ti, pose_to_matrix(m.message.pose), atol=1e-6)
        R = Ti[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-6)
    # smooth path: consecutive camera centres 0.2-0.6 scene units apart, looking at the box (near the origin)
    C = T[:, :3, 3]
    steps = np.linalg.norm(np.diff(C, axis=0), axis=1)
    assert steps.min() > 0.2 and steps.max() < 0.6
    fwd = T[:, :3, 2]
    to_box = -C / np.linalg.norm(C, axis=1, keepdims=True)
    assert np.all(np.sum(fwd * to_box, axis=1) > 0.95)


def test_pov_to_map_conversion_by_hand():
    """A POV-Ray camera at <0, 0, -5> looking at the origin (POV: y up, z into the screen) sits at map
    (0, -5, 0) (map = x_pov, z_pov, y_pov); its optical z (forward) is map +y, x (right) map +x,
    y (down) map -z."""
    T = sample.pov_camera_to_T_map_cam(sample.PovCamera(np.array([0.0, 0.0, -5.0]), np.zeros(3)))
    np.testing.assert_allclose(T[:3, 3], [0, -5, 0], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    # the look-at point projects to the principal point
    K = sample.intrinsics(480, 360)
    uv = sample.project(K, T, np.zeros((1, 3)))
    np.testing.assert_allclose(uv[0], [239.5, 179.5], atol=1e-9)
    with pytest.raises(ValueError):
        sample.pov_camera_to_T_map_cam(sample.PovCamera(np.array([0.0, 5.0, 0.0]), np.zeros(3)))


def _epipolar_distances(x0, x1, T_map_c0, T_map_c1, K):
    """Distances (px) of points x1 to the epipolar lines of x0 under the relative pose of two cameras."""
    T_1_0 = np.linalg.inv(T_map_c1) @ T_map_c0  # camera 0 -> camera 1
    R, t = T_1_0[:3, :3], T_1_0[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    F = np.linalg.inv(K).T @ tx @ R @ np.linalg.inv(K)
    h0 = np.hstack([x0, np.ones((len(x0), 1))])
    h1 = np.hstack([x1, np.ones((len(x1), 1))])
    lines = h0 @ F.T
    return np.abs(np.sum(lines * h1, axis=1)) / np.linalg.norm(lines[:, :2], axis=1)


@pytest.mark.parametrize("a,b", [(20, 22), (30, 33)])
def test_ground_truth_agrees_with_image_epipolar_geometry(bag_messages, a, b):
    """SIFT matches (OpenCV, independent of the colmap backend) between two frames satisfy the epipolar
    constraint of the ground-truth relative pose: most within 1 px (matches include reflections on the
    glossy floor, hence not all). The same test with the camera axes in the OpenGL convention, or the
    relative rotation off by 0.5 degree, scores clearly worse, so it can tell a wrong ground truth."""
    import cv2
    from scipy.spatial.transform import Rotation

    K = np.array(bag_messages[CAMERA_INFO_TOPIC][0].message.k).reshape(3, 3)
    _, T = read_tum(SAMPLE_GT_TUM)
    grey = [cv2.cvtColor(compressed_to_rgb8(bag_messages[IMAGE_TOPIC][i].message), cv2.COLOR_RGB2GRAY)
            for i in (a, b)]
    sift = cv2.SIFT_create(nfeatures=3000)
    (k0, d0), (k1, d1) = [sift.detectAndCompute(g, None) for g in grey]
    pairs = [m for m, n in cv2.BFMatcher().knnMatch(d0, d1, k=2) if m.distance < 0.8 * n.distance]
    assert len(pairs) > 60
    x0 = np.array([k0[m.queryIdx].pt for m in pairs])
    x1 = np.array([k1[m.trainIdx].pt for m in pairs])
    d = _epipolar_distances(x0, x1, T[a], T[b], K)
    assert np.median(d) < 0.8 and np.mean(d < 1.0) > 0.5
    gl = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera axes (y up, z backward)
    d_gl = _epipolar_distances(x0, x1, T[a] @ gl, T[b] @ gl, K)
    P = np.eye(4)
    P[:3, :3] = Rotation.from_rotvec([0.0, np.radians(0.5), 0.0]).as_matrix()
    d_rot = _epipolar_distances(x0, x1, T[a] @ P, T[b], K)
    assert np.median(d_gl) > 3.0 * np.median(d)
    assert np.median(d_rot) > 1.2 * np.median(d)


@pytest.mark.skipif(shutil.which("povray") is None or not os.path.exists(sample.SCENE_PATH),
                    reason="povray / povray-examples not installed (only needed to re-make the sample)")
def test_fresh_render_matches_bag_and_markers_reproject(tmp_path, bag_messages):
    """Re-render frame 10 at a quarter of the size (fast) and compare with the bag's frame downscaled;
    render emissive markers with the same camera and check their reprojection through the ground truth."""
    import cv2

    cams = sample.orbit_path(48)
    img = sample.render(f'#include "{os.path.basename(sample.SCENE_PATH)}"\n', cams[10], 120, 90, str(tmp_path), "f")
    ref = cv2.resize(compressed_to_rgb8(bag_messages[IMAGE_TOPIC][10].message), (120, 90), interpolation=cv2.INTER_AREA)
    diff = np.abs(img.astype(float) - ref.astype(float)).mean()
    assert diff < 12.0  # same view (a different view differs by > 30 grey levels on average)
    assert sample.verify_ground_truth([cams[10]], 480, 360, str(tmp_path)) < 0.5

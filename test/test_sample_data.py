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


# ------------------------------------------------------------------ the real sample (TUM RGB-D fr1_rpy)
from selfi_ros.data import TUM_SAMPLE_BAG, TUM_SAMPLE_CAMERA_YAML, TUM_SAMPLE_GT  # noqa: E402
from selfi_ros.data import tum  # noqa: E402

#: the full sequence, outside the repository (only for the tests that compare the sample with its source)
TUM_DIR = os.environ.get("SELFI_ROS_TUM_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "..", "shared", "data", "tum_fr1_rpy"))
needs_tum = pytest.mark.skipif(not os.path.isfile(os.path.join(TUM_DIR, "rgb.txt")),
                               reason=f"TUM fr1_rpy not at {TUM_DIR} (set SELFI_ROS_TUM_DIR)")
#: the published freiburg1 colour calibration (TUM's web page; the sample's CameraInfo must carry it)
FR1_K = [[517.306408, 0.0, 318.643040], [0.0, 516.469215, 255.313989], [0.0, 0.0, 1.0]]
FR1_D = [0.262383, -0.953104, -0.005358, 0.002628, 1.163314]


@pytest.fixture(scope="module")
def tum_messages():
    out = {}
    for m in read_messages(TUM_SAMPLE_BAG):
        out.setdefault(m.topic, []).append(m)
    return out


def test_real_sample_small_and_credited():
    assert os.path.getsize(TUM_SAMPLE_BAG) < 5 * 2**20
    for text in (open(os.path.join(SAMPLE_DIR, "README.md")).read(),
                 open(os.path.join(os.path.dirname(SAMPLE_DIR.rstrip("/")), "..", "README.md")).read()):
        assert "CC BY 4.0" in text and "Sturm" in text and "IROS 2012" in text and "freiburg1_rpy" in text


def test_real_sample_bag_carries_distortion_and_original_stamps(tum_messages):
    """CameraInfo before every image with the same stamp and the FULL calibration (plumb_bob D, K, R = I,
    P = [K | 0]); 10 Hz stamps (one in three of the 30 Hz recording); distorted 640x480 JPEGs."""
    assert bag_topics(TUM_SAMPLE_BAG) == {IMAGE_TOPIC: "sensor_msgs/msg/CompressedImage",
                                          CAMERA_INFO_TOPIC: "sensor_msgs/msg/CameraInfo"}
    imgs, infos = tum_messages[IMAGE_TOPIC], tum_messages[CAMERA_INFO_TOPIC]
    assert len(imgs) == len(infos) == 120
    stamps = [stamp_to_ns(m.message.header.stamp) for m in imgs]
    assert stamps == [stamp_to_ns(m.message.header.stamp) for m in infos] == [m.log_time_ns for m in imgs]
    dt = np.diff(stamps) * 1e-9
    assert np.all(dt > 0.08) and np.all(dt < 0.12) and abs(np.mean(dt) - 0.1) < 0.002
    assert stamps[0] == tum.parse_stamp_ns("1305031229.528748")  # the first image of fr1_rpy
    for m in infos:
        ci = m.message
        assert ci.distortion_model == "plumb_bob" and (ci.width, ci.height) == (640, 480)
        np.testing.assert_allclose(ci.d, FR1_D, rtol=1e-12)
        np.testing.assert_allclose(np.reshape(ci.k, (3, 3)), FR1_K, rtol=1e-12)
        np.testing.assert_allclose(np.reshape(ci.r, (3, 3)), np.eye(3), atol=0)
        np.testing.assert_allclose(np.reshape(ci.p, (3, 4)), np.hstack([FR1_K, np.zeros((3, 1))]), rtol=1e-12)
        assert ci.header.frame_id == CAMERA_FRAME
    rgb = compressed_to_rgb8(imgs[0].message)
    assert rgb.shape == (480, 640, 3) and rgb.std() > 20
    from selfi_ros.data.camera_model import CameraModel

    m = CameraModel.from_yaml(TUM_SAMPLE_CAMERA_YAML)
    np.testing.assert_allclose(m.D, FR1_D, rtol=1e-12)
    np.testing.assert_allclose(m.K, FR1_K, rtol=1e-12)


def test_real_sample_ground_truth_covers_the_span(tum_messages):
    """The ground truth beside the bag: TUM's 100 Hz mocap lines, unit quaternions, read the same by our
    reader and by engine.io.read_tum, covering every image stamp within 10 ms."""
    gs, gT = tum.read_groundtruth(TUM_SAMPLE_GT)
    s2, T2 = read_tum(TUM_SAMPLE_GT)
    assert list(gs) == list(s2)
    np.testing.assert_allclose(gT, T2, atol=1e-6)  # engine.io normalises the 4-decimal quaternions
    assert abs(np.median(np.diff(gs)) * 1e-9 - 0.01) < 1e-3
    for Ti in gT:
        assert np.linalg.det(Ti[:3, :3]) == pytest.approx(1.0, abs=1e-6)
    stamps = np.array([stamp_to_ns(m.message.header.stamp) for m in tum_messages[IMAGE_TOPIC]])
    nearest = np.min(np.abs(gs[None, :] - stamps[:, None]), axis=1)
    assert nearest.max() < 10_000_000
    # hand-held: metres-scale positions near the mocap volume, a path of about 1 m in the 12 s
    inside = (gs >= stamps[0]) & (gs <= stamps[-1])
    path = np.sum(np.linalg.norm(np.diff(gT[inside, :3, 3], axis=0), axis=1))
    assert 0.5 < path < 2.0


@needs_tum
def test_tum_reader_on_the_sequence(tum_messages):
    """The reader against TUM's files: 723 images at ~30 Hz over 24.2 s, exact decimal stamps, the camera
    YAML found, the ground truth (2742 lines); the sample's images are 1 in 3 of the first 12 s, and its
    JPEGs decode to the source images up to the q75 re-encoding."""
    seq = tum.TumSequence.open(TUM_DIR)
    assert len(seq.images) == 723 and seq.camera_yaml.endswith("camera_info.yaml")
    assert seq.rate_hz == pytest.approx(30.0, rel=0.02)
    assert seq.images[0].stamp_ns == 1305031229528748000 and seq.images[0].name == "rgb/1305031229.528748.jpg"
    assert abs((seq.images[-1].stamp_ns - seq.images[0].stamp_ns) * 1e-9 - 24.07) < 0.01  # 24.2 s with the last frame
    gs, gT = tum.read_groundtruth(seq.groundtruth_path)
    assert len(gs) == 2742 and np.all(np.diff(gs) > 0)
    sel = seq.select(0.0, 12.0, 3)
    stamps = [stamp_to_ns(m.message.header.stamp) for m in tum_messages[IMAGE_TOPIC]]
    assert [im.stamp_ns for im in sel] == stamps
    a = tum.load_rgb(sel[7].path).astype(float)
    b = compressed_to_rgb8(tum_messages[IMAGE_TOPIC][7].message).astype(float)
    assert np.abs(a - b).mean() < 4.0  # same image (another frame differs by > 15 grey levels)
    assert np.abs(tum.load_rgb(sel[20].path).astype(float) - b).mean() > 15.0


def test_tum_reader_rules(tmp_path):
    assert tum.parse_stamp_ns("1305031229.528748") == 1305031229528748000
    assert tum.parse_stamp_ns("17") == 17_000_000_000 and tum.parse_stamp_ns("0.0000000019") == 1
    for bad in ("-1.0", "1e9", "abc", "1.2.3", ""):
        with pytest.raises(ValueError):
            tum.parse_stamp_ns(bad)
    d = tmp_path / "seq"
    d.mkdir()
    (d / "rgb.txt").write_text("# color images\n# timestamp filename\n1.5 rgb/a.png\n\n2.25 rgb/b.png\n")
    seq = tum.TumSequence.open(str(d))
    assert [(i.stamp_ns, i.name) for i in seq.images] == [(1_500_000_000, "rgb/a.png"), (2_250_000_000, "rgb/b.png")]
    assert seq.images[0].path == os.path.join(str(d), "rgb", "a.png")
    assert seq.groundtruth_path is None and seq.camera_yaml is None and seq.rate_hz == pytest.approx(1 / 0.75)
    assert [i.name for i in seq.select(0.5)] == ["rgb/b.png"] and len(seq.select(0, 0.7)) == 1
    with pytest.raises(ValueError, match="no image"):
        seq.select(5.0)
    assert list(tum.frames_from_tum(seq.images)) == []  # files missing: skipped with a warning
    import cv2

    (d / "rgb").mkdir()
    cv2.imwrite(str(d / "rgb" / "a.png"), np.full((48, 64, 3), 90, np.uint8))
    cv2.imwrite(str(d / "rgb" / "b.png"), np.full((40, 64, 3), 90, np.uint8))

    def rectify(img):
        if img.shape[:2] != (48, 64):
            raise ValueError("image 64x40 but the calibration sends 64x48 images")
        return img[::-1].copy(), np.diag([50.0, 50.0, 1.0])

    fr = list(tum.frames_from_tum(seq.images, rectify=rectify))  # the 64x40 image is skipped, not a crash
    assert [(f.stamp_ns, f.source, f.index) for f in fr] == [(1_500_000_000, "rgb/a.png", 0)]
    np.testing.assert_array_equal(fr[0].K, np.diag([50.0, 50.0, 1.0]))
    (d / "rgb.txt").write_text("2.0 a.png\n1.0 b.png\n")
    with pytest.raises(ValueError, match="rgb.txt:2: timestamp 1.0 not after"):
        tum.TumSequence.open(str(d))
    (d / "rgb.txt").write_text("2.0\n")
    with pytest.raises(ValueError, match="rgb.txt:1: expected"):
        tum.TumSequence.open(str(d))
    with pytest.raises(FileNotFoundError):
        tum.TumSequence.open(str(tmp_path / "missing"))
    gt = tmp_path / "gt.txt"
    gt.write_text("# ground truth\n1.0 1 2 3 0 0 0 1\n1.01 1 2 3 0 0 0.7071068 0.7071068\n")
    s, T = tum.read_groundtruth(str(gt))
    assert list(s) == [1_000_000_000, 1_010_000_000]
    np.testing.assert_allclose(T[1, :3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)  # 90 deg about z
    np.testing.assert_allclose(T[0, :3, 3], [1, 2, 3])
    gt.write_text("1.0 1 2 3 0 0 0 2\n")
    with pytest.raises(ValueError, match="gt.txt:1: .*non-unit quaternion"):
        tum.read_groundtruth(str(gt))
    gt.write_text("1.0 1 2 3 0 0 0\n")
    with pytest.raises(ValueError, match="8 fields"):
        tum.read_groundtruth(str(gt))


def _mini_tum_folder(root, tum_messages, n=6):
    """A TUM-layout folder made from the sample: n JPEG files (the bag's bytes), rgb.txt, the calibration
    YAML and the ground-truth file."""
    from selfi_ros_testing import tum_folder_from_messages

    return tum_folder_from_messages(root, tum_messages[IMAGE_TOPIC][:n])


@pytest.mark.parametrize("compressed", [False, True])
def test_make_sample_tum_round_trip(tmp_path, tum_messages, compressed):
    """make-sample --tum: the messages read back carry the stamps, D/K/R/P and pixels written (raw rgb8 equal
    to the decoded files; compressed with --jpeg-quality 0 the files' bytes), the ground truth lines of the
    span are TUM's own, and the node's input code (frames_from_bag) rectifies the frames with that
    CameraInfo: K = P's 3x3 and the image changed (the lens is undone)."""
    from selfi_ros.apps.reconstruct import frames_from_bag
    from selfi_ros.cli import main
    from selfi_ros.data.camera_model import CameraModel, Rectifier

    src = _mini_tum_folder(tmp_path / "seq", tum_messages)
    seq = tum.TumSequence.open(str(src))
    bag = tmp_path / "out" / "mini.mcap"
    args = ["make-sample", "--tum", str(src), "--out", str(bag), "--start-s", "0.15", "--every", "2"]
    assert main(args + (["--compressed"] if compressed else [])) == 0
    picked = seq.images[2::2]  # 0.15 s after the first image (10 Hz): from the third, one in two
    topic = IMAGE_TOPIC if compressed else "/camera/image_raw"
    assert bag_topics(str(bag)) == {topic: "sensor_msgs/msg/" + ("CompressedImage" if compressed else "Image"),
                                    CAMERA_INFO_TOPIC: "sensor_msgs/msg/CameraInfo"}
    msgs = list(read_messages(str(bag)))
    assert [m.topic for m in msgs] == [CAMERA_INFO_TOPIC, topic] * len(picked)
    for (info, img), im in zip(zip(msgs[::2], msgs[1::2]), picked):
        assert stamp_to_ns(info.message.header.stamp) == stamp_to_ns(img.message.header.stamp) == im.stamp_ns
        assert info.log_time_ns == img.log_time_ns == im.stamp_ns
        np.testing.assert_allclose(info.message.d, FR1_D, rtol=1e-12)
        np.testing.assert_allclose(np.reshape(info.message.k, (3, 3)), FR1_K, rtol=1e-12)
        np.testing.assert_allclose(np.reshape(info.message.p, (3, 4))[:, :3], FR1_K, rtol=1e-12)
        if compressed:
            assert bytes(img.message.data) == open(im.path, "rb").read()
        else:
            from selfi_ros.ros.conversions import image_to_rgb8

            np.testing.assert_array_equal(image_to_rgb8(img.message), tum.load_rgb(im.path))
    gt_lines = open(tmp_path / "out" / "mini_groundtruth.txt").read().splitlines()
    src_lines = open(TUM_SAMPLE_GT).read().splitlines()
    assert set(gt_lines) <= set(src_lines) and len([x for x in gt_lines if not x.startswith("#")]) > 50
    assert CameraModel.from_yaml(str(tmp_path / "out" / "mini_camera_info.yaml")) == CameraModel.from_yaml(
        TUM_SAMPLE_CAMERA_YAML)
    frames = list(frames_from_bag(str(bag)))
    rect = Rectifier(CameraModel.from_yaml(TUM_SAMPLE_CAMERA_YAML))
    assert [f.stamp_ns for f in frames] == [im.stamp_ns for im in picked]
    for f, im in zip(frames, picked):
        np.testing.assert_allclose(f.K, rect.K_rect, rtol=1e-12)
        raw = compressed_to_rgb8(tum_messages[IMAGE_TOPIC][seq.images.index(im)].message)
        expect, _ = rect.rectify(raw)
        assert np.abs(f.image.astype(float) - expect.astype(float)).mean() < 1.0
        assert np.abs(f.image.astype(float) - raw.astype(float)).mean() > 5.0
    with pytest.raises(SystemExit, match="no image"):
        main(["make-sample", "--tum", str(src), "--out", str(bag), "--start-s", "100"])


def test_readme_sections_are_replaced_one_at_a_time(tmp_path):
    """make-sample rewrites only its own sample's section of data/sample/README.md; a README without
    sections starts afresh with the header; the committed README has both samples' sections."""
    from selfi_ros.apps.make_sample import README_HEADER, update_readme

    (tmp_path / "README.md").write_text("# old single-sample README\n")
    update_readme(str(tmp_path), "woodbox", "## W\nfirst")
    update_readme(str(tmp_path), "tum_fr1_rpy", "## T\nreal")
    update_readme(str(tmp_path), "woodbox", "## W\nsecond")
    text = (tmp_path / "README.md").read_text()
    assert text.startswith(README_HEADER) and "old single-sample" not in text
    assert "second" in text and "first" not in text and "## T\nreal" in text
    assert text.index("sample:woodbox:begin") < text.index("sample:tum_fr1_rpy:begin")
    committed = open(os.path.join(SAMPLE_DIR, "README.md")).read()
    for key in ("woodbox", "tum_fr1_rpy"):
        assert f"<!-- sample:{key}:begin -->" in committed and f"<!-- sample:{key}:end -->" in committed

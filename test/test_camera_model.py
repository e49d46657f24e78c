"""selfi_ros.data.camera_model: CameraInfo / camera_calibration YAML calibrations and their rectification.

The expected values are independent of the module: known 3D points are projected through the lens model by
OpenCV's forward functions (``cv2.projectPoints``, ``cv2.fisheye.projectPoints``) into a raw image of bright
dots; after rectification each dot must lie where a pinhole camera with the rectified intrinsics (P's 3x3)
sees the point. Binning and ROI intrinsics are checked against a hand computation.
"""
from __future__ import annotations

import cv2  # before anything that may import pycolmap (PNG writing)
import numpy as np
import pytest

from selfi_ros.data.camera_model import (
    CameraModel, CameraModelError, Rectifier, RectifierCache, Roi, UnsupportedCameraModel)
from selfi_ros_testing import assert_close_rel

TUM_YAML = "/work/shared/data/tum_fr1_rpy/camera_info.yaml"
W, H = 640, 480
K0 = np.array([[420.0, 0, 322.5], [0, 415.0, 236.0], [0, 0, 1]])


def _rot(deg_x: float, deg_y: float) -> np.ndarray:
    return cv2.Rodrigues(np.radians([deg_x, deg_y, 0.0]))[0]


#: lens models with their forward projection (camera-frame points (N, 3) -> raw pixels (N, 2))
MODELS = {
    # the barrel distortion, a rectifying rotation and a P of other focal length / principal point
    "plumb_bob": dict(D=[-0.35, 0.12, 0.001, -0.002, 0.0], R=_rot(1.5, -2.0),
                      P=[[330.0, 0, 318.0, 0], [0, 330.0, 242.0, 0], [0, 0, 1, 0]]),
    "rational_polynomial": dict(D=[-0.3, 0.1, 0.001, -0.001, 0.0, 0.05, 0.02, 0.0], R=np.eye(3),
                                P=[[360.0, 0, 320.0, 0], [0, 360.0, 240.0, 0], [0, 0, 1, 0]]),
    "equidistant": dict(D=[-0.02, 0.01, -0.004, 0.001], R=_rot(-1.0, 0.5),
                        P=[[220.0, 0, 320.0, 0], [0, 220.0, 240.0, 0], [0, 0, 1, 0]]),
}


def _model(name: str, **over) -> CameraModel:
    kw = dict(width=W, height=H, distortion_model=name, K=K0, **MODELS[name])
    kw.update(over)
    return CameraModel(**kw)


def _project_raw(model: CameraModel, X: np.ndarray) -> np.ndarray:
    """OpenCV's forward lens model (full-resolution raw pixels)."""
    z = np.zeros(3)
    if model.distortion_model == "equidistant":
        uv, _ = cv2.fisheye.projectPoints(X.reshape(-1, 1, 3), z, z, model.K, model.D)
    else:
        uv, _ = cv2.projectPoints(X, z, z, model.K, model.D)
    return uv.reshape(-1, 2)


def _scene(model: CameraModel, step: int = 48, margin: int = 14):
    """Rectified pixel positions q on a grid, their 3D points X (camera frame, depth 1 in the rectified frame)
    and the raw pixels where the lens puts them; only points whose raw pixel is inside the image."""
    P3 = model.P[:, :3]
    v, u = np.mgrid[margin + 6:H - margin:step, margin + 2:W - margin:step]
    q = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64) + 0.37
    rays = np.linalg.solve(P3, np.hstack([q, np.ones((len(q), 1))]).T).T  # rectified camera frame
    X = rays @ model.R  # R maps camera -> rectified, so X_cam = R^T x_rect (row vectors: x_rect @ R)
    raw = _project_raw(model, X)
    ok = (raw[:, 0] > margin) & (raw[:, 0] < W - margin) & (raw[:, 1] > margin) & (raw[:, 1] < H - margin)
    return q[ok], X[ok], raw[ok]


def _dots(size_wh, uv: np.ndarray, sigma: float = 1.6) -> np.ndarray:
    """(H, W, 3) uint8 black image with a Gaussian dot at each (u, v) (pixel centres at integer coordinates)."""
    w, h = size_wh
    img = np.zeros((h, w), np.float64)
    for u, v in uv:
        x0, y0 = int(round(u)), int(round(v))
        ys, xs = np.mgrid[max(y0 - 6, 0):min(y0 + 7, h), max(x0 - 6, 0):min(x0 + 7, w)]
        img[ys, xs] += np.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * sigma ** 2))
    g = np.clip(img * 250, 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def _centroids(img: np.ndarray, near: np.ndarray, r: int = 5) -> np.ndarray:
    g = img[:, :, 0].astype(np.float64)
    out = []
    for u, v in near:
        x0, y0 = int(round(u)), int(round(v))
        ys, xs = np.mgrid[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
        wgt = g[ys, xs]
        wgt = np.where(wgt > 0.1 * wgt.max(), wgt, 0.0)
        out.append([(wgt * xs).sum() / wgt.sum(), (wgt * ys).sum() / wgt.sum()])
    return np.array(out)


def _pinhole(K: np.ndarray, X_rect: np.ndarray) -> np.ndarray:
    x = X_rect @ K.T
    return x[:, :2] / x[:, 2:]


@pytest.mark.parametrize("name", list(MODELS))
def test_rectified_image_is_a_pinhole_image_with_K_rect(name):
    """Dots where the lens puts known 3D points; after rectify() they sit where the pinhole K_rect = P[:, :3]
    projects the points rotated by R, to 0.1 % of the pixel coordinates (0.64 px). In the raw image (the old
    behaviour: raw pixels used as a pinhole image with K) the same dots are many pixels off."""
    model = _model(name)
    q, X, raw = _scene(model)
    assert len(q) >= 40
    r = Rectifier(model)
    assert not r.is_identity
    img = _dots((W, H), raw)
    rect, K_rect = r.rectify(img)
    assert rect.shape == img.shape and rect.dtype == np.uint8 and K_rect.dtype == np.float64
    np.testing.assert_array_equal(K_rect, np.asarray(MODELS[name]["P"])[:, :3])
    expected = _pinhole(K_rect, X @ model.R.T)
    assert_close_rel(expected, q, rel=1e-9)  # the scene's construction
    assert_close_rel(_centroids(rect, expected), expected, rel=1e-3)
    # the old behaviour: the raw dots, read with a pinhole K, are far from the pinhole positions
    assert np.abs(_pinhole(model.K, X) - raw).max() > 5.0
    assert np.abs(_centroids(img, raw) - raw).max() < 0.3  # the dot measurement itself is unbiased


@pytest.mark.parametrize("name", list(MODELS))
def test_rectify_points_inverts_the_lens(name):
    model = _model(name)
    q, X, raw = _scene(model, step=20)
    r = Rectifier(model)
    assert_close_rel(r.rectify_points(raw), _pinhole(r.K_rect, X @ model.R.T), rel=1e-7)


def test_binning_and_roi_intrinsics_by_hand():
    """K_rect of a 2x2-binned ROI: P's 3x3 with the principal point shifted by the ROI offset, then fx, cx
    and fy, cy halved (image_geometry's projectionMatrix()); the raw-image intrinsics likewise from K."""
    K = np.array([[800.0, 0, 640.5], [0, 780.0, 360.25], [0, 0, 1]])
    P = np.array([[700.0, 0, 630.0, 0], [0, 690.0, 350.0, 0], [0, 0, 1, 0]])
    roi = Roi(x_offset=200, y_offset=100, width=800, height=400)
    m = CameraModel(width=1280, height=720, distortion_model="plumb_bob", K=K, D=[-0.2, 0.05, 0, 0, 0], P=P,
                    binning_x=2, binning_y=2, roi=roi)
    assert m.image_size == (400, 200)
    r = Rectifier(m)
    np.testing.assert_allclose(r.K_rect, [[350.0, 0, 215.0], [0, 345.0, 125.0], [0, 0, 1]], rtol=1e-15)
    np.testing.assert_allclose(m.intrinsics(), [[400.0, 0, 220.25], [0, 390.0, 130.125], [0, 0, 1]], rtol=1e-15)
    np.testing.assert_allclose(m.projection()[:, 3], 0.0)
    # the same lens, undistorted at full resolution then cropped and binned, gives the same pixel positions
    full = Rectifier(CameraModel(width=1280, height=720, distortion_model="plumb_bob", K=K, D=m.D, P=P))
    uv_full = np.array([[300.0, 150.0], [640.0, 360.0], [990.0, 480.0], [215.5, 470.25]])
    off = np.array([200.0, 100.0])
    assert_close_rel(r.rectify_points((uv_full - off) / 2), (full.rectify_points(uv_full) - off) / 2, rel=1e-9)
    # binning in x only; no distortion and R = I: no remap, the raw K adjusted
    m1 = CameraModel(width=1280, height=720, distortion_model="plumb_bob", K=K, D=np.zeros(5), P=P, binning_x=4)
    assert m1.image_size == (320, 720)
    r1 = Rectifier(m1)
    assert r1.is_identity
    np.testing.assert_allclose(r1.K_rect, [[200.0, 0, 160.125], [0, 780.0, 360.25], [0, 0, 1]], rtol=1e-15)
    with pytest.raises(ValueError, match="320x720"):
        r1.rectify(np.zeros((720, 1280, 3), np.uint8))


def test_roi_image_equals_the_crop_of_the_full_rectified_image():
    """An ROI image rectified with the ROI calibration = the same region of the full image rectified with
    the full calibration (image_geometry crops its full-size maps), wherever the source lies in the ROI."""
    name = "plumb_bob"
    full = _model(name)
    roi = Roi(x_offset=96, y_offset=64, width=320, height=240)
    part = _model(name, roi=roi)
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 2.0)
    rect_full, K_full = Rectifier(full).rectify(img)
    crop = img[64:64 + 240, 96:96 + 320]
    rect_part, K_part = Rectifier(part).rectify(crop)
    np.testing.assert_allclose(K_part[:2, 2], K_full[:2, 2] - [96, 64])
    mx, my = cv2.initUndistortRectifyMap(full.K, full.D, full.R, full.P[:, :3], (W, H), cv2.CV_32FC1)
    mx, my = mx[64:64 + 240, 96:96 + 320], my[64:64 + 240, 96:96 + 320]
    inside = (mx > 97) & (mx < 96 + 318) & (my > 65) & (my < 64 + 238)
    assert inside.mean() > 0.5
    diff = np.abs(rect_part.astype(int) - rect_full[64:64 + 240, 96:96 + 320].astype(int))[inside]
    assert diff.mean() < 0.3 and diff.max() <= 2


def test_identity_needs_no_remap():
    """D all zero with R = I: the image itself comes back (no copy) with the raw K; an equidistant lens with
    D zero is still a fisheye projection and is remapped; P unset (zeros) is [K | 0], R unset (zeros) is I."""
    img = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    for m in (CameraModel(W, H, "plumb_bob", K0, D=np.zeros(5)), CameraModel(W, H, "", K0),
              CameraModel(W, H, "rational_polynomial", K0, D=np.zeros(8), R=np.zeros((3, 3)), P=np.zeros((3, 4)))):
        r = Rectifier(m)
        assert r.is_identity
        out, K = r.rectify(img)
        assert out is img
        np.testing.assert_array_equal(K, K0)
        np.testing.assert_array_equal(m.P, np.hstack([K0, np.zeros((3, 1))]))
        np.testing.assert_array_equal(m.R, np.eye(3))
    fish = Rectifier(CameraModel(W, H, "equidistant", K0, D=np.zeros(4)))
    assert not fish.is_identity
    theta = np.radians(40.0)  # r = f * theta in the raw image, f * tan(theta) rectified
    raw = np.array([[K0[0, 2] + K0[0, 0] * theta, K0[1, 2]]])
    assert_close_rel(fish.rectify_points(raw), [[K0[0, 2] + K0[0, 0] * np.tan(theta), K0[1, 2]]], rel=1e-9)


def test_unknown_models_are_refused():
    for m in (CameraModel(W, H, "kannala_brandt", K0, D=[0.1, 0, 0, 0]), CameraModel(W, H, "fov", K0, D=[0.9]),
              CameraModel(W, H, "", K0, D=[-0.3, 0.1, 0, 0, 0])):
        assert not m.supported
        with pytest.raises(UnsupportedCameraModel, match="not supported"):
            Rectifier(m)
    with pytest.raises(CameraModelError, match="equidistant takes 4"):
        CameraModel(W, H, "equidistant", K0, D=[0.1, 0.2, 0.0, 0.0, 0.0])
    with pytest.raises(CameraModelError, match="plumb_bob takes 5"):
        CameraModel(W, H, "plumb_bob", K0, D=[0.1, 0.2, 0.0])
    with pytest.raises(CameraModelError, match="R is not a rotation"):
        CameraModel(W, H, "plumb_bob", K0, R=np.diag([1.0, 2.0, 1.0]))
    with pytest.raises(CameraModelError, match="P is not a projection"):
        CameraModel(W, H, "plumb_bob", K0, P=np.ones((3, 4)))
    with pytest.raises(CameraModelError, match="roi"):
        CameraModel(W, H, "plumb_bob", K0, roi=Roi(600, 0, 100, 100))


def test_cache_builds_maps_once_per_calibration():
    cache = RectifierCache(maxsize=2)
    a, b = _model("plumb_bob"), _model("plumb_bob")
    assert a is not b and a == b and hash(a) == hash(b)
    ra = cache.get(a)
    assert cache.get(b) is ra
    img = np.zeros((H, W, 3), np.uint8)
    ra.rectify(img)
    maps = ra.maps((W, H))
    cache.get(b).rectify(img)
    assert ra.maps((W, H))[0] is maps[0]
    cache.get(_model("equidistant"))
    cache.get(_model("rational_polynomial"))
    assert len(cache) == 2 and cache.get(a) is not ra  # least recently used dropped


def test_yaml_tum_file():
    m = CameraModel.from_yaml(TUM_YAML)
    assert (m.width, m.height, m.distortion_model) == (640, 480, "plumb_bob")
    np.testing.assert_array_equal(m.K, [[517.306408, 0, 318.643040], [0, 516.469215, 255.313989], [0, 0, 1]])
    np.testing.assert_array_equal(m.D, [0.262383, -0.953104, -0.005358, 0.002628, 1.163314])
    np.testing.assert_array_equal(m.P, np.hstack([m.K, np.zeros((3, 1))]))
    assert not Rectifier(m).is_identity


def test_yaml_round_trip(tmp_path):
    for m in (_model("equidistant"), _model("plumb_bob", binning_x=2, binning_y=1, roi=Roi(8, 4, 320, 240, True)),
              _model("rational_polynomial")):
        path = m.save_yaml(str(tmp_path / "sub" / f"{m.distortion_model}.yaml"), camera_name="cam")
        back = CameraModel.from_yaml(path)
        assert back == m
        assert back.roi == m.roi and back.binning == m.binning


def test_yaml_defaults_and_errors(tmp_path):
    text = open(TUM_YAML).read()
    no_p = text.split("projection_matrix:")[0].replace("rectification_matrix:", "unused_key:")
    p = tmp_path / "nop.yaml"
    p.write_text(no_p)
    m = CameraModel.from_yaml(str(p))
    np.testing.assert_array_equal(m.P, np.hstack([m.K, np.zeros((3, 1))]))
    np.testing.assert_array_equal(m.R, np.eye(3))

    def err(content: str, *words, exc=CameraModelError):
        f = tmp_path / "bad.yaml"
        f.write_text(content)
        with pytest.raises(exc) as e:
            CameraModel.from_yaml(str(f))
        msg = str(e.value)
        assert str(f) in msg and "\n" not in msg, msg
        for w in words:
            assert w in msg, msg

    err(text.replace("camera_matrix:", "camera_matrx:"), "missing key 'camera_matrix'")
    err(text.replace("distortion_model: plumb_bob", "distortion_model: kannala_brandt"), "distortion_model",
        "kannala_brandt", exc=UnsupportedCameraModel)
    err(text.replace("rows: 1\n  cols: 5", "rows: 1\n  cols: 4"), "distortion_coefficients", "rows x cols")
    err(text.replace("distortion_model: plumb_bob", "distortion_model: equidistant"), "distortion_coefficients",
        "equidistant takes 4")
    err(text.replace("517.306408, 0.0, 318.643040", "-517.3, 0.0, 318.643040"), "camera_matrix", "fx")
    err(text.replace("image_width: 640", "image_width: wide"), "image_width")
    err("camera_matrix: [1, 2", "not valid YAML")
    err("- just a list", "not a camera_calibration YAML")
    with pytest.raises(CameraModelError, match="cannot read"):
        CameraModel.from_yaml(str(tmp_path / "missing.yaml"))

"""The bundled sample sequence: POV-Ray rendering with exact ground truth (no ROS; the bag is written by
:mod:`selfi_ros.apps.make_sample`).

The sample is a smooth camera orbit (with a slow height and look-at wander) around the textured wooden
box of POV-Ray's example scene ``advanced/woodbox.pov`` (Dan Farmer, POV-Team 1995, CC-BY-SA-3.0).
Because the images are rendered, the ground truth is exact: each frame is rendered with an explicit
``camera { perspective location L look_at A right x*W/H up y angle 60 }`` appended to the scene (the
last camera statement wins), so

* intrinsics: ``fx = fy = (W/2) / tan(60deg/2)``, principal point at the image centre
  (``cx = W/2 - 0.5, cy = H/2 - 0.5`` in the OpenCV convention of pixel centres at integers; checked by
  :func:`verify_ground_truth`, which renders small emissive markers at known points and compares their
  image centroids with the projection through the ground truth);
* extrinsics: POV-Ray is left-handed with y up. Its look-at camera has forward ``d = (A-L)/|A-L|``,
  right ``r = normalise(y x d)`` and up ``u = d x r``. The map frame used here is right-handed and z-up
  (REP-103): ``map = (x_pov, z_pov, y_pov)``. The OpenCV optical camera axes are ``(r, -u, d)``, hence
  ``R_map_cam = P [r | -u | d]`` with ``P`` the x/z/y swap (det P = det[r|-u|d] = -1, so R is a rotation).

Outputs of :mod:`selfi_ros.apps.make_sample` (``data/sample`` by default): ``woodbox_orbit.mcap``
holding ``sensor_msgs/CompressedImage`` (JPEG) on ``/camera/image_raw/compressed``,
``sensor_msgs/CameraInfo`` on ``/camera/camera_info`` and ``geometry_msgs/PoseStamped`` (``T_map_cam`` of
the optical frame) on ``/ground_truth/pose``; the same ground truth as ``groundtruth.tum``
(``t tx ty tz qx qy qz qw``, seconds, map frame); and README.md.

Needs ``povray`` (Debian: ``apt-get install povray povray-includes povray-examples``); only used to
re-create the committed files, never at run time.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np


#: where ``make-sample`` writes by default: ``data/sample`` of this checkout
SAMPLE_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "data", "sample"))

#: where Debian's povray-examples puts the scene
SCENE_PATH = "/usr/share/doc/povray/examples/advanced/woodbox.pov"
#: horizontal field of view of the rendered camera (degrees)
FOV_DEG = 60.0
#: first stamp of the sequence (ns); an arbitrary fixed epoch so the bag is reproducible
T0_NS = 1_763_000_000_000_000_000

# POV-Ray (x, y, z) -> map (x, y, z) = (x_pov, z_pov, y_pov)
P_MAP_POV = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


@dataclass
class PovCamera:
    """One POV-Ray look-at camera, in POV-Ray (left-handed, y-up) coordinates (scene units)."""

    location: np.ndarray  # (3,)
    look_at: np.ndarray  # (3,)


def intrinsics(width: int, height: int, fov_deg: float = FOV_DEG) -> np.ndarray:
    """(3, 3) float64 K of a POV-Ray ``angle fov_deg`` camera with square pixels (``right x*W/H up y``).

    Principal point in the OpenCV convention (pixel centres at integer coordinates).
    """
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0 - 0.5], [0.0, f, height / 2.0 - 0.5], [0.0, 0.0, 1.0]])


def pov_camera_to_T_map_cam(cam: PovCamera) -> np.ndarray:
    """(4, 4) float64 ``T_map_cam`` (OpenCV optical axes, right-handed z-up map) of a POV-Ray look-at camera.

    Raises:
        ValueError: if the camera looks straight up or down (look-at undefined with sky = +y).
    """
    L = np.asarray(cam.location, dtype=np.float64)
    d = np.asarray(cam.look_at, dtype=np.float64) - L
    d /= np.linalg.norm(d)
    r = np.cross(np.array([0.0, 1.0, 0.0]), d)
    if np.linalg.norm(r) < 1e-9:
        raise ValueError("POV-Ray look-at camera pointing along the sky vector")
    r /= np.linalg.norm(r)
    u = np.cross(d, r)
    R = P_MAP_POV @ np.stack([r, -u, d], axis=1)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = P_MAP_POV @ L
    return T


def pov_points_to_map(points_pov: np.ndarray) -> np.ndarray:
    """(N, 3) POV-Ray points -> (N, 3) map-frame points (the x/z/y swap)."""
    return np.asarray(points_pov, dtype=np.float64) @ P_MAP_POV.T


def orbit_path(n_frames: int) -> list[PovCamera]:
    """The sample's camera path: an 80 degree arc around the box (radius 9.5-11.5, height 5-6.6 units)
    with a slow look-at wander, so consecutive frames overlap strongly (1.7 degrees per frame at 48)."""
    cams = []
    for i in range(n_frames):
        s = i / max(n_frames - 1, 1)
        theta = math.radians(215.0 + 80.0 * s)
        radius = 10.5 - 1.0 * math.cos(2 * math.pi * s)
        height = 5.8 + 0.8 * math.sin(2 * math.pi * s * 1.5)
        loc = np.array([radius * math.cos(theta), height, radius * math.sin(theta)])
        look = np.array([0.6 * math.sin(2 * math.pi * s), 0.8, 0.6 * math.cos(math.pi * s) - 0.3])
        cams.append(PovCamera(loc, look))
    return cams


def _camera_statement(cam: PovCamera, width: int, height: int) -> str:
    L, A = cam.location, cam.look_at
    return (f"camera {{ perspective location <{L[0]:.6f}, {L[1]:.6f}, {L[2]:.6f}> "
            f"right x*{width}/{height} up y angle {FOV_DEG:.6f} "
            f"look_at <{A[0]:.6f}, {A[1]:.6f}, {A[2]:.6f}> }}\n")


def render(scene_text: str, cam: PovCamera, width: int, height: int, workdir: str, name: str,
           antialias: bool = True) -> np.ndarray:
    """Render ``scene_text`` plus ``cam`` with POV-Ray; returns (H, W, 3) uint8 RGB.

    Raises:
        RuntimeError: if povray is missing or fails.
    """
    import cv2

    if shutil.which("povray") is None:
        raise RuntimeError("povray not found: apt-get install povray povray-includes povray-examples")
    pov = os.path.join(workdir, name + ".pov")
    png = os.path.join(workdir, name + ".png")
    with open(pov, "w") as fh:
        fh.write(scene_text + "\n" + _camera_statement(cam, width, height))
    cmd = ["povray", f"+I{pov}", f"+O{png}", f"+W{width}", f"+H{height}", "-D", "+FN", "-V", "-GA",
           f"+L{os.path.dirname(SCENE_PATH)}"]
    cmd.append("+A0.3" if antialias else "-A")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not os.path.exists(png):
        raise RuntimeError(f"povray failed ({res.returncode}): {res.stderr[-2000:]}")
    bgr = cv2.imread(png, cv2.IMREAD_COLOR)
    return bgr[:, :, ::-1].copy()


def project(K: np.ndarray, T_map_cam: np.ndarray, points_map: np.ndarray) -> np.ndarray:
    """Pinhole projection (no distortion) of (N, 3) map points through ``T_map_cam``; returns (N, 2) px."""
    T_cam_map = np.linalg.inv(T_map_cam)
    pc = points_map @ T_cam_map[:3, :3].T + T_cam_map[:3, 3]
    uv = pc @ K.T
    return uv[:, :2] / uv[:, 2:3]


#: POV-Ray points used as markers by :func:`verify_ground_truth` (on and around the box)
MARKERS_POV = np.array([[0.0, 1.0, 0.0], [3.75, 0.3, -2.75], [-3.75, 0.3, -2.75], [-3.75, 2.0, 2.75],
                        [3.0, 0.2, 3.0], [-2.0, 3.0, -1.0], [1.5, 1.5, -0.75]])


def verify_ground_truth(cams: list[PovCamera], width: int, height: int, workdir: str) -> float:
    """Render small emissive spheres at :data:`MARKERS_POV` (black scene, same cameras), find their image
    centroids and return the max distance (px) to their projection through :func:`intrinsics` and
    :func:`pov_camera_to_T_map_cam`. Checks the handedness swap, the axes and the principal point."""
    import cv2

    K = intrinsics(width, height)
    spheres = "\n".join(
        f"sphere {{ <{p[0]}, {p[1]}, {p[2]}>, 0.06 pigment {{ rgb 1 }} finish {{ emission 1 diffuse 0 }} }}"
        for p in MARKERS_POV)
    scene = "#version 3.7;\nglobal_settings { assumed_gamma 1.0 }\nbackground { rgb 0 }\n" + spheres
    worst = 0.0
    for k, cam in enumerate(cams):
        img = render(scene, cam, width, height, workdir, f"verify_{k}")
        grey = img.astype(np.float64).mean(axis=2)
        uv = project(K, pov_camera_to_T_map_cam(cam), pov_points_to_map(MARKERS_POV))
        n, labels = cv2.connectedComponents((grey > 20).astype(np.uint8))
        for j in range(len(MARKERS_POV)):
            u, v = uv[j]
            if not (5 <= u < width - 5 and 5 <= v < height - 5):
                continue
            others = np.delete(uv, j, axis=0)
            if len(others) and np.min(np.linalg.norm(others - uv[j], axis=1)) < 8.0:
                continue  # two markers overlap in this view: their blobs merge
            lab = labels[int(round(v)), int(round(u))]
            if lab == 0:
                raise AssertionError(f"frame {k}: marker {j} not rendered near its projection ({u:.1f}, {v:.1f})")
            ys, xs = np.nonzero(labels == lab)
            w = grey[ys, xs]
            c = np.array([np.sum(xs * w), np.sum(ys * w)]) / np.sum(w)
            worst = max(worst, float(np.linalg.norm(c - uv[j])))
    return worst

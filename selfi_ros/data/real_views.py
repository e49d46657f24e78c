"""`python -m selfi_ros.data.real_views`: real photographs with calibrated poses for the CPU backend test.

Source: OpenCV's stereo-calibration sample views ``left01..left14.jpg`` (no ``left10``; 13 real 640x480
grey photographs of a 9x6-inner-corner chessboard with 25 mm squares, in front of a room) and
``left_intrinsics.yml`` (Debian package ``opencv-doc``, ``/usr/share/doc/opencv-doc/examples/data/``;
OpenCV sample data, Apache-2.0 / BSD-3-Clause). The YAML holds K, the 5 distortion coefficients
``k1 k2 p1 p2 k3`` and one ``rvec, tvec`` per view (Zhang's calibration as run by OpenCV's
``calibration`` sample: ``X_cam = R(rvec) X_board + tvec``, board points ``(j*s, i*s, 0)`` for column j,
row i, square size s in metres). Row n of the extrinsics belongs to the n-th file in name order.

What it writes (``data/real_chessboard`` by default):

* ``leftNN.jpg``: each view undistorted with ``cv2.undistort`` keeping the same K as the new camera
  matrix, so the committed images are pinhole images with intrinsics ``K`` (the backends take no
  distortion). Grey, saved as JPEG quality 85.
* ``intrinsics.json``: ``{"K": 3x3, "width", "height", "source_distortion": [...]}`` (OpenCV K, pixel
  centres at integers).
* ``groundtruth.tum``: ``t tx ty tz qx qy qz qw`` per view, ``t`` = the view number NN of ``leftNN.jpg``
  (seconds), pose ``T_board_cam`` (camera-to-board, OpenCV optical axes; the board frame is the map:
  origin at the first inner corner, x along the 9 corners of a row, y along the 6 rows, z into the board),
  metres.
* ``README.md`` with the credit and the ground-truth check of this run.

Ground-truth check (:func:`check_ground_truth`): chessboard corners are detected on the *undistorted*
images (``cv2.findChessboardCorners`` + ``cornerSubPix``) and compared with the board points projected
through K and the calibrated pose; the RMS (px) is printed and written into the README.

Needs ``opencv-doc`` only to re-create the committed files; tests use the committed files.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

import numpy as np

from selfi_ros.engine.io import write_tum_matrices

#: where the views and YAML lie once ``opencv-doc`` is installed
OPENCV_DATA_DIR = "/usr/share/doc/opencv-doc/examples/data"
#: view numbers of the 13 files (``left10.jpg`` does not exist)
VIEW_NUMBERS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)
#: default output folder: ``data/real_chessboard`` of this checkout
REAL_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "data", "real_chessboard"))


@dataclass
class Calibration:
    """Contents of ``left_intrinsics.yml``.

    Attributes:
        K: (3, 3) float64 OpenCV intrinsics (px).
        dist: (5,) float64 distortion ``k1 k2 p1 p2 k3``.
        rvecs, tvecs: (N, 3) float64 board-to-camera rotation vectors (rad) and translations (m).
        board_size: (columns, rows) of inner corners, (9, 6).
        square: square size in metres.
        size_wh: (width, height) of the images in px.
    """

    K: np.ndarray
    dist: np.ndarray
    rvecs: np.ndarray
    tvecs: np.ndarray
    board_size: tuple
    square: float
    size_wh: tuple


def read_calibration(path: str) -> Calibration:
    """Read an OpenCV calibration YAML (``cv2.FileStorage``); raises ValueError on missing nodes/shapes."""
    import cv2

    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
    if not fs.isOpened():
        raise ValueError(f"cannot open calibration file {path}")
    try:
        K = fs.getNode("camera_matrix").mat()
        dist = fs.getNode("distortion_coefficients").mat()
        ext = fs.getNode("extrinsic_parameters").mat()
        bw = int(fs.getNode("board_width").real())
        bh = int(fs.getNode("board_height").real())
        sq = float(fs.getNode("square_size").real())
        w = int(fs.getNode("image_width").real())
        h = int(fs.getNode("image_height").real())
    finally:
        fs.release()
    if K is None or K.shape != (3, 3) or ext is None or ext.ndim != 2 or ext.shape[1] != 6:
        raise ValueError(f"{path}: expected camera_matrix 3x3 and extrinsic_parameters Nx6")
    return Calibration(K=K.astype(np.float64), dist=dist.reshape(-1).astype(np.float64),
                       rvecs=ext[:, :3].astype(np.float64), tvecs=ext[:, 3:].astype(np.float64),
                       board_size=(bw, bh), square=sq, size_wh=(w, h))


def board_points(board_size: tuple, square: float) -> np.ndarray:
    """(rows*cols, 3) float64 board corners in metres, ``(j*s, i*s, 0)``, row-major (OpenCV's order)."""
    cols, rows = board_size
    j, i = np.meshgrid(np.arange(cols), np.arange(rows))
    return np.stack([j.ravel() * square, i.ravel() * square, np.zeros(rows * cols)], axis=1)


def pose_board_cam(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """Board-to-camera ``rvec, tvec`` -> (4, 4) ``T_board_cam`` (camera-to-board, metres)."""
    import cv2

    R, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3, 1))
    T = np.eye(4)
    T[:3, :3] = R.T
    T[:3, 3] = -R.T @ np.asarray(tvec, dtype=np.float64).reshape(3)
    return T


def check_ground_truth(images: dict, K: np.ndarray, poses: dict, board_size: tuple, square: float) -> dict:
    """Reprojection check of calibrated poses on undistorted images.

    Args:
        images: view number -> (H, W) uint8 undistorted grey image.
        K: (3, 3) pinhole intrinsics of those images.
        poses: view number -> (4, 4) ``T_board_cam``.
    Returns:
        view number -> RMS (px) between detected corners and projected board points, or NaN where the
        board is not detected. The corner order of the detector may be reversed w.r.t. the calibration
        (a 180-degree symmetric board), so the smaller of the two RMS is taken.
    """
    import cv2

    obj = board_points(board_size, square)
    out = {}
    for n, img in images.items():
        ok, corners = cv2.findChessboardCorners(img, board_size)
        if not ok:
            out[n] = float("nan")
            continue
        corners = cv2.cornerSubPix(img, corners, (11, 11), (-1, -1),
                                   (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01))
        det = corners.reshape(-1, 2).astype(np.float64)
        T_cam_board = np.linalg.inv(poses[n])
        Xc = obj @ T_cam_board[:3, :3].T + T_cam_board[:3, 3]
        uv = (Xc @ K.T)[:, :2] / Xc[:, 2:3]
        rms = min(float(np.sqrt(np.mean(np.sum((d - uv) ** 2, axis=1)))) for d in (det, det[::-1]))
        out[n] = rms
    return out


def make(src_dir: str = OPENCV_DATA_DIR, out_dir: str = REAL_DIR, quality: int = 85) -> dict:
    """Write the undistorted views, K, ground truth and README to ``out_dir``; return the check RMS."""
    import cv2

    yml = os.path.join(src_dir, "left_intrinsics.yml")
    if not os.path.isfile(yml):
        raise FileNotFoundError(f"{yml} not found: install the Debian package opencv-doc")
    cal = read_calibration(yml)
    if len(cal.rvecs) != len(VIEW_NUMBERS):
        raise ValueError(f"{yml}: expected {len(VIEW_NUMBERS)} views, got {len(cal.rvecs)}")
    os.makedirs(out_dir, exist_ok=True)
    images, poses = {}, {}
    for row, n in enumerate(VIEW_NUMBERS):
        path = os.path.join(src_dir, f"left{n:02d}.jpg")
        img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if img is None or img.shape[::-1] != tuple(cal.size_wh):
            raise ValueError(f"{path}: missing or not {cal.size_wh[0]}x{cal.size_wh[1]}")
        und = cv2.undistort(img, cal.K, cal.dist, None, cal.K)
        cv2.imwrite(os.path.join(out_dir, f"left{n:02d}.jpg"), und, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        images[n] = cv2.imread(os.path.join(out_dir, f"left{n:02d}.jpg"), cv2.IMREAD_GRAYSCALE)  # as committed
        poses[n] = pose_board_cam(cal.rvecs[row], cal.tvecs[row])
    with open(os.path.join(out_dir, "intrinsics.json"), "w") as f:
        json.dump({"K": cal.K.tolist(), "width": cal.size_wh[0], "height": cal.size_wh[1],
                   "source_distortion_k1_k2_p1_p2_k3": cal.dist.tolist(),
                   "board_inner_corners_cols_rows": list(cal.board_size), "square_size_m": cal.square},
                  f, indent=1)
    write_tum_matrices(os.path.join(out_dir, "groundtruth.tum"), [n * 1_000_000_000 for n in VIEW_NUMBERS],
                       [poses[n] for n in VIEW_NUMBERS],
                       comments=["T_board_cam of OpenCV sample views leftNN.jpg (t = NN), board frame = map, metres",
                                 "t tx ty tz qx qy qz qw"])
    rms = check_ground_truth(images, cal.K, poses, cal.board_size, cal.square)
    _write_readme(out_dir, cal, rms)
    return rms


def _write_readme(out_dir: str, cal: Calibration, rms: dict) -> None:
    found = [v for v in rms.values() if np.isfinite(v)]
    table = "\n".join(f"| left{n:02d} | {v:.3f} |" for n, v in rms.items())
    text = f"""# Real chessboard views with calibrated poses

13 real 640x480 grey photographs of a chessboard (9x6 inner corners, 25 mm squares) with the room
behind it: OpenCV's calibration sample views `left01..left14.jpg` (no `left10`) and their calibration
`left_intrinsics.yml`, from OpenCV's sample data (Debian package `opencv-doc`,
`/usr/share/doc/opencv-doc/examples/data/`). OpenCV (https://opencv.org) is licensed Apache-2.0
(4.5 and later; BSD-3-Clause before); the images are credited to the OpenCV project.

Made by `python -m selfi_ros.data.real_views` (needs `opencv-doc`):

- `leftNN.jpg`: the view undistorted with `cv2.undistort` (new camera matrix = K), grey, JPEG quality 85.
- `intrinsics.json`: pinhole K of the undistorted images (OpenCV convention) and the source distortion.
- `groundtruth.tum`: `t tx ty tz qx qy qz qw` with t = NN; `T_board_cam` (camera-to-board, OpenCV optical
  axes) from the calibration's rvec/tvec; board frame: origin at the first inner corner, x along a row
  of 9 corners, y across the 6 rows, z into the board; metres.

Ground-truth check (this run): corners detected on the undistorted images (`cv2.findChessboardCorners`
+ `cornerSubPix`) vs the board projected through K and the pose: RMS over the {len(found)} views where
the board is found = {np.sqrt(np.mean(np.square(found))):.3f} px (max {max(found):.3f} px; the
calibration itself reports {len(cal.rvecs)} per-view errors 0.16-1.18 px).

| view | RMS px |
|---|---|
{table}
"""
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=OPENCV_DATA_DIR, help="folder with left*.jpg and left_intrinsics.yml")
    p.add_argument("--out", default=REAL_DIR, help="output folder")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality")
    a = p.parse_args(argv)
    rms = make(a.src, a.out, a.quality)
    for n, v in rms.items():
        print(f"left{n:02d}: GT reprojection RMS {v:.3f} px")
    found = [v for v in rms.values() if np.isfinite(v)]
    print(f"overall RMS {np.sqrt(np.mean(np.square(found))):.3f} px over {len(found)} views -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

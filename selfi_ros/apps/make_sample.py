"""``selfi-ros make-sample``: render the bundled sample with POV-Ray (:mod:`selfi_ros.data.sample`) and write it
as a ROS 2 MCAP bag, a TUM ground truth and a README into ``data/sample``.

Needs ``povray`` (Debian: ``apt-get install povray povray-includes povray-examples``); only used to
re-create the committed files, never at run time.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from selfi_ros.data import CAMERA_FRAME, CAMERA_INFO_TOPIC, GT_TOPIC, IMAGE_TOPIC, MAP_FRAME
from selfi_ros.data.sample import (SAMPLE_DIR, SCENE_PATH, T0_NS, intrinsics, orbit_path, pov_camera_to_T_map_cam,
                                   render, verify_ground_truth)
from selfi_ros.engine.io import write_tum_matrices


def write_bag(path: str, images: list[np.ndarray], K: np.ndarray, T_list: list[np.ndarray],
              stamps_ns: list[int], jpeg_quality: int) -> int:
    """Write the sample bag (see module docstring); returns the number of messages."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    from selfi_ros.ros.bag import BagWriter
    from selfi_ros.ros.conversions import K_to_camera_info, ns_to_stamp, pose_stamped

    h, w = images[0].shape[:2]
    with BagWriter(path) as bag:
        for img, T, t in zip(images, T_list, stamps_ns):
            ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            cim = CompressedImage()  # by hand, not rgb8_to_compressed: the committed bag's format string
            cim.header.stamp = ns_to_stamp(t)
            cim.header.frame_id = CAMERA_FRAME
            cim.format = "rgb8; jpeg compressed bgr8"
            cim.data = buf.tobytes()
            bag.write(CAMERA_INFO_TOPIC, K_to_camera_info(K, w, h, t, CAMERA_FRAME), t)
            bag.write(IMAGE_TOPIC, cim, t)
            bag.write(GT_TOPIC, pose_stamped(T, MAP_FRAME, t), t)
        return bag.count


README_TEXT = """# Sample sequence: orbit around POV-Ray's "woodbox" scene

Made by `selfi-ros make-sample` (source: `selfi_ros/data/sample.py`); do not edit by hand.

| file | content |
|---|---|
| `woodbox_orbit.mcap` | ROS 2 bag (MCAP): `{image_topic}` (`sensor_msgs/CompressedImage`, JPEG q{q}), `{info_topic}` (`sensor_msgs/CameraInfo`), `{gt_topic}` (`geometry_msgs/PoseStamped`, `T_map_cam` of `{cam}` in `{map}`) |
| `groundtruth.tum` | the same ground truth in TUM format: `t tx ty tz qx qy qz qw` (s, scene units, map frame) |

- {n} frames, {w}x{h} px, {hz:g} Hz (stamps from {t0} ns), pinhole K: fx = fy = {fx:.4f}, cx = {cx:.1f}, cy = {cy:.1f}, no distortion.
- The images are **rendered** (POV-Ray 3.7 ray tracer), not photographs: the ground truth is exact by
  construction. Map frame: right-handed, z up, `(x, y, z) = (x_pov, z_pov, y_pov)`; camera: OpenCV optical
  axes (x right, y down, z forward). Units: POV-Ray scene units (the box is 7.5 x 5.5 units).
- Ground truth verified by rendering emissive markers at known scene points with the same cameras:
  worst reprojection error {verr:.2f} px.
- Path: an 80 degree arc around the box, radius 9.5-11.5, height 5-6.6, slow look-at wander.

## Credit and licence
Scene: `advanced/woodbox.pov` from the POV-Ray 3.7 example scenes (Debian package `povray-examples`),
"POV-Ray scene file by Dan Farmer, Copyright POV-Team, 1995", licensed under the Creative Commons
Attribution-ShareAlike 3.0 Unported License (https://creativecommons.org/licenses/by-sa/3.0/).
The rendered images in this bag are a derived work and are shared under the same licence (CC-BY-SA-3.0).
"""


def make_sample(out_dir: str = SAMPLE_DIR, n_frames: int = 48, width: int = 480, height: int = 360,
                rate_hz: float = 5.0, jpeg_quality: int = 85, verify: bool = True) -> dict:
    """Render the sequence and write bag, TUM ground truth and README into ``out_dir``; returns a summary.

    Raises:
        RuntimeError: povray missing or failing; AssertionError: ground-truth check failed (> 0.5 px).
    """
    if not os.path.exists(SCENE_PATH):
        raise RuntimeError(f"{SCENE_PATH} missing: apt-get install povray-examples povray-includes")
    os.makedirs(out_dir, exist_ok=True)
    cams = orbit_path(n_frames)
    K = intrinsics(width, height)
    T_list = [pov_camera_to_T_map_cam(c) for c in cams]
    stamps = [T0_NS + int(round(i * 1e9 / rate_hz)) for i in range(n_frames)]
    with tempfile.TemporaryDirectory(prefix="selfi_sample_") as work:
        verr = verify_ground_truth([cams[0], cams[n_frames // 2], cams[-1]], width, height, work) if verify \
            else float("nan")
        if verify and not verr < 0.5:
            raise AssertionError(f"ground truth does not match the renders: {verr:.2f} px")
        scene = f'#include "{os.path.basename(SCENE_PATH)}"\n'
        images = []
        for i, cam in enumerate(cams):
            images.append(render(scene, cam, width, height, work, f"frame_{i:04d}"))
            print(f"rendered {i + 1}/{n_frames}", flush=True)
    from selfi_ros.data import SAMPLE_BAG, SAMPLE_GT_TUM

    bag_path = os.path.join(out_dir, os.path.basename(SAMPLE_BAG))
    tum_path = os.path.join(out_dir, os.path.basename(SAMPLE_GT_TUM))
    count = write_bag(bag_path, images, K, T_list, stamps, jpeg_quality)
    write_tum_matrices(tum_path, stamps, T_list)
    with open(os.path.join(out_dir, "README.md"), "w") as fh:
        fh.write(README_TEXT.format(image_topic=IMAGE_TOPIC, info_topic=CAMERA_INFO_TOPIC, gt_topic=GT_TOPIC,
                                    cam=CAMERA_FRAME, map=MAP_FRAME, q=jpeg_quality, n=n_frames, w=width,
                                    h=height, hz=rate_hz, t0=T0_NS, fx=K[0, 0], cx=K[0, 2], cy=K[1, 2],
                                    verr=verr))
    return {"bag": bag_path, "groundtruth": tum_path, "messages": count, "verify_px": verr,
            "bag_bytes": os.path.getsize(bag_path)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=SAMPLE_DIR, help="output folder (default: the committed data/sample)")
    parser.add_argument("--frames", type=int, default=48, help="number of frames")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--rate", type=float, default=5.0, help="frame rate of the stamps (Hz)")
    parser.add_argument("--jpeg-quality", type=int, default=85)
    parser.add_argument("--no-verify", action="store_true", help="skip the marker check of the ground truth")


def run(args: argparse.Namespace) -> int:
    summary = make_sample(args.out, args.frames, args.width, args.height, args.rate, args.jpeg_quality,
                          verify=not args.no_verify)
    for k, v in summary.items():
        print(f"{k}: {v}")
    return 0

"""``selfi-ros make-sample``: write a sample as a ROS 2 MCAP bag with its ground truth beside it.

Two sources:

* ``selfi-ros make-sample --tum DIR --out BAG [--start-s S --duration-s D --every N --compressed
  --jpeg-quality Q]``: a TUM RGB-D sequence (:mod:`selfi_ros.data.tum`): its images, as recorded (distorted),
  at the recorded rate (header stamps and bag log times = the ``rgb.txt`` timestamps) as
  ``sensor_msgs/Image`` rgb8 on ``/camera/image_raw`` or, with ``--compressed``, ``sensor_msgs/CompressedImage``
  on ``/camera/image_raw/compressed`` (the original JPEG bytes with ``--jpeg-quality 0``, else re-encoded);
  before each image a ``sensor_msgs/CameraInfo`` on ``/camera/camera_info`` with the same stamp and the
  FULL calibration of the folder's ``camera_info.yaml`` (or ``--camera-info``): distortion model and D, K,
  R, P. Beside the bag: ``<stem>_groundtruth.txt`` (the ground-truth lines of the span, TUM format as
  published) and ``<stem>_camera_info.yaml``. The committed real sample is made with
  ``selfi-ros make-sample --tum ../shared/data/tum_fr1_rpy`` + :data:`TUM_SAMPLE_ARGS`.
* without ``--tum``: render the POV-Ray sample (:mod:`selfi_ros.data.sample`) into ``--out`` (a folder):
  bag, TUM ground truth. Needs ``povray`` (Debian: ``apt-get install povray povray-includes
  povray-examples``); only used to re-create the committed files, never at run time.

Writing into the committed ``data/sample`` also rewrites that sample's section of its README.md.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from typing import Optional

import numpy as np

from selfi_ros.data import (CAMERA_FRAME, CAMERA_INFO_TOPIC, GT_TOPIC, IMAGE_TOPIC, MAP_FRAME, RAW_IMAGE_TOPIC,
                            TUM_SAMPLE_BAG)
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


README_TEXT = """## Rendered sample: orbit around POV-Ray's "woodbox" scene (`selfi-ros demo --sample woodbox`)

Made by `selfi-ros make-sample` (source: `selfi_ros/data/sample.py`); do not edit this section by hand.

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

Credit and licence: scene `advanced/woodbox.pov` from the POV-Ray 3.7 example scenes (Debian package `povray-examples`),
"POV-Ray scene file by Dan Farmer, Copyright POV-Team, 1995", licensed under the Creative Commons
Attribution-ShareAlike 3.0 Unported License (https://creativecommons.org/licenses/by-sa/3.0/).
The rendered images in this bag are a derived work and are shared under the same licence (CC-BY-SA-3.0).
"""


README_HEADER = """# Sample data

Two samples, each made by a committed command (`selfi-ros make-sample`, `selfi_ros/apps/make_sample.py`).
`make demo` / `selfi-ros demo` plays the real one (`tum_fr1_rpy`); `selfi-ros demo --sample woodbox` the
rendered one. The sections below are written by `make-sample`; do not edit them by hand.
"""


def update_readme(folder: str, key: str, section: str) -> str:
    """Replace (or append) the section ``key`` of ``folder/README.md`` (between ``<!-- sample:KEY:begin -->``
    and ``<!-- sample:KEY:end -->``), keeping the other sections; a README without sections is started
    afresh with :data:`README_HEADER`. Written atomically; returns the path."""
    from selfi_ros.atomic import atomic_write_text

    path = os.path.join(folder, "README.md")
    begin, end = f"<!-- sample:{key}:begin -->", f"<!-- sample:{key}:end -->"
    text = open(path).read() if os.path.exists(path) else ""
    if "<!-- sample:" not in text:
        text = README_HEADER
    block = f"{begin}\n{section.strip()}\n{end}"
    if begin in text and end in text:
        a, b = text.index(begin), text.index(end) + len(end)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    return atomic_write_text(path, text)


#: how the committed real sample is made: 12 s from the start of freiburg1_rpy, every 3rd frame (10 Hz, what
#: the CPU colmap backend can follow; see data/sample/README.md), JPEG q75 (4 MB)
TUM_SAMPLE_ARGS = ["--duration-s", "12", "--every", "3", "--compressed", "--jpeg-quality", "75"]

TUM_README_TEXT = """## Real sample: TUM RGB-D `freiburg1_rpy`, {dur:.1f} s (the demo's default)

Made by `selfi-ros make-sample --tum <TUM folder>{args}` from TUM's own files (source:
`selfi_ros/apps/make_sample.py`, `selfi_ros/data/tum.py`).

| file | content |
|---|---|
| `{bag}` | ROS 2 bag (MCAP): `{image_topic}` (`{image_type}`, {enc}), `{info_topic}` (`sensor_msgs/CameraInfo` before each image, same stamp: K, `{model}` D, R, P of the published calibration) |
| `{gt}` | TUM's motion-capture ground truth of the span (+-1 s), as published: `timestamp tx ty tz qx qy qz qw`, 100 Hz, camera-to-world (colour camera's optical centre, optical axes x right / y down / z forward), metres; not synchronised with the images: associate by stamp |
| `{yaml}` | the calibration in the ROS camera_calibration YAML format (`selfi-ros reconstruct --camera-info`) |

- {n} frames, {w}x{h} px, {hz:.1f} Hz: one in {every} frames of the recording (30 Hz), from {start:.1f} s after its
  first image, with the ORIGINAL timestamps of `rgb.txt` (header stamps = bag log times, first
  {t0} ns). The images are as recorded: **not undistorted** (D = {D}); the node and
  `selfi-ros reconstruct --bag` rectify them with the CameraInfo.
- Motion: hand-held, mostly roll / pitch / yaw about the optical centre, fast (up to ~70 deg/s here), with
  motion blur and rolling shutter; ground-truth path {path_m:.2f} m over the span.

Credit and licence: TUM RGB-D benchmark, sequence `rgbd_dataset_freiburg1_rpy`: J. Sturm, N. Engelhard,
F. Endres, W. Burgard, D. Cremers, "A Benchmark for the Evaluation of RGB-D SLAM Systems", IROS 2012
(https://cvg.cit.tum.de/data/datasets/rgbd-dataset), licensed under the Creative Commons Attribution 4.0
International License (CC BY 4.0, https://creativecommons.org/licenses/by/4.0/). Changes: a {dur:.1f} s
excerpt, one in {every} frames, images {change}, stored as a ROS 2 bag; ground truth cut to the span.
"""


def make_tum_sample(tum_dir: str, out_bag: str = TUM_SAMPLE_BAG, start_s: float = 0.0, duration_s: float = 0.0,
                    every: int = 1, compressed: bool = False, jpeg_quality: int = 0,
                    camera_yaml: Optional[str] = None, readme: Optional[bool] = None) -> dict:
    """Write a TUM RGB-D sequence (or a span of it) as an MCAP bag + ground truth + calibration YAML (see
    the module docstring); returns a summary (paths, frames, messages, bytes, rate).

    Args:
        start_s, duration_s, every: the span (s after the first image; 0 = to the end) and the subsampling.
        compressed: ``sensor_msgs/CompressedImage`` (JPEG) instead of ``sensor_msgs/Image`` rgb8.
        jpeg_quality: 0 = the original file bytes when they are JPEG (else q95), 1-100 = re-encode (OpenCV).
        camera_yaml: calibration (default: the folder's ``camera_info.yaml``).
        readme: rewrite the ``tum_fr1_rpy`` section of README.md beside the bag (None: only when writing
            into the committed ``data/sample``).

    Raises:
        FileNotFoundError / ValueError: no sequence, no calibration, an empty span, an unreadable image.
        selfi_ros.data.camera_model.CameraModelError: a bad calibration YAML.
    """
    import shutil

    import cv2
    from sensor_msgs.msg import CompressedImage

    from selfi_ros.atomic import atomic_write_text
    from selfi_ros.data.camera_model import CameraModel
    from selfi_ros.data.tum import CAMERA_YAML_NAMES, TumSequence, load_rgb, read_groundtruth
    from selfi_ros.ros.bag import BagWriter
    from selfi_ros.ros.conversions import camera_model_to_camera_info, ns_to_stamp, rgb8_to_image

    if not 0 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be 0 (keep the files) or 1-100, got {jpeg_quality}")
    seq = TumSequence.open(tum_dir)
    camera_yaml = camera_yaml or seq.camera_yaml
    if not camera_yaml:
        raise FileNotFoundError(f"{tum_dir}: no camera YAML ({', '.join(CAMERA_YAML_NAMES)}); give --camera-info")
    model = CameraModel.from_yaml(camera_yaml)
    images = seq.select(start_s, duration_s, every)
    stem = os.path.splitext(out_bag)[0]
    out_dir = os.path.dirname(os.path.abspath(out_bag))
    os.makedirs(out_dir, exist_ok=True)
    image_topic = IMAGE_TOPIC if compressed else RAW_IMAGE_TOPIC
    n = 0
    with BagWriter(out_bag) as bag:
        for im in images:
            t = im.stamp_ns
            data = None
            if compressed and jpeg_quality == 0 and im.path.lower().endswith((".jpg", ".jpeg")):
                with open(im.path, "rb") as fh:
                    data = fh.read()
                rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            else:
                rgb = load_rgb(im.path)
            if rgb is None:
                raise ValueError(f"unreadable image {im.path}")
            h, w = rgb.shape[:2]
            if model.size_known and model.image_size != (w, h):
                raise ValueError(f"{im.path}: {w}x{h} but the calibration {camera_yaml} is for "
                                 f"{model.image_size[0]}x{model.image_size[1]} images")
            if compressed:
                if data is None:
                    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                                           [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality or 95)])
                    if not ok:
                        raise RuntimeError("JPEG encoding failed")
                    data = buf.tobytes()
                msg = CompressedImage()
                msg.header.stamp = ns_to_stamp(t)
                msg.header.frame_id = CAMERA_FRAME
                msg.format = "rgb8; jpeg compressed bgr8"  # image_transport's string for a colour JPEG
                msg.data = data
            else:
                msg = rgb8_to_image(rgb, t, CAMERA_FRAME)
            bag.write(CAMERA_INFO_TOPIC, camera_model_to_camera_info(model, t, CAMERA_FRAME), t)
            bag.write(image_topic, msg, t)
            n += 1
        count = bag.count
    out = {"bag": os.path.abspath(out_bag), "frames": n, "messages": count, "bag_bytes": os.path.getsize(out_bag),
           "first_stamp_ns": images[0].stamp_ns, "last_stamp_ns": images[-1].stamp_ns,
           "rate_hz": (n - 1) / ((images[-1].stamp_ns - images[0].stamp_ns) * 1e-9) if n > 1 else 0.0}
    path_m = float("nan")
    if seq.groundtruth_path:
        lo, hi = images[0].stamp_ns - 1_000_000_000, images[-1].stamp_ns + 1_000_000_000
        keep = []
        with open(seq.groundtruth_path) as fh:
            for line in fh:
                if line.startswith("#"):
                    keep.append(line)
                elif line.strip() and lo <= _stamp_of(line) <= hi:
                    keep.append(line)
        gt_path = atomic_write_text(stem + "_groundtruth.txt", "".join(keep))
        gs, gT = read_groundtruth(gt_path)
        inside = (gs >= images[0].stamp_ns) & (gs <= images[-1].stamp_ns)
        C = gT[inside, :3, 3]
        path_m = float(np.sum(np.linalg.norm(np.diff(C, axis=0), axis=1))) if len(C) > 1 else 0.0
        out.update(groundtruth=gt_path, groundtruth_poses=int(len(gs)), groundtruth_path_m=path_m)
    yaml_out = stem + "_camera_info.yaml"
    shutil.copyfile(camera_yaml, yaml_out + ".tmp")
    os.replace(yaml_out + ".tmp", yaml_out)
    out["camera_yaml"] = yaml_out
    from selfi_ros.data import SAMPLE_DIR

    if readme is None:
        readme = os.path.abspath(out_dir) == os.path.abspath(SAMPLE_DIR)
    if readme:
        args = f" --start-s {start_s:g}" if start_s else ""
        args += (f" --duration-s {duration_s:g}" if duration_s else "") + (f" --every {every}" if every > 1 else "")
        args += (" --compressed" + (f" --jpeg-quality {jpeg_quality}" if jpeg_quality else "")) if compressed else ""
        enc = ("JPEG, original files" if jpeg_quality == 0 else f"JPEG q{jpeg_quality}") if compressed else "rgb8"
        change = ("kept as TUM's JPEG files" if compressed and jpeg_quality == 0 else
                  f"re-encoded as JPEG q{jpeg_quality}" if compressed else "decoded to rgb8")
        out["readme"] = update_readme(out_dir, "tum_fr1_rpy", TUM_README_TEXT.format(
            dur=(images[-1].stamp_ns - images[0].stamp_ns) * 1e-9 + 1.0 / max(out["rate_hz"], 1e-9),
            args=args, bag=os.path.basename(out_bag), image_topic=image_topic,
            image_type="sensor_msgs/CompressedImage" if compressed else "sensor_msgs/Image", enc=enc,
            info_topic=CAMERA_INFO_TOPIC, model=model.distortion_model, gt=os.path.basename(stem) + "_groundtruth.txt",
            yaml=os.path.basename(yaml_out), n=n, w=w, h=h, hz=out["rate_hz"], every=every, start=start_s,
            t0=images[0].stamp_ns, D=[round(float(d), 6) for d in model.D], path_m=path_m, change=change))
    return out


def _stamp_of(line: str) -> int:
    from selfi_ros.data.tum import parse_stamp_ns

    return parse_stamp_ns(line.split()[0])


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
    update_readme(out_dir, "woodbox",
                  README_TEXT.format(image_topic=IMAGE_TOPIC, info_topic=CAMERA_INFO_TOPIC, gt_topic=GT_TOPIC,
                                     cam=CAMERA_FRAME, map=MAP_FRAME, q=jpeg_quality, n=n_frames, w=width,
                                     h=height, hz=rate_hz, t0=T0_NS, fx=K[0, 0], cx=K[0, 2], cy=K[1, 2],
                                     verr=verr))
    return {"bag": bag_path, "groundtruth": tum_path, "messages": count, "verify_px": verr,
            "bag_bytes": os.path.getsize(bag_path)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tum", metavar="DIR", default=None,
                        help="make the bag from this TUM RGB-D folder (rgb.txt, camera_info.yaml, groundtruth.txt) "
                             "instead of rendering the POV-Ray sample")
    parser.add_argument("--out", default=None,
                        help="with --tum: the bag to write (default: data/sample/tum_fr1_rpy.mcap); else the "
                             "output folder (default: the committed data/sample)")
    parser.add_argument("--start-s", type=float, default=0.0, help="--tum: start this long after the first image (s)")
    parser.add_argument("--duration-s", type=float, default=0.0, help="--tum: span length (s; 0 = to the end)")
    parser.add_argument("--every", type=int, default=1, help="--tum: every N-th image (1: all, the recorded rate)")
    parser.add_argument("--compressed", action="store_true",
                        help="--tum: sensor_msgs/CompressedImage JPEG instead of sensor_msgs/Image rgb8")
    parser.add_argument("--camera-info", default=None, help="--tum: calibration YAML (default: the folder's)")
    parser.add_argument("--frames", type=int, default=48, help="number of frames")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--rate", type=float, default=5.0, help="frame rate of the stamps (Hz)")
    parser.add_argument("--jpeg-quality", type=int, default=None,
                        help="JPEG quality (rendered sample: default 85; --tum --compressed: default 0 = keep "
                             "TUM's JPEG files, 1-100 re-encode)")
    parser.add_argument("--no-verify", action="store_true", help="skip the marker check of the ground truth")


def run(args: argparse.Namespace) -> int:
    if args.tum:
        try:
            summary = make_tum_sample(args.tum, args.out or TUM_SAMPLE_BAG, args.start_s, args.duration_s,
                                      args.every, compressed=args.compressed, jpeg_quality=args.jpeg_quality or 0,
                                      camera_yaml=args.camera_info)
        except (FileNotFoundError, ValueError) as e:  # CameraModelError is a ValueError
            raise SystemExit(str(e)) from None
    else:
        summary = make_sample(args.out or SAMPLE_DIR, args.frames, args.width, args.height, args.rate,
                              85 if args.jpeg_quality is None else args.jpeg_quality, verify=not args.no_verify)
    for k, v in summary.items():
        print(f"{k}: {v}")
    return 0

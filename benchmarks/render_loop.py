"""Render the loop-closure benchmark's sequence: two laps of a full 360 degree orbit around POV-Ray's
"woodbox" scene, lap 2 at another radius and height, with exact ground truth.

The renderer and the camera conventions are the bundled sample's (:mod:`selfi_ros.data.sample`: a POV-Ray
look-at camera appended to ``advanced/woodbox.pov``, ``T_map_cam`` of the OpenCV optical frame in a z-up
map, fx = fy = (W/2) / tan(30 deg)). Lap 1: radius 10, height 5 (scene units); lap 2: radius 12.5, height
7; both look at (0, 0.8, 0) (POV-Ray coordinates) and start at the same azimuth, ``--views`` views per lap
evenly spaced in azimuth (10 degrees apart at 36). Lap 2 revisits lap 1's places from another viewpoint:
what a loop closure has to recognise.

Output folder (default ``build/loop_render``): ``frame_NNNN.png`` (RGB), ``groundtruth.tum`` (``t tx ty
tz qx qy qz qw``, s, map frame, camera-to-map of the optical frame), ``cameras.json`` (W, H, K, views per
lap, rate, first stamp, render seconds). The ground truth is checked with the sample's marker test
(:func:`selfi_ros.data.sample.verify_ground_truth`, worst reprojection error must be < 0.5 px) unless
``--no-verify``. Needs ``povray`` (``apt-get install -y povray povray-includes povray-examples``).
An existing complete render with the same parameters is reused (``--force`` renders again).

    .venv/bin/python benchmarks/render_loop.py                      # 2 x 36 views, 320x240
    .venv/bin/python benchmarks/render_loop.py --views 6 --width 160 --height 120 --out /tmp/small
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2  # before anything that may import pycolmap (PNG writing aborts otherwise)
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfi_ros.data.sample import (SCENE_PATH, T0_NS, PovCamera, intrinsics,  # noqa: E402
                                   pov_camera_to_T_map_cam, render, verify_ground_truth)
from selfi_ros.geometry.se3 import matrix_to_quat_xyzw  # noqa: E402

#: (radius, height) of each lap (scene units, POV-Ray y is up)
LAPS = ((10.0, 5.0), (12.5, 7.0))
LOOK_AT = np.array([0.0, 0.8, 0.0])
START_DEG = 215.0  # azimuth of the first view (the sample's start)
#: added to the scene: an open cylinder (radius 24, height 14, centred on the box) painted with a
#: high-contrast turbulent ``bozo`` pigment. woodbox alone gives SIFT ~200-400 keypoints at 320x240 (smooth
#: procedural wood, most of the view is floor), too few to chain views 10 degrees apart; the wall gives
#: every view a textured background. It is part of the scene: the ground truth is unchanged.
SURROUNDINGS = """
cylinder { <0, -0.01, 0>, <0, 14, 0>, 24 open
  texture { pigment { bozo turbulence 0.3 color_map { [0.0 rgb <0.05, 0.05, 0.1>] [0.3 rgb <0.9, 0.8, 0.3>]
            [0.5 rgb <0.1, 0.5, 0.2>] [0.7 rgb <0.95, 0.95, 0.95>] [1.0 rgb <0.6, 0.1, 0.1>] } scale 1.2 }
            finish { ambient 0.35 diffuse 0.7 } } }
"""


def loop_path(views_per_lap: int, laps=LAPS) -> list[PovCamera]:
    """The cameras of all laps in order: ``views_per_lap`` per lap, azimuth ``START_DEG + 360 k / n``."""
    cams = []
    for radius, height in laps:
        for k in range(views_per_lap):
            th = math.radians(START_DEG + 360.0 * k / views_per_lap)
            cams.append(PovCamera(np.array([radius * math.cos(th), height, radius * math.sin(th)]), LOOK_AT.copy()))
    return cams


def stamp_ns(i: int, rate_hz: float) -> int:
    """Stamp (ns) of view ``i`` at ``rate_hz``."""
    return T0_NS + int(round(i * 1e9 / rate_hz))


def render_loop(out_dir: str, views_per_lap: int = 36, width: int = 320, height: int = 240, rate_hz: float = 2.0,
                verify: bool = True, force: bool = False, surroundings: bool = True) -> dict:
    """Render (or reuse) the sequence into ``out_dir``; returns the ``cameras.json`` content.

    Raises:
        RuntimeError: povray or the scene missing / failing; AssertionError: ground-truth check > 0.5 px.
    """
    meta_path = os.path.join(out_dir, "cameras.json")
    params = {"views_per_lap": views_per_lap, "laps": [list(x) for x in LAPS], "width": width, "height": height,
              "rate_hz": rate_hz, "surroundings": surroundings}
    if not force and os.path.exists(meta_path):
        with open(meta_path) as fh:
            meta = json.load(fh)
        if all(meta.get(k) == v for k, v in params.items()):
            return meta
    if not os.path.exists(SCENE_PATH):
        raise RuntimeError(f"{SCENE_PATH} missing: apt-get install -y povray povray-includes povray-examples")
    os.makedirs(out_dir, exist_ok=True)
    cams = loop_path(views_per_lap)
    K = intrinsics(width, height)
    scene = f'#include "{os.path.basename(SCENE_PATH)}"\n' + (SURROUNDINGS if surroundings else "")
    lines = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="selfi_loop_") as work:
        verr = float("nan")
        if verify:
            verr = verify_ground_truth([cams[0], cams[views_per_lap // 3], cams[-1]], width, height, work)
            if not verr < 0.5:
                raise AssertionError(f"ground truth does not match the renders: {verr:.2f} px")
        t_r = time.perf_counter()
        for i, cam in enumerate(cams):
            img = render(scene, cam, width, height, work, f"f{i:04d}")
            cv2.imwrite(os.path.join(out_dir, f"frame_{i:04d}.png"), img[:, :, ::-1])
            T = pov_camera_to_T_map_cam(cam)
            q = matrix_to_quat_xyzw(T[:3, :3])
            ns = stamp_ns(i, rate_hz)
            lines.append(f"{ns // 10**9}.{ns % 10**9:09d} {T[0, 3]:.9f} {T[1, 3]:.9f} {T[2, 3]:.9f} "
                         f"{q[0]:.9f} {q[1]:.9f} {q[2]:.9f} {q[3]:.9f}")
            print(f"rendered {i + 1}/{len(cams)}", flush=True)
        render_s = time.perf_counter() - t_r
    with open(os.path.join(out_dir, "groundtruth.tum"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    meta = dict(params, K=K.tolist(), t0_ns=T0_NS, frames=len(cams), render_s=render_s,
                render_s_per_view=render_s / len(cams), verify_px=verr, load_avg=os.getloadavg()[0],
                total_s=time.perf_counter() - t0)
    with open(meta_path, "w") as fh:
        json.dump(meta, fh, indent=1)
    return meta


def load_frames(out_dir: str):
    """(frames, T_map_cam list, meta): the rendered views as :class:`selfi_ros.engine.types.Frame` (RGB uint8)
    with their ground truth (4, 4) float64 camera-to-map matrices, in order."""
    from selfi_ros.engine.types import Frame

    with open(os.path.join(out_dir, "cameras.json")) as fh:
        meta = json.load(fh)
    K = np.array(meta["K"], np.float64)
    frames = []
    for i in range(meta["frames"]):
        bgr = cv2.imread(os.path.join(out_dir, f"frame_{i:04d}.png"), cv2.IMREAD_COLOR)
        frames.append(Frame(stamp_ns(i, meta["rate_hz"]), bgr[:, :, ::-1].copy(), K=K.copy(), frame_id="camera",
                            index=i, source=f"frame_{i:04d}.png"))
    Ts = [pov_camera_to_T_map_cam(c) for c in loop_path(meta["views_per_lap"])]
    return frames, Ts, meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "build" / "loop_render_s"))
    ap.add_argument("--views", type=int, default=36, help="views per lap")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--rate", type=float, default=2.0, help="frame rate of the stamps (Hz)")
    ap.add_argument("--no-surroundings", action="store_true", help="woodbox alone (no textured wall)")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    meta = render_loop(args.out, args.views, args.width, args.height, args.rate, not args.no_verify, args.force,
                       not args.no_surroundings)
    print(json.dumps({k: v for k, v in meta.items() if k != "K"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

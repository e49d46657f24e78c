"""Issue 11: does the CPU (colmap) backend keep up with a real camera? Offline reconstruction of TUM fr1_rpy
through the Engine against pycolmap on all the same frames at once, side by side in one run.

For each run the script reports wall time against the sequence's own duration, frames posed, keyframes,
windows, window failures, map segments, how frames were posed (KLT-tracked / SIFT-localized / failed),
SIFT extractions, and ATE RMSE after Sim(3) alignment (evo, ``selfi_ros.apps.evaluate``) against the
motion-capture ground truth. The baseline is pycolmap 4.2 on all frames at once: SIFT (COLMAP defaults)
of every frame, sequential matching (``overlap`` frames, COLMAP's default 10; exhaustive matching of 723
frames is out of reach on 2 cores), one incremental reconstruction with the known K fixed; its time
excludes writing the images into its folder (COLMAP reads files), ours includes everything.

Input: ``rgb.txt`` + ``rgb/`` + ``groundtruth.txt`` + ``camera_info.yaml`` of a TUM folder (read here,
TUM's documented layout). The images are undistorted once with OpenCV (``cv2.undistort`` with the
published plumb-bob coefficients) before both runs, so both use the same PINHOLE K.

The machine is shared: the 1-minute load average before and after each run goes into the result.

    .venv/bin/python benchmarks/bench_colmap.py --out build/bench/results/colmap_cpu.md            # all 723
    .venv/bin/python benchmarks/bench_colmap.py --every 3 --no-baseline --out /tmp/colmap.md        # quick
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import cv2  # before pycolmap (see README: PNG writing aborts otherwise)
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_DATA = os.environ.get("SELFI_TUM_FR1_RPY", "/work/shared/data/tum_fr1_rpy")  # exits 77 when absent
SKIP = 77


def read_tum_folder(folder: str, every: int, max_frames: int):
    """Frames (undistorted RGB, K) of a TUM folder, every ``every``-th, at most ``max_frames`` (0: all)."""
    import yaml

    from selfi_ros.engine.types import Frame

    with open(os.path.join(folder, "camera_info.yaml")) as fh:
        cam = yaml.safe_load(fh)
    K = np.array(cam["camera_matrix"]["data"], np.float64).reshape(3, 3)
    D = np.array(cam["distortion_coefficients"]["data"], np.float64)
    rows = []
    with open(os.path.join(folder, "rgb.txt")) as fh:
        for line in fh:
            if line.strip() and not line.startswith("#"):
                stamp, name = line.split()[:2]
                sec, _, frac = stamp.partition(".")
                rows.append((int(sec) * 1_000_000_000 + int((frac + "000000000")[:9]), name))
    rows = rows[::every]
    if max_frames:
        rows = rows[:max_frames]
    frames = []
    for k, (ns, name) in enumerate(rows):
        bgr = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
        rgb = cv2.undistort(bgr, K, D)[:, :, ::-1].copy()
        frames.append(Frame(ns, rgb, K=K.copy(), frame_id="camera", index=k, source=name))
    return frames, K


def run_ours(frames, out_dir: str, gt: str, options: dict, engine_options: dict) -> dict:
    """The Engine + ColmapBackend over ``frames`` in time order, as ``selfi-ros reconstruct`` does."""
    from selfi_ros.apps.evaluate import evaluate
    from selfi_ros.backends import make_backend
    from selfi_ros.engine.engine import Engine, EngineConfig

    import dataclasses

    defaults = EngineConfig()
    cfg = dataclasses.replace(defaults, **{k: type(getattr(defaults, k))(v) for k, v in engine_options.items()})
    backend = make_backend("colmap", **options)
    engine = Engine(backend, cfg)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    for f in frames:
        engine.process_frame(f)
    wall = time.perf_counter() - t0
    paths = engine.save(out_dir)
    st = engine.status()
    res = {"wall_s": wall, "load_before": load0, "load_after": os.getloadavg()[0], "frames": len(frames),
           "poses": len(engine.trajectory()), "keyframes": st.keyframes, "windows": st.windows,
           "window_failures": st.window_failures, "map_segments": st.map_segments,
           "extractions": backend.features.extractions, **backend.counters}
    try:
        ev = evaluate(paths.get("trajectory", os.path.join(out_dir, "trajectory.tum")), gt)
        res.update(ate_rmse_m=ev.ate_rmse, ate_matched=ev.matched)
    except (ValueError, FileNotFoundError) as e:
        res["ate_error"] = str(e)
    return res


def run_pycolmap(frames, K, out_dir: str, gt: str, overlap: int, threads: int) -> dict:
    """pycolmap on all frames at once (see module docstring); trajectory written as TUM for evo."""
    import pycolmap as pc

    from selfi_ros.apps.evaluate import evaluate
    from selfi_ros.engine.io import write_tum_matrices

    pc.logging.minloglevel = 1
    img = os.path.join(out_dir, "images")
    os.makedirs(img, exist_ok=True)
    for f in frames:
        cv2.imwrite(os.path.join(img, f"{f.stamp_ns}.png"), f.image[:, :, ::-1])
    db = os.path.join(out_dir, "database.db")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    reader = pc.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    reader.camera_params = f"{K[0, 0]},{K[1, 1]},{K[0, 2] + 0.5},{K[1, 2] + 0.5}"
    eo = pc.FeatureExtractionOptions()
    eo.num_threads = threads
    eo.use_gpu = False
    pc.extract_features(db, img, camera_mode=pc.CameraMode.SINGLE, reader_options=reader, extraction_options=eo,
                        device=pc.Device.cpu)
    t_extract = time.perf_counter() - t0
    mo = pc.FeatureMatchingOptions()
    mo.use_gpu = False
    mo.num_threads = threads
    so = pc.SequentialPairingOptions()
    so.overlap = overlap
    so.loop_detection = False
    pc.match_sequential(db, matching_options=mo, pairing_options=so, device=pc.Device.cpu)
    t_match = time.perf_counter() - t0 - t_extract
    io = pc.IncrementalPipelineOptions()
    io.num_threads = threads
    io.ba_refine_focal_length = False
    io.ba_refine_principal_point = False
    io.ba_refine_extra_params = False
    io.extract_colors = False
    sparse = os.path.join(out_dir, "sparse")
    os.makedirs(sparse, exist_ok=True)
    recs = pc.incremental_mapping(db, img, sparse, options=io)
    wall = time.perf_counter() - t0
    res = {"wall_s": wall, "extract_s": t_extract, "match_s": t_match, "map_s": wall - t_extract - t_match,
           "load_before": load0, "load_after": os.getloadavg()[0], "frames": len(frames),
           "models": len(recs), "poses": 0}
    if recs:
        rec = max(recs.values(), key=lambda r: r.num_reg_images())
        res["poses"] = rec.num_reg_images()
        tum = os.path.join(out_dir, "trajectory.tum")
        posed = sorted((int(im.name.split(".")[0]), im) for im in rec.images.values() if im.has_pose)
        write_tum_matrices(tum, [ns for ns, _ in posed],
                           [np.linalg.inv(np.vstack([np.asarray(im.cam_from_world().matrix()), [0, 0, 0, 1]]))
                            for _, im in posed])
        try:
            ev = evaluate(tum, gt)
            res.update(ate_rmse_m=ev.ate_rmse, ate_matched=ev.matched, ate_trivial_m=ev.ate_trivial,
                       rpe_rot_median_deg=ev.rpe_rot_median_deg, rpe_rot_rmse_deg=ev.rpe_rot_rmse_deg,
                       rpe_rot_trivial_deg=ev.rpe_rot_trivial_deg)
        except (ValueError, FileNotFoundError) as e:
            res["ate_error"] = str(e)
    return res


def _fmt(v, spec="{:.3g}"):
    return "-" if v is None else spec.format(v) if isinstance(v, float) else str(v)


def write_report(path: str, args, duration_s: float, ours: dict, base) -> None:
    rows = [("wall time (s)", "wall_s"), ("load average before / after", None), ("frames", "frames"),
            ("frames posed", "poses"), ("keyframes", "keyframes"), ("windows", "windows"),
            ("window failures", "window_failures"), ("map segments", "map_segments"),
            ("windows grown / from scratch / grow fallbacks", None), ("frames tracked / SIFT / failed", None),
            ("SIFT extractions", "extractions"), ("ATE RMSE (m, Sim(3), evo)", "ate_rmse_m"),
            ("ATE associated poses", "ate_matched")]
    out = [f"# colmap backend vs pycolmap on all frames: {os.path.basename(args.data.rstrip('/'))}", "",
           f"`{' '.join(sys.argv)}`", "",
           f"Sequence: {ours['frames']} frames (every {args.every}), {duration_s:.1f} s of video; "
           f"{os.cpu_count()} CPUs, shared (load averages below). Engine options: "
           f"{' '.join(args.engine) or 'defaults'}; backend options: {' '.join(args.option) or 'defaults'}.", "",
           "| | ours (Engine + ColmapBackend) | pycolmap, all frames at once |", "|---|---|---|"]
    for label, key in rows:
        if label.startswith("load"):
            a = f"{ours['load_before']:.1f} / {ours['load_after']:.1f}"
            b = f"{base['load_before']:.1f} / {base['load_after']:.1f}" if base else "-"
        elif label.startswith("windows grown"):
            a, b = f"{ours['windows_grown']} / {ours['windows_scratch']} / {ours['grow_fallbacks']}", "-"
        elif label.startswith("frames tracked"):
            a, b = f"{ours['tracked']} / {ours['sift_localized']} / {ours['localize_failed']}", "-"
        else:
            a, b = _fmt(ours.get(key)), _fmt(base.get(key)) if base else "-"
        out.append(f"| {label} | {a} | {b} |")
    out.append(f"| wall time / video duration | {ours['wall_s'] / duration_s:.2f} | "
               f"{_fmt(base['wall_s'] / duration_s, '{:.2f}') if base else '-'} |")
    if base:
        out += ["", f"pycolmap split: extraction {base['extract_s']:.1f} s, sequential matching (overlap "
                    f"{args.overlap}) {base['match_s']:.1f} s, mapping {base['map_s']:.1f} s."]
        if "ate_rmse_m" in ours and "ate_rmse_m" in base:
            out.append(f"Ratios: time ours / pycolmap {ours['wall_s'] / base['wall_s']:.2f}, "
                       f"ATE ours / pycolmap {ours['ate_rmse_m'] / base['ate_rmse_m']:.2f}.")
    out += ["", "```json", json.dumps({"ours": ours, "pycolmap": base}, indent=1, default=float), "```", ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("\n".join(out))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="TUM folder (rgb.txt, rgb/, groundtruth.txt, camera_info.yaml)")
    ap.add_argument("--every", type=int, default=1, help="use every n-th frame (1: all)")
    ap.add_argument("--max-frames", type=int, default=0, help="at most this many frames (0: all)")
    ap.add_argument("--no-baseline", action="store_true", help="skip pycolmap on all frames")
    ap.add_argument("--overlap", type=int, default=10, help="baseline sequential matching overlap (frames)")
    ap.add_argument("--threads", type=int, default=-1, help="baseline COLMAP threads (-1: all)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="ColmapBackend option")
    ap.add_argument("--engine", action="append", default=[], metavar="KEY=VALUE", help="EngineConfig option")
    ap.add_argument("--out", required=True, help="result markdown file")
    args = ap.parse_args(argv)
    if not os.path.isfile(os.path.join(args.data, "rgb.txt")):
        print(f"skipped: no TUM sequence at {args.data}")
        return SKIP
    options = dict(kv.split("=", 1) for kv in args.option)
    engine_options = dict(kv.split("=", 1) for kv in args.engine)
    frames, K = read_tum_folder(args.data, args.every, args.max_frames)
    duration_s = (frames[-1].stamp_ns - frames[0].stamp_ns) * 1e-9
    gt = os.path.join(args.data, "groundtruth.txt")
    work = tempfile.mkdtemp(prefix="bench_colmap_")
    try:
        print(f"{len(frames)} frames, {duration_s:.1f} s of video; ours ...", flush=True)
        ours = run_ours(frames, os.path.join(work, "ours"), gt, options, engine_options)
        print(json.dumps(ours, default=float), flush=True)
        base = None
        if not args.no_baseline:
            print("pycolmap on all frames ...", flush=True)
            base = run_pycolmap(frames, K, os.path.join(work, "pycolmap"), gt, args.overlap, args.threads)
            print(json.dumps(base, default=float), flush=True)
        write_report(args.out, args, duration_s, ours, base)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

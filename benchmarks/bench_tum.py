"""TUM RGB-D freiburg1_rpy offline: ``selfi-ros reconstruct --tum`` with and without lens-distortion handling,
beside pycolmap on the same frames all at once (global SfM), in the same run.

    .venv/bin/python benchmarks/bench_tum.py [--tum ../shared/data/tum_fr1_rpy] [--every 6] [--out DIR]

1. ``selfi-ros reconstruct --tum DIR --every N`` (the streaming engine, colmap backend, default parameters):
   images rectified with the folder's camera_info.yaml (plumb_bob), and again with ``--no-rectify`` (the raw
   images with K as a pinhole camera).
2. pycolmap 4 on the same frames rectified (``selfi_ros.data.camera_model.Rectifier``), one shared PINHOLE
   camera with the rectified K held fixed: ``extract_features``, ``match_sequential`` (overlap
   ``--overlap``), ``incremental_mapping``; the largest model's ``cam_from_world`` poses inverted to TUM.

All trajectories are evaluated with ``selfi_ros.apps.evaluate`` (evo: association within 20 ms of TUM's 100 Hz
mocap, ATE RMSE after Sim(3), the constant-estimate ATE, rotation RPE per step). Writes a markdown table to
``--report`` (default ``benchmarks/results/tum_fr1_rpy_runs.md``) and the raw figures as JSON beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def run_reconstruct(tum: str, every: int, out: Path, rectify: bool, extra: list) -> dict:
    cmd = [sys.executable, "-m", "selfi_ros.cli", "reconstruct", "--tum", tum, "--every", str(every), "--out",
           str(out), "--quiet"] + ([] if rectify else ["--no-rectify"]) + extra
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    s = json.load(open(out / "summary.json")) if (out / "summary.json").exists() else {}
    s.pop("status", None)
    return {"command": " ".join(["selfi-ros"] + cmd[3:]), "rc": r.returncode, "wall_s": wall, **s,
            "stderr_tail": r.stderr[-1500:] if r.returncode else ""}


def run_pycolmap(tum: str, every: int, out: Path, overlap: int, threads: int) -> dict:
    """pycolmap on the selected frames rectified with the folder's calibration (``bench_colmap.run_pycolmap``:
    one fixed PINHOLE camera, sequential matching, incremental mapping), under this script's key names."""
    from types import SimpleNamespace

    from bench_colmap import run_pycolmap as pycolmap_all_frames
    from selfi_ros.data.camera_model import CameraModel, Rectifier
    from selfi_ros.data.tum import TumSequence, load_rgb

    import pycolmap

    seq = TumSequence.open(tum)
    images = seq.select(0.0, 0.0, every)
    rect = Rectifier(CameraModel.from_yaml(seq.camera_yaml))
    frames = [SimpleNamespace(stamp_ns=im.stamp_ns, image=rect.rectify(load_rgb(im.path))[0]) for im in images]
    out.mkdir(parents=True, exist_ok=True)
    r = pycolmap_all_frames(frames, rect.K_rect, str(out), seq.groundtruth_path, overlap, threads)
    return {"frames": r["frames"], "registered": r["poses"], "models": r["models"], "run_time_s": r["wall_s"],
            "features_s": r["extract_s"], "matching_s": r["match_s"], "ate_rmse": r.get("ate_rmse_m"),
            "ate_trivial": r.get("ate_trivial_m"), "ate_matched": r.get("ate_matched"),
            "rpe_rot_median_deg": r.get("rpe_rot_median_deg"), "rpe_rot_rmse_deg": r.get("rpe_rot_rmse_deg"),
            "rpe_rot_trivial_deg": r.get("rpe_rot_trivial_deg"), "matcher": f"sequential, overlap {overlap}",
            "pycolmap": pycolmap.__version__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tum", default=str(ROOT.parent / "shared" / "data" / "tum_fr1_rpy"))
    ap.add_argument("--every", type=int, default=6, help="every N-th frame of the 30 Hz sequence (1: all 723)")
    ap.add_argument("--out", default=str(ROOT / "build" / "bench" / "tum"))
    ap.add_argument("--report", default=str(ROOT / "benchmarks" / "results" / "tum_fr1_rpy_runs.md"))
    ap.add_argument("--overlap", type=int, default=20, help="pycolmap sequential matching overlap (images)")
    ap.add_argument("--threads", type=int, default=-1, help="COLMAP threads (-1: all cores)")
    ap.add_argument("--skip", action="append", default=[], choices=["rect", "raw", "pycolmap"])
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    extra = ["--backend-option", f"num_threads={args.threads}"]
    res = {"every": args.every, "load_average_start": load0, "cores": os.cpu_count(),
           "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if "rect" not in args.skip:
        res["selfi_rectified"] = run_reconstruct(args.tum, args.every, out / "rect", True, extra)
        print("rectified:", json.dumps(res["selfi_rectified"], default=str)[:800], flush=True)
    if "raw" not in args.skip:
        res["selfi_no_rectify"] = run_reconstruct(args.tum, args.every, out / "raw", False, extra)
        print("no rectify:", json.dumps(res["selfi_no_rectify"], default=str)[:800], flush=True)
    if "pycolmap" not in args.skip:
        res["pycolmap_global"] = run_pycolmap(args.tum, args.every, out / "pycolmap", args.overlap, args.threads)
        print("pycolmap:", json.dumps(res["pycolmap_global"], default=str), flush=True)
    res["load_average_end"] = os.getloadavg()[0]

    def row(name, r):
        if not r:
            return f"| {name} | not run |||||||"
        posed = r.get("poses", r.get("registered"))
        segs = r.get("map_segments", "-")
        win = f"{r.get('windows', '-')} ({r.get('window_failures', '-')} failed)" if "windows" in r else "-"
        f = lambda k, fmt: "n/a" if r.get(k) is None else fmt.format(r[k])  # noqa: E731
        return (f"| {name} | {posed} / {r.get('frames')} | {win} | {segs} | {f('ate_rmse', '{:.4f}')} | "
                f"{f('ate_trivial', '{:.4f}')} | {f('rpe_rot_median_deg', '{:.2f}')} / {f('rpe_rot_rmse_deg', '{:.2f}')} "
                f"({f('rpe_rot_trivial_deg', '{:.2f}')}) | {f('run_time_s', '{:.0f}')} |")

    L = [f"## TUM fr1_rpy offline, every {args.every}. frame ({res['started_utc']})", "",
         f"Command: `.venv/bin/python benchmarks/bench_tum.py --every {args.every}`. Machine: {os.cpu_count()} cores, "
         f"load average {load0:.1f} at start, {res['load_average_end']:.1f} at the end (shared machine), no GPU. "
         "ATE after Sim(3) (evo, 20 ms association with the 100 Hz mocap), metres; rotation RPE per step in degrees "
         "(median / RMSE, a constant estimate in brackets).", "",
         "| run | posed / frames | windows | map segments | ATE RMSE (m) | constant estimate (m) | rot. RPE median / RMSE (const.) | time (s) |",
         "|---|---|---|---|---|---|---|---|",
         row("selfi-ros reconstruct, rectified (plumb_bob)", res.get("selfi_rectified")),
         row("selfi-ros reconstruct, --no-rectify", res.get("selfi_no_rectify")),
         row("pycolmap, all frames at once (rectified)", res.get("pycolmap_global"))]
    text = "\n".join(L) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.report), exist_ok=True)
    with open(args.report, "a") as fh:
        fh.write("\n" + text)
    with open(os.path.splitext(args.report)[0] + ".json", "a") as fh:
        fh.write(json.dumps(res, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loop closure, map reuse and false loops with the colmap backend on a rendered loop with exact ground truth.

Sequence: :mod:`render_loop` (POV-Ray "woodbox", two laps of a full 360 degree orbit, lap 2 at another
radius and height; rendered into ``build/loop_render`` when missing). Three parts, all in one run:

(a) **loop closure**: the Engine + ColmapBackend on both laps in order (default EngineConfig, keyframe
    flow scaled to the image width): map segments, loop candidates / accepted / rejected closures,
    relocalizations, frames posed, ATE RMSE after Sim(3) alignment (evo, ``selfi_ros.apps.evaluate``) in
    scene units and in % of the trajectory's extent (diagonal of the ground-truth camera centres' bounding
    box); beside pycolmap 4 on all views at once (``bench_colmap.run_pycolmap``: SIFT, sequential matching
    with an overlap covering every pair, i.e. exhaustive, one incremental reconstruction, K fixed).
(b) **map reuse**: a fresh engine on lap 1 alone, ``Engine.save_map``; a second fresh engine with
    ``localization_only=True`` loads it and localizes lap 2. Frames posed (%), the error of lap 2's poses
    in the saved map's frame WITHOUT re-alignment: the Sim(3) that aligns lap 1 to the ground truth (evo,
    Umeyama) is applied unchanged to lap 2's poses (% of lap 2's extent), and the time per frame (median /
    p95) of ``process_frame`` in localization-only mode.
(c) **false loops**: lap 1 of the render, then real TUM fr1_rpy frames (``/work/shared/data/tum_fr1_rpy``,
    undistorted, resized to the render's size; an unrelated desk scene) in one engine: the number of
    accepted loop closures must be 0 (candidates and rejections reported).

    .venv/bin/python benchmarks/bench_loop_closure.py                   # -> results/loop_closure_cpu.md
    .venv/bin/python benchmarks/bench_loop_closure.py --views 24 --no-baseline --out /tmp/lc.md   # quick
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2  # before pycolmap (PNG writing aborts otherwise)
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from render_loop import load_frames, render_loop  # noqa: E402

TUM_DIR = os.environ.get("SELFI_TUM_FR1_RPY", "/work/shared/data/tum_fr1_rpy")
COUNTERS = ("windows", "window_failures", "map_segments", "loop_candidates", "loop_closures", "loop_rejections",
            "relocalizations", "relocalization_failures", "localization_failures", "keyframes")


def write_tum(path: str, items) -> None:
    """``items``: (stamp_ns, (4, 4) T_map_cam) pairs -> a TUM file (s, tx ty tz qx qy qz qw)."""
    from selfi_ros.geometry.se3 import matrix_to_quat_xyzw

    with open(path, "w") as fh:
        for ns, T in items:
            q = matrix_to_quat_xyzw(T[:3, :3])
            fh.write(f"{ns // 10**9}.{ns % 10**9:09d} {T[0, 3]:.9f} {T[1, 3]:.9f} {T[2, 3]:.9f} "
                     f"{q[0]:.9f} {q[1]:.9f} {q[2]:.9f} {q[3]:.9f}\n")


def extent(Ts) -> float:
    """Diagonal of the bounding box of the camera centres of (4, 4) poses (scene units)."""
    c = np.array([T[:3, 3] for T in Ts])
    return float(np.linalg.norm(c.max(0) - c.min(0)))


def make_engine(width: int, options: dict, **overrides):
    from selfi_ros.backends import make_backend
    from selfi_ros.engine.engine import Engine, EngineConfig

    d = EngineConfig()
    cfg = dataclasses.replace(d, keyframe_min_flow_px=d.keyframe_min_flow_px * width / 256.0, **overrides)
    return Engine(make_backend("colmap", **options), cfg)


def counters(engine) -> dict:
    st = engine.status()
    return {k: getattr(st, k) for k in COUNTERS}


def run_frames(engine, frames) -> list[float]:
    """process_frame over ``frames``; returns the ms per frame."""
    ms = []
    for f in frames:
        t = time.perf_counter()
        engine.process_frame(f)
        ms.append(1e3 * (time.perf_counter() - t))
    return ms


def part_a(frames, Ts, gt_path, work, options) -> dict:
    from selfi_ros.apps.evaluate import evaluate

    eng = make_engine(frames[0].width, options)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    run_frames(eng, frames)
    wall = time.perf_counter() - t0
    traj = eng.trajectory()
    est = os.path.join(work, "a_traj.tum")
    write_tum(est, [(p.stamp_ns, p.T_map_cam) for p in traj])
    res = {"wall_s": wall, "load_before": load0, "load_after": os.getloadavg()[0], "frames": len(frames),
           "poses": len(traj), **counters(eng)}
    ext = extent(Ts)
    res["extent"] = ext
    try:
        ev = evaluate(est, gt_path)
        res.update(ate_rmse=ev.ate_rmse, ate_max=ev.ate_max, ate_pct=100 * ev.ate_rmse / ext, ate_matched=ev.matched)
    except ValueError as e:
        res["ate_error"] = str(e)
    return res


def part_b(frames, Ts, gt_path, work, options, n_lap) -> dict:
    from selfi_ros.apps.evaluate import evaluate

    lap1, lap2 = frames[:n_lap], frames[n_lap:]
    eng = make_engine(frames[0].width, options)
    run_frames(eng, lap1)
    c1 = counters(eng)
    traj1 = eng.trajectory()
    est1 = os.path.join(work, "b_lap1.tum")
    write_tum(est1, [(p.stamp_ns, p.T_map_cam) for p in traj1])
    ev1 = evaluate(est1, gt_path)
    mdir = eng.save_map(os.path.join(work, "map"))["directory"]
    eng.close() if hasattr(eng, "close") else None
    loc = make_engine(frames[0].width, options, localization_only=True)
    loc.load_map(mdir)
    R, t, s = np.array(ev1.rotation), np.array(ev1.translation), ev1.scale
    ms, err = [], []
    gt_by_index = {f.index: T for f, T in zip(frames, Ts)}
    for f in lap2:
        t_start = time.perf_counter()
        o = loc.process_frame(f)
        ms.append(1e3 * (time.perf_counter() - t_start))
        if o.poses:
            p = o.poses[-1].T_map_cam[:3, 3]
            err.append(float(np.linalg.norm(s * R @ p + t - gt_by_index[f.index][:3, 3])))
    ext2 = extent(Ts[n_lap:])
    err = np.array(err) if err else np.array([np.nan])
    return {"lap1": {"poses": len(traj1), **c1, "ate_rmse": ev1.ate_rmse, "ate_pct": 100 * ev1.ate_rmse / extent(Ts[:n_lap]),
                     "map_bytes": sum(f.stat().st_size for f in Path(mdir).rglob("*") if f.is_file())},
            "lap2_frames": len(lap2), "posed": int(np.isfinite(err).sum()),
            "posed_pct": 100.0 * np.isfinite(err).sum() / len(lap2),
            "err_rmse": float(np.sqrt(np.nanmean(err ** 2))), "err_median": float(np.nanmedian(err)),
            "err_max": float(np.nanmax(err)), "extent2": ext2,
            "err_rmse_pct": float(100 * np.sqrt(np.nanmean(err ** 2)) / ext2),
            "err_max_pct": float(100 * np.nanmax(err) / ext2),
            "ms_median": float(np.median(ms)), "ms_p95": float(np.percentile(ms, 95)), **counters(loc)}


def tum_frames(width: int, height: int, every: int, n: int, t_offset_ns: int):
    """TUM fr1_rpy frames, undistorted (bench_colmap.read_tum_folder), resized to width x height (K scaled),
    re-stamped to follow the render (``t_offset_ns`` + 0.5 s each) and re-indexed after it."""
    from bench_colmap import read_tum_folder

    from selfi_ros.engine.types import Frame

    frames, K = read_tum_folder(TUM_DIR, every, n)
    out = []
    for k, f in enumerate(frames):
        sx, sy = width / f.width, height / f.height
        K2 = K.copy()
        K2[0, 0] *= sx
        K2[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K2[1, 1] *= sy
        K2[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        img = cv2.resize(f.image, (width, height), interpolation=cv2.INTER_AREA)
        out.append(Frame(t_offset_ns + k * 500_000_000, img, K=K2, frame_id="camera", index=100_000 + k, source=f.source))
    return out


def part_c(frames, n_lap, options, every: int, n_tum: int) -> dict:
    if not os.path.isfile(os.path.join(TUM_DIR, "rgb.txt")):
        return {"skipped": f"no TUM sequence at {TUM_DIR}"}
    lap1 = frames[:n_lap]
    tum = tum_frames(lap1[0].width, lap1[0].height, every, n_tum, lap1[-1].stamp_ns + 1_000_000_000)
    eng = make_engine(lap1[0].width, options)
    run_frames(eng, lap1 + tum)
    return {"render_frames": len(lap1), "tum_frames": len(tum), "poses": len(eng.trajectory()), **counters(eng)}


def baseline(frames, gt_path, work, Ts) -> dict:
    from bench_colmap import run_pycolmap

    res = run_pycolmap(frames, frames[0].K, os.path.join(work, "pycolmap"), gt_path, overlap=len(frames), threads=-1)
    if "ate_rmse_m" in res:
        res["ate_pct"] = 100 * res["ate_rmse_m"] / extent(Ts)
    return res


def _f(v, spec="{:.3g}"):
    return "-" if v is None else spec.format(v) if isinstance(v, float) else str(v)


def _code_state() -> str:
    """The checkout's commit and its uncommitted changes under selfi_ros/ (the figures depend on them)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--short", "--", "selfi_ros"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "code: unknown"
    changed = [x for x in dirty if "/" in x]
    return f"code: {head}" + (f" with uncommitted changes in {', '.join(changed)}" if changed else "")


def report(path, argv, meta, a, base, b, c, load0) -> None:
    from selfi_ros.backends.config import ColmapBackendConfig

    L = [f"## Loop closure, map reuse, false loops: colmap backend on a rendered loop "
         f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
         f"Command: `.venv/bin/python benchmarks/bench_loop_closure.py {' '.join(argv)}`. Machine: {os.cpu_count()} "
         f"cores, shared (1-min load average {load0:.1f} at start). Render: `benchmarks/render_loop.py`, "
         f"{meta['frames']} views ({meta['views_per_lap']} per lap, laps (radius, height) {meta['laps']}), "
         f"{meta['width']}x{meta['height']}, {meta['render_s_per_view']:.2f} s per view to render; "
         f"ground truth checked to {meta['verify_px']:.2f} px. Engine: EngineConfig defaults, keyframe flow "
         "scaled to the width. Extent: diagonal of the ground-truth camera centres' bounding box.", "",
         f"{_code_state()}; ColmapBackendConfig {ColmapBackendConfig()}.", ""]
    if a:
        L += ["**(a) both laps in order** (targets: 0 map segments, >= 1 loop closure, ATE <= 0.5 % of extent)", "",
              "| | ours (Engine + ColmapBackend) | pycolmap, all views at once (exhaustive pairs) |", "|---|---|---|"]
        bb = base or {}
        rows = [("frames posed", f"{a['poses']} / {a['frames']}", f"{bb.get('poses', '-')} / {a['frames']}"),
                ("map segments", a["map_segments"], f"{bb.get('models', '-')} models"),
                ("windows (failures)", f"{a['windows']} ({a['window_failures']})", "-"),
                ("loop candidates / closures / rejections",
                 f"{a['loop_candidates']} / {a['loop_closures']} / {a['loop_rejections']}", "-"),
                ("relocalizations (failures)", f"{a['relocalizations']} ({a['relocalization_failures']})", "-"),
                ("ATE RMSE (scene units, Sim(3), evo)", _f(a.get("ate_rmse")), _f(bb.get("ate_rmse_m"))),
                ("ATE / extent (%)", _f(a.get("ate_pct"), "{:.3f}"), _f(bb.get("ate_pct"), "{:.3f}")),
                ("wall time (s)", _f(a["wall_s"], "{:.1f}"), _f(bb.get("wall_s"), "{:.1f}")),
                ("load average before / after", f"{a['load_before']:.1f} / {a['load_after']:.1f}",
                 f"{bb['load_before']:.1f} / {bb['load_after']:.1f}" if bb else "-")]
        L += [f"| {x} | {y} | {z} |" for x, y, z in rows]
        L += ["", f"Extent {a['extent']:.2f} scene units.", ""]
    if b:
        l1 = b["lap1"]
        L += ["**(b) map reuse**: lap 1's map saved, lap 2 localized against it (localization-only), its poses mapped "
              "by the Sim(3) that aligned lap 1 to the ground truth, unchanged (targets: >= 95 % posed, <= 1 % of "
              "extent)", "",
              "| lap 1: posed, segments, ATE (%) | map on disk (MB) | lap 2 posed | error RMSE / median / max (% of "
              "lap 2's extent) | time per frame median / p95 (ms) |", "|---|---:|---:|---:|---:|",
              f"| {l1['poses']}, {l1['map_segments']}, {l1['ate_pct']:.3f} | {l1['map_bytes'] / 2**20:.1f} | "
              f"{b['posed']} / {b['lap2_frames']} ({b['posed_pct']:.1f} %) | {b['err_rmse_pct']:.3f} / "
              f"{100 * b['err_median'] / b['extent2']:.3f} / {b['err_max_pct']:.3f} | {b['ms_median']:.0f} / "
              f"{b['ms_p95']:.0f} |", ""]
    if c:
        if "skipped" in c:
            L += [f"**(c) false loops**: skipped ({c['skipped']})", ""]
        else:
            L += ["**(c) false loops**: render lap 1 then TUM fr1_rpy (resized to the render's size) in one engine "
                  "(target: 0 accepted closures)", "",
                  "| frames (render + TUM) | posed | loop candidates | accepted | rejected | segments | relocalizations |",
                  "|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {c['render_frames']} + {c['tum_frames']} | {c['poses']} | {c['loop_candidates']} | "
                  f"{c['loop_closures']} | {c['loop_rejections']} | {c['map_segments']} | {c['relocalizations']} |", ""]
    L += ["```json", json.dumps({"a": a, "pycolmap": base, "b": b, "c": c}, indent=1, default=float), "```", ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("\n".join(L))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--render", default=str(ROOT / "build" / "loop_render_s"), help="render folder (made when missing)")
    ap.add_argument("--views", type=int, default=36, help="views per lap")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--parts", default="a,b,c", help="comma list of a, b, c")
    ap.add_argument("--no-baseline", action="store_true", help="skip pycolmap in (a)")
    ap.add_argument("--tum-every", type=int, default=6, help="(c): every n-th TUM frame")
    ap.add_argument("--tum-frames", type=int, default=60, help="(c): TUM frames")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="ColmapBackend option")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loop_closure_cpu.md"))
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    try:
        meta = render_loop(args.render, args.views, args.width, args.height)
    except RuntimeError as e:
        print(f"skipped: {e}")
        return 77
    frames, Ts, meta = load_frames(args.render)
    gt_path = os.path.join(args.render, "groundtruth.tum")
    options = dict(kv.split("=", 1) for kv in args.option)
    parts = set(args.parts.split(","))
    work = tempfile.mkdtemp(prefix="bench_loop_closure_")
    a = base = b = c = None
    try:
        if "a" in parts:
            a = part_a(frames, Ts, gt_path, work, options)
            print("a", json.dumps(a, default=float), flush=True)
            if not args.no_baseline:
                base = baseline(frames, gt_path, work, Ts)
                print("pycolmap", json.dumps(base, default=float), flush=True)
        if "b" in parts:
            b = part_b(frames, Ts, gt_path, work, options, args.views)
            print("b", json.dumps(b, default=float), flush=True)
        if "c" in parts:
            c = part_c(frames, args.views, options, args.tum_every, args.tum_frames)
            print("c", json.dumps(c, default=float), flush=True)
        report(args.out, argv, meta, a, base, b, c, load0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

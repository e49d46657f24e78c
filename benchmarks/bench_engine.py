"""Engine cost without a model: chaining / map update per window, per-frame overhead, memory over a long run.

Uses the oracle backend (ground truth + noise, negligible cost of its own) on the synthetic box-room
sequence, replayed ``--laps`` times with new stamps (a long run over the same place). Prints one JSON
line per lap and a summary. Timings are wall-clock on this machine (CPU, numpy).

    .venv/bin/python benchmarks/bench_engine.py --laps 10 --width 256 --height 192   # -> results/engine_cpu.md
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from report import emit  # noqa: E402  (benchmarks/report.py)
import importlib.util  # noqa: E402

from selfi_ros.backends.oracle import OracleBackend, make_box_room_sequence  # noqa: E402
from selfi_ros.engine.engine import Engine, EngineConfig  # noqa: E402
from selfi_ros.engine.types import Frame  # noqa: E402
from selfi_ros.geometry.sim3 import umeyama  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--laps", type=int, default=10)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--downsample", type=int, default=2, help="oracle point-map stride (px)")
    ap.add_argument("--voxel", type=float, default=0.02)
    ap.add_argument("--max-map-points", type=int, default=200_000)
    ap.add_argument("--window-size", type=int, default=8)
    ap.add_argument("--overlap", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engine_cpu.md"),
                    help="markdown report (also printed)")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    laps = []

    frames, scene = make_box_room_sequence(args.frames, width=args.width, height=args.height)
    be = OracleBackend(scene, rot_noise_deg=0.2, trans_noise_m=0.005, depth_noise=0.005, scale_range=(0.3, 3.0),
                       downsample=args.downsample, seed=0)
    cfg = EngineConfig(keyframe_min_flow_px=20.0, keyframe_max_interval_s=1.0, window_size=args.window_size,
                       window_overlap=args.overlap, window_max_keyframes=args.window_size - args.overlap,
                       voxel_size=args.voxel, max_map_points=args.max_map_points, max_trajectory_poses=10_000)
    eng = Engine(be, cfg)

    chain_ms: list[float] = []
    # time chain_window where the engine looks it up (the module that imported it by name)
    E = next(m for m in (importlib.import_module(n) for n in ("selfi_ros.engine.integration", "selfi_ros.engine.engine")
                         if importlib.util.find_spec(n)) if hasattr(m, "chain_window"))
    real_chain = E.chain_window

    def timed_chain(*a, **k):
        t = time.perf_counter()
        r = real_chain(*a, **k)
        chain_ms.append(1e3 * (time.perf_counter() - t))
        return r

    E.chain_window = timed_chain
    map_ms: list[float] = []
    real_add = eng.map.add

    def timed_add(*a, **k):
        t = time.perf_counter()
        r = real_add(*a, **k)
        map_ms.append(1e3 * (time.perf_counter() - t))
        return r

    eng.map.add = timed_add
    window_ms, frame_ms = [], []
    t_all = time.perf_counter()
    for lap in range(args.laps):
        for f in frames:
            g = Frame(f.stamp_ns + lap * 100_000_000_000, f.image, f.K, f.frame_id, f.index, f.source)
            t = time.perf_counter()
            out = eng.process_frame(g)
            dt = 1e3 * (time.perf_counter() - t)
            (window_ms if out.window is not None else frame_ms).append(dt)
        st = eng.status()
        mem = eng.memory_bytes() if hasattr(eng, "memory_bytes") else getattr(st, "memory_bytes", 0)  # on demand
        traj = eng.trajectory()
        est = np.array([p.T_map_cam[:3, 3] for p in traj])
        gt = np.array([scene.T_world_cam[p.frame_index][:3, 3] for p in traj])
        S = umeyama(est, gt)
        ate = float(np.sqrt(np.mean(np.sum((S.apply(est) - gt) ** 2, 1))))
        laps.append({"lap": lap, "windows": st.windows, "keyframes": st.keyframes, "map_points": st.map_points,
                     "map_voxel": round(st.map_voxel_size, 4), "memory_MB": round(mem / 2**20, 2),
                     "ate_all_m": round(ate, 4), "chain_residual": round(st.chain_residual, 5)})
        print(json.dumps(laps[-1]), flush=True)
    E.chain_window = real_chain
    total = time.perf_counter() - t_all
    q = lambda a: (round(float(np.median(a)), 2), round(float(np.percentile(a, 95)), 2)) if a else None  # noqa
    summary = {
        "summary": f"{args.frames}x{args.laps} frames {args.width}x{args.height}, oracle stride {args.downsample}",
        "window_call_ms_median_p95": q(window_ms), "chain_ms_median_p95": q(chain_ms),
        "map_add_ms_median_p95": q(map_ms), "frame_call_ms_median_p95 (LK + localize + bookkeeping)": q(frame_ms),
        "frames_per_s": round(args.frames * args.laps / total, 1)}
    print(json.dumps(summary))

    def mp(v):
        return "-" if v is None else f"{v[0]} / {v[1]}"

    L = [f"## Engine cost over a long run (oracle backend, CPU, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
         "",
         f"Command: `PYTHONPATH=. .venv/bin/python benchmarks/bench_engine.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
         f". Machine: {os.cpu_count()} cores (load average {load0:.1f} at start). Oracle backend (ground truth + "
         f"noise, negligible cost of its own) on the synthetic box-room sequence, {summary['summary']}, replayed "
         f"{args.laps} times with new stamps; window_size {args.window_size}, overlap {args.overlap}, voxel "
         f"{args.voxel}, max_map_points {args.max_map_points}. Times in ms, median / p95.",
         "",
         "| chaining per window | map update per window | whole window call | per-frame call (LK + localize + bookkeeping) | frames/s |",
         "|---|---|---|---|---:|",
         f"| {mp(summary['chain_ms_median_p95'])} | {mp(summary['map_add_ms_median_p95'])} | "
         f"{mp(summary['window_call_ms_median_p95'])} | "
         f"{mp(summary['frame_call_ms_median_p95 (LK + localize + bookkeeping)'])} | {summary['frames_per_s']} |",
         "",
         "| lap | windows | keyframes | map points | map voxel | memory (MB) | ATE all poses (m) | chain residual |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in laps:
        L.append(f"| {r['lap']} | {r['windows']} | {r['keyframes']} | {r['map_points']} | {r['map_voxel']} | "
                 f"{r['memory_MB']} | {r['ate_all_m']} | {r['chain_residual']} |")
    emit(L, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

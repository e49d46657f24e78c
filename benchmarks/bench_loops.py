"""Loop closure and map reuse over a long run (oracle backend, CPU): ATE and memory lap by lap.

The synthetic box-room sequence (exact ground truth) is replayed ``--laps`` times with new stamps, with
drift noise on (pose noise per localization, depth noise, a random scale per window), twice: with window
memories (window database, revisits, verified loop closure on the Sim(3) pose graph, relocalization: the
defaults) and with them off (the odometry that forgets). Per lap: windows, ATE of all poses so far (Umeyama
Sim(3) alignment), engine memory (``Engine.memory_bytes``), loop counters. Then the map of lap 1 is saved,
loaded into a fresh engine in localization-only mode and lap 2 is localized against it: frames posed, ATE
in the saved map's frame (no re-alignment: against the first run's own poses of the same views) and the
time per frame (median / p95).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_loops.py --laps 10    # -> results/loops_cpu.md
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from report import emit  # noqa: E402  (benchmarks/report.py)

from selfi_ros.backends.oracle import OracleBackend, make_box_room_sequence  # noqa: E402
from selfi_ros.engine.engine import Engine, EngineConfig  # noqa: E402
from selfi_ros.engine.types import Frame  # noqa: E402
from selfi_ros.geometry.sim3 import umeyama  # noqa: E402


def ate(traj, scene) -> float:
    est = np.array([p.T_map_cam[:3, 3] for p in traj])
    gt = np.array([scene.T_world_cam[p.frame_index][:3, 3] for p in traj])
    S = umeyama(est, gt)
    return float(np.sqrt(np.mean(np.sum((S.apply(est) - gt) ** 2, 1))))


def lap(frames, k):
    return [Frame(f.stamp_ns + k * 100_000_000_000, f.image, f.K, f.frame_id, f.index, f.source) for f in frames]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--laps", type=int, default=10)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loops_cpu.md"))
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    frames, scene = make_box_room_sequence(args.frames, width=args.width, height=args.height)

    def backend(seed=0):
        return OracleBackend(scene, rot_noise_deg=0.2, trans_noise_m=0.005, depth_noise=0.005, scale_range=(0.3, 3.0),
                             downsample=2, seed=seed)

    base = dict(keyframe_min_flow_px=20.0 * args.width / 256, keyframe_max_interval_s=1.0, window_size=8,
                window_overlap=2, window_max_keyframes=6, voxel_size=0.02, max_map_points=200_000,
                max_trajectory_poses=100_000)
    runs = {"window memories (default)": dict(base),
            "off (no loops, revisits, relocalization)": dict(base, loop_closure=False, revisit_windows=False,
                                                              relocalization=False)}
    tables = {}
    tmp = tempfile.mkdtemp(prefix="bench_loops_")
    saved = None
    for name, cfg in runs.items():
        eng = Engine(backend(), EngineConfig(**cfg))
        rows = []
        for k in range(args.laps):
            for f in lap(frames, k):
                eng.process_frame(f)
            st = eng.status()
            rows.append((k + 1, st.windows, round(ate(eng.trajectory(), scene), 4), round(eng.memory_bytes() / 2**20, 2),
                         st.loop_candidates, st.loop_closures, st.loop_rejections, st.relocalizations, st.map_segments))
            print(name, rows[-1], flush=True)
            if k == 0 and saved is None:
                saved = ({p.frame_index: p.T_map_cam.copy() for p in eng.trajectory()},
                         eng.save_map(os.path.join(tmp, "map"))["directory"])
        tables[name] = rows
    # map reuse: lap 1's map, lap 2 in localization-only mode
    first, mdir = saved
    loc = Engine(backend(seed=7), EngineConfig(**dict(base, localization_only=True)))
    loc.load_map(mdir)
    ms, err = [], []
    for f in lap(frames, 1):
        t = time.perf_counter()
        o = loc.process_frame(f)
        ms.append(1e3 * (time.perf_counter() - t))
        if o.poses and f.index in first:
            err.append(np.linalg.norm(o.poses[0].T_map_cam[:3, 3] - first[f.index][:3, 3]))
    c = np.array([T[:3, 3] for T in first.values()])
    ext = float(np.linalg.norm(c.max(0) - c.min(0)))
    posed = len(err) / len(frames)
    L = [f"## Loop closure and map reuse over a long run (oracle backend, CPU, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
         "",
         f"Command: `PYTHONPATH=. .venv/bin/python benchmarks/bench_loops.py {' '.join(argv if argv is not None else sys.argv[1:])}`. "
         f"Machine: {os.cpu_count()} cores (load average {load0:.1f} at start, shared). Box-room sequence "
         f"{args.frames} frames {args.width}x{args.height} replayed {args.laps} times; oracle noise 0.2 deg / 5 mm per "
         "pose, 0.5 % depth, window scale 0.3-3x. ATE: all poses so far, Umeyama Sim(3) alignment (m).",
         ""]
    for name, rows in tables.items():
        L += [f"**{name}**", "", "| lap | windows | ATE (m) | memory (MB) | loop candidates | loops closed | loops rejected "
              "| relocalizations | segments |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        L += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
        r0, r1 = rows[0], rows[-1]
        L += ["", f"ATE lap {args.laps} / lap 1 = {r1[2] / r0[2]:.2f}; memory lap {args.laps} / lap 1 = "
              f"{r1[3] / r0[3]:.3f}, largest after lap 1 / lap 1 = {max(r[3] for r in rows[1:]) / r0[3]:.3f}"
              if len(rows) > 1 else "", ""]
    L += ["**map reuse** (lap 1's map saved, loaded into a fresh engine, lap 2 in localization-only mode)", "",
          "| frames posed | error in the saved map's frame, median / max (% of extent) | time per frame median / p95 (ms) |",
          "|---:|---:|---:|",
          f"| {100 * posed:.1f} % | {100 * np.median(err) / ext:.3f} / {100 * np.max(err) / ext:.3f} | "
          f"{np.median(ms):.2f} / {np.percentile(ms, 95):.2f} |"]
    emit(L, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

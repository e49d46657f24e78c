"""The main job, measured: ``selfi-ros demo`` on the bundled sample at one or more playback rates.

Runs the demo exactly as a user does (``python -m selfi_ros.cli demo --rate R --out DIR``: the node with its
default parameters, the recorder and the player in three rclpy processes over Fast DDS with
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, a private ``ROS_DOMAIN_ID`` per run), reads each run's
``summary.json`` and writes one table (frames in / dropped by reason, keyframes, windows, poses, ATE/RPE
after Sim(3) alignment with evo, latency image -> TF, run time). The discussion of these figures is in
benchmarks/results/demo.md; this script writes the measured table only.

    .venv/bin/python benchmarks/bench_demo.py                    # rates 1.0, 0.5, 0.25 -> results/demo_runs.md
    .venv/bin/python benchmarks/bench_demo.py --rates 1.0 --out /tmp/demo_runs.md
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from report import emit  # noqa: E402  (benchmarks/report.py)


def run_rate(rate: float, out_dir: Path, timeout_s: float) -> dict:
    """One ``selfi-ros demo --rate rate`` in a subprocess; returns its summary.json (dict).

    Raises:
        RuntimeError: the demo exited non-zero or wrote no summary (its output tail is in the message).
    """
    domain = random.Random(time.monotonic_ns()).randint(120, 220)
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    cmd = [sys.executable, "-m", "selfi_ros.cli", "demo", "--rate", str(rate), "--out", str(out_dir),
           "--domain-id", str(domain)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    print(r.stdout, flush=True)
    summary = out_dir / "summary.json"
    if r.returncode != 0 or not summary.exists():
        raise RuntimeError(f"demo at rate {rate} failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return json.loads(summary.read_text())


def _f(v, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1.0,0.5,0.25", help="playback rates (x real time of the 5 Hz bag)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_runs.md"))
    ap.add_argument("--work-dir", default=str(ROOT / "build" / "bench_demo"), help="demo output folders")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per demo run")
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    load0 = os.getloadavg()[0]
    runs = []
    for rate in rates:
        runs.append(run_rate(rate, Path(args.work_dir) / f"rate_{rate}", args.timeout))
    rows = [
        ("frames in (of played)", lambda s: f"{s['frames_in']} ({s['images_in_bag']})"),
        ("dropped (= queue full + not localized under load)",
         lambda s: f"{s['frames_dropped']} (= {s.get('frames_dropped_queue_full')} + {s.get('frames_skipped_under_load')})"),
        ("rejected / lost in transport", lambda s: f"{s['frames_rejected']} / {s['frames_lost_in_transport']}"),
        ("keyframes / windows", lambda s: f"{s['keyframes']} / {s['windows']}"),
        ("failed window attempts / map discontinuities", lambda s: f"{s.get('window_failures')} / {s.get('map_segments')}"),
        ("poses on /tf / map points", lambda s: f"{s['poses_received']} / {s['map_points']}"),
        ("**ATE RMSE after Sim(3) (evo)**, scene units (GT path)",
         lambda s: f"**{_f(s['ate_rmse'], '{:.3f}')}** ({_f(s['gt_path_length'], '{:.1f}')})"),
        ("RPE per pose pair", lambda s: f"{_f(s['rpe_trans_rmse'], '{:.3f}')} units, {_f(s['rpe_rot_rmse_deg'], '{:.2f}')} deg"),
        ("latency image -> TF p50 / p95 (ms)", lambda s: f"{_f(s['latency_image_to_tf_ms'].get('p50_ms'), '{:.0f}')} / "
                                                         f"{_f(s['latency_image_to_tf_ms'].get('p95_ms'), '{:.0f}')}"),
        ("after the first pose p50 / p95 (ms, n)",
         lambda s: f"{_f((s.get('latency_after_first_pose_ms') or {}).get('p50_ms'), '{:.0f}')} / "
                   f"{_f((s.get('latency_after_first_pose_ms') or {}).get('p95_ms'), '{:.0f}')} "
                   f"({(s.get('latency_after_first_pose_ms') or {}).get('count')})"),
        ("run time (playing; until drained)",
         lambda s: f"{s['run_time_s']:.1f} s ({s['play_time_s']:.1f}; {s['processing_time_s']:.1f})"),
    ]
    cmd = ".venv/bin/python benchmarks/bench_demo.py" + ("" if args.rates == "1.0,0.5,0.25" else f" --rates {args.rates}")
    L = [f"## `selfi-ros demo` on the bundled sample (CPU, colmap backend, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
         "",
         f"Command: `{cmd}` (= `selfi-ros demo --rate R` per rate, node defaults). Machine: {os.cpu_count()} "
         f"cores (load average {load0:.1f} at start), no GPU. Bag: data/sample/woodbox_orbit.mcap, 48 JPEG "
         "frames 480x360 at 5 Hz, exact ground truth. Discussion: benchmarks/results/demo.md.",
         "",
         "| figure | " + " | ".join(f"rate {r}" for r in rates) + " |",
         "|---|" + "---|" * len(rates)]
    for name, fn in rows:
        L.append(f"| {name} | " + " | ".join(fn(s) for s in runs) + " |")
    emit(L, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

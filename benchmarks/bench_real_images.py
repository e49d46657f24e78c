"""CPU colmap backend on real photographs with calibrated poses: the figures of test/test_real_images.py.

Runs ``pytest -q -s test/test_real_images.py`` (``ColmapBackend.reconstruct_window`` on OpenCV's 13 real
chessboard views in data/real_chessboard, known K, board region only; ATE and rotation errors after
Sim(3) alignment against the calibration's poses, pairwise relative rotation errors), collects the figures
the test prints and its pass/fail count, and writes them as a table. How the data was made and what the
figures mean: benchmarks/results/real_images.md.

    .venv/bin/python benchmarks/bench_real_images.py        # -> benchmarks/results/real_images_runs.md
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from report import emit  # noqa: E402  (benchmarks/report.py)

TEST = "test/test_real_images.py"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "real_images_runs.md"))
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", TEST], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=args.timeout)
    wall = time.monotonic() - t0
    print(r.stdout[-4000:], flush=True)
    figures = [ln.split("real views:", 1)[1].strip() for ln in r.stdout.splitlines() if "real views:" in ln]
    m = re.search(r"^(\d+ passed.*?|.*failed.*?) in [\d.]+s", r.stdout, flags=re.M)
    result = m.group(1).strip("= ") if m else f"pytest exit code {r.returncode}"
    L = [f"## ColmapBackend on 13 real chessboard views (CPU, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
         "",
         f"Command: `.venv/bin/python benchmarks/bench_real_images.py` (= `.venv/bin/python -m pytest -q -s {TEST}`). "
         f"Machine: {os.cpu_count()} cores (load average {load0:.1f} at start), no GPU. Backend options of the "
         "test: max_num_features 8192, min_inliers 8, num_threads 1, seed 0. Data and discussion: "
         "benchmarks/results/real_images.md.",
         "",
         "| figure | value |",
         "|---|---|",
         f"| test result | {result} ({wall:.1f} s) |"]
    L += [f"| measured | {f} |" for f in figures]
    emit(L, args.out)
    if r.returncode != 0:
        print(r.stdout[-3000:] + r.stderr[-3000:], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run every benchmark of benchmarks/ and print a summary (``make bench`` runs this).

Each benchmark is its own script run in its own process (they measure memory and time per process);
each writes its own result file. Two modes:

* quick (default): reduced configurations that finish in about 10-15 minutes on a 2-core CPU machine
  (measured: see BENCHMARKS.md "How to run"); results go to ``build/bench/results/`` so a quick run never
  replaces the published figures.
* ``--full``: the configurations of the published figures; results replace ``benchmarks/results/*``
  (an hour or more on 2 CPU cores, dominated by the alignment training and the model sweep).

``--device cuda`` is passed to the scripts that take it (bench_model, bench_query, compare_official
numerics/sweep), which then write their ``*_gpu`` result files; the others run on the CPU as always.
A benchmark that cannot run here (no CUDA device for ``--device cuda``, no checkout of the official code
for compare_official, a missing Python package or data set) is reported as skipped with the reason, not
as a failure; a script may also exit with code 77 to declare itself skipped. The exit status is 1 if any
benchmark failed (non-zero exit, timeout, or no result file written), else 0. Full output of each script:
``build/bench/logs/<name>.log``.

    .venv/bin/python benchmarks/run_all.py                       # quick, CPU
    .venv/bin/python benchmarks/run_all.py --full                # the published configurations
    .venv/bin/python benchmarks/run_all.py --only query,model --device cuda
    .venv/bin/python benchmarks/run_all.py --official /path/to/vggt --only official_numerics
    .venv/bin/python benchmarks/run_all.py --list
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SKIP_EXIT_CODE = 77  # a script's own "cannot run here" (the automake/ctest convention)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script and how to run it.

    ``quick`` / ``full`` are argument lists; ``{out}`` is replaced by the result path, ``{device}`` by the
    ``--device`` value, ``{official}`` by the official checkout's path. ``result`` is the result file name,
    where ``{dev}`` becomes ``gpu`` for a CUDA device and ``cpu`` otherwise.
    """

    name: str
    script: str
    quick: tuple
    full: tuple
    result: str
    what: str
    takes_device: bool = False
    needs: tuple = ()  # top-level Python modules that must be importable
    data: tuple = ()  # paths (relative to the repository) that must exist
    official: Optional[str] = None  # "vggt" or "sail": needs a checkout of that official code
    env: dict = field(default_factory=dict)
    timeout_quick_s: float = 900.0
    timeout_full_s: float = 3 * 3600.0


SAMPLE = "data/sample/woodbox_orbit.mcap"
BENCHMARKS = [
    Benchmark("engine", "bench_engine.py", ("--laps", "2", "--out", "{out}"), ("--laps", "10", "--out", "{out}"),
              "engine_cpu.md", "engine cost over long runs (oracle backend: chaining, map, per frame, memory, ATE)"),
    Benchmark("model", "bench_model.py", ("--quick", "--device", "{device}", "--out", "{out}"),
              ("--device", "{device}", "--out", "{out}"), "model_{dev}.md",
              "VGGT model time / memory vs frames, resolution; localize vs re-run; memory per anchor",
              takes_device=True, needs=("torch",)),
    Benchmark("query", "bench_query.py", ("--threads", "1", "--reps", "2", "--device", "{device}", "--out", "{out}"),
              ("--threads", "1,2", "--reps", "5", "--device", "{device}", "--out", "{out}"), "query_{dev}.md",
              "SAIL-Recon query pass vs re-running the window (through VGGTBackend)",
              takes_device=True, needs=("torch",)),
    Benchmark("node", "bench_node.py", ("--rates", "1.0", "--out", "{out}"), ("--out", "{out}"), "node_cpu.md",
              "selfi_node end to end over DDS (colmap; vggt tiny random weights): latency, drops, throughput",
              needs=("rclpy", "pycolmap", "mcap", "torch"), data=(SAMPLE,)),
    Benchmark("alignment", "bench_alignment.py", ("--steps", "30", "--eval-every", "10", "--out", "{out}"),
              ("--steps", "300", "--eval-every", "50", "--out", "{out}"), "alignment_cpu.md",
              "Selfi alignment: adapter PCK, bundle adjustment, depth drift (tiny random backbone)",
              needs=("torch",), env={"OMP_NUM_THREADS": "2"}),
    Benchmark("demo", "bench_demo.py", ("--rates", "1.0", "--out", "{out}"), ("--out", "{out}"), "demo_runs.md",
              "`selfi-ros demo` on the sample bag (colmap backend): ATE, latency, drops",
              needs=("rclpy", "pycolmap", "mcap", "evo"), data=(SAMPLE,)),
    Benchmark("real_images", "bench_real_images.py", ("--out", "{out}"), ("--out", "{out}"), "real_images_runs.md",
              "colmap backend on 13 real calibrated photographs (test/test_real_images.py)",
              needs=("pycolmap", "cv2"), data=("data/real_chessboard/groundtruth.tum",)),
    Benchmark("colmap", "bench_colmap.py", ("--every", "3", "--max-frames", "120", "--out", "{out}"),
              ("--out", "{out}"), "colmap_cpu.md",
              "issue 11: colmap backend on TUM fr1_rpy vs pycolmap on all frames (wall time / video, ATE)",
              needs=("pycolmap", "cv2", "evo", "yaml"), timeout_quick_s=1200.0),  # no sequence: exits 77 (skipped)
    Benchmark("loop_closure", "bench_loop_closure.py", ("--no-baseline", "--out", "{out}"), ("--out", "{out}"),
              "loop_closure_cpu.md", "issue 10: colmap backend on a rendered 2-lap loop (loops, ATE vs pycolmap), "
              "map reuse in localization-only mode, false loops (render + TUM)",
              needs=("pycolmap", "cv2", "evo"), timeout_quick_s=1200.0),  # no povray: exits 77 (skipped)
    Benchmark("loops", "bench_loops.py", ("--laps", "3", "--out", "{out}"), ("--laps", "10", "--out", "{out}"),
              "loops_cpu.md", "issue 10: oracle backend over many laps (ATE and memory per lap with and without "
              "window memories; map reuse in localization-only mode)"),
    Benchmark("tum", "bench_tum.py", ("--every", "12", "--skip", "pycolmap", "--out", "{out}.d", "--report", "{out}"),
              ("--every", "6", "--out", "{out}.d", "--report", "{out}"), "tum_fr1_rpy_runs.md",
              "issue 9: TUM fr1_rpy offline with and without the lens model, beside pycolmap on all frames",
              needs=("pycolmap", "cv2", "evo"), data=("../shared/data/tum_fr1_rpy/rgb.txt",), timeout_quick_s=1200.0),
    Benchmark("official_numerics", "compare_official.py",
              ("--official", "{official}", "numerics", "--size", "reduced", "--device", "{device}", "--json", "{out}"),
              ("--official", "{official}", "numerics", "--size", "full", "--frames", "2", "--hw", "126", "168",
               "--device", "{device}", "--json", "{out}"), "official_numerics_{dev}.json",
              "ours vs the official VGGT code: max |difference| of every output (shared random weights)",
              takes_device=True, needs=("torch",), official="vggt"),
    Benchmark("official_sweep", "compare_official.py",
              ("--official", "{official}", "sweep", "--size", "reduced", "--frames", "1", "2", "--device", "{device}",
               "--json", "{out}"),
              ("--official", "{official}", "sweep", "--size", "full", "--frames", "2", "8", "16", "--hw", "126", "168",
               "--device", "{device}", "--json", "{out}"), "official_sweep_{dev}.json",
              "ours vs the official VGGT code: time and peak memory of one forward",
              takes_device=True, needs=("torch",), official="vggt"),
    Benchmark("official_sail", "compare_official.py",
              ("--official", "{official}", "sail", "--size", "reduced", "--json", "{out}"),
              ("--official", "{official}", "sail", "--size", "full", "--anchors", "3", "--queries", "2", "--hw", "126",
               "182", "--json", "{out}"), "official_sail_cpu.json",
              "ours vs the official SAIL-Recon code: anchor + query pass (all tokens)",
              needs=("torch",), official="sail"),
]


@dataclass
class Outcome:
    """What happened to one benchmark: status ok | failed | skipped, wall time (s), result path or reason."""

    name: str
    status: str
    wall_s: float = 0.0
    detail: str = ""


def _cuda_available() -> bool:
    r = subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                       capture_output=True, timeout=300)
    return r.returncode == 0


def skip_reason(b: Benchmark, args, cuda_ok: Optional[bool]) -> Optional[str]:
    """Why ``b`` cannot run on this machine with these options, or None."""
    missing = [m for m in b.needs if importlib.util.find_spec(m) is None]
    if missing:
        return f"Python package(s) not importable: {', '.join(missing)}"
    absent = [d for d in b.data if not (ROOT / d).exists()]
    if absent:
        return f"data missing: {', '.join(absent)}"
    if b.official:
        path = args.official if b.official == "vggt" else args.official_sail
        if not path:
            flag = "--official" if b.official == "vggt" else "--official-sail"
            repo = "facebookresearch/vggt" if b.official == "vggt" else "HKUST-SAIL/sail-recon"
            return f"needs a checkout of {repo} ({flag} PATH); it is not part of this repository"
    if b.takes_device and args.device.startswith("cuda") and cuda_ok is False:
        return f"--device {args.device}: no CUDA device here (torch.cuda.is_available() is False)"
    return None


def _expand(a: str, out: Path, args, b: Benchmark) -> str:
    official = (args.official if b.official == "vggt" else args.official_sail) or ""
    return a.replace("{out}", str(out)).replace("{device}", args.device).replace(
        "{official}", str(Path(official).resolve()) if official else "")


def result_path(b: Benchmark, args) -> Path:
    dev = "gpu" if args.device.startswith("cuda") and b.takes_device else "cpu"
    return Path(args.results_dir) / b.result.replace("{dev}", dev)


def run_benchmark(b: Benchmark, args, log_dir: Path) -> Outcome:
    """Run one script in its own process group (killed as a group on timeout); output to its log file."""
    out = result_path(b, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(BENCH / b.script)] + [_expand(a, out, args, b) for a in (b.full if args.full else b.quick)]
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", **b.env}
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    timeout = args.timeout or (b.timeout_full_s if args.full else b.timeout_quick_s)
    log = log_dir / f"{b.name}.log"
    t0 = time.monotonic()
    start_wall = time.time()
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        def pump():  # progress to the console with --verbose, everything to the log
            for line in proc.stdout:
                fh.write(line)
                if args.verbose:
                    print(f"  [{b.name}] {line}", end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the script's own process group (its node subprocesses too)
            proc.wait()
            reader.join(5)
            return Outcome(b.name, "failed", time.monotonic() - t0, f"timeout after {timeout:.0f} s; log {log}")
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait()
            raise
        reader.join(30)
    wall = time.monotonic() - t0
    if rc == SKIP_EXIT_CODE:
        last = [ln for ln in log.read_text().splitlines() if ln.strip()]
        return Outcome(b.name, "skipped", wall, last[-1] if last else "declared skipped")
    if rc != 0:
        return Outcome(b.name, "failed", wall, f"exit code {rc}; log {log}")
    if not out.exists() or out.stat().st_mtime < start_wall - 1:
        return Outcome(b.name, "failed", wall, f"no result file written ({out}); log {log}")
    return Outcome(b.name, "ok", wall, str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out))


def print_summary(outcomes: list, total_s: float) -> None:
    rows = [("benchmark", "status", "wall (s)", "result file / reason")]
    rows += [(o.name, o.status, f"{o.wall_s:.1f}" if o.status != "skipped" or o.wall_s else "-", o.detail)
             for o in outcomes]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    print()
    for k, r in enumerate(rows):
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}  {r[3]}")
        if k == 0:
            print(f"{'-' * w[0]}  {'-' * w[1]}  {'-' * w[2]}  {'-' * 20}")
    n = {s: sum(o.status == s for o in outcomes) for s in ("ok", "failed", "skipped")}
    print(f"\n{n['ok']} ok, {n['failed']} failed, {n['skipped']} skipped in {total_s:.0f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the configurations of the published figures; "
                                                        "results replace benchmarks/results/*")
    ap.add_argument("--device", default="cpu", help="passed to the scripts that take it (e.g. cuda)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME[,NAME]",
                    help="run only these benchmarks (repeatable; see --list)")
    ap.add_argument("--results-dir", default=None,
                    help="where result files go (default: benchmarks/results with --full, build/bench/results else)")
    ap.add_argument("--official", default=os.environ.get("SELFI_OFFICIAL_VGGT"),
                    help="checkout of facebookresearch/vggt for compare_official (or $SELFI_OFFICIAL_VGGT)")
    ap.add_argument("--official-sail", default=os.environ.get("SELFI_OFFICIAL_SAIL"),
                    help="checkout of HKUST-SAIL/sail-recon for official_sail (or $SELFI_OFFICIAL_SAIL)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds allowed per benchmark (default 900 quick, 10800 full)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="stream each script's output")
    args = ap.parse_args(argv)
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:<18} {b.script:<22} {b.what}")
        return 0
    only = [n for group in args.only for n in group.split(",") if n]
    unknown = sorted(set(only) - {b.name for b in BENCHMARKS})
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(b.name for b in BENCHMARKS)}")
    selected = [b for b in BENCHMARKS if not only or b.name in only]
    args.results_dir = Path(args.results_dir or (BENCH / "results" if args.full else ROOT / "build" / "bench" / "results"))
    log_dir = ROOT / "build" / "bench" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    cuda_ok = None
    if args.device.startswith("cuda") and any(b.takes_device for b in selected):
        cuda_ok = _cuda_available()
    mode = "full (published configurations)" if args.full else "quick"
    print(f"benchmarks: {mode}, device {args.device}, results in {args.results_dir}, logs in {log_dir}; "
          f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs", flush=True)
    outcomes = []
    t_all = time.monotonic()
    for k, b in enumerate(selected, 1):
        official = args.official if b.official == "vggt" else args.official_sail if b.official else None
        if official and not Path(official).is_dir():  # asked for, but wrong: an error, not "cannot run here"
            outcomes.append(Outcome(b.name, "failed", 0.0, f"official checkout not found: {official}"))
            print(f"[{k}/{len(selected)}] {b.name}: failed (official checkout not found: {official})", flush=True)
            continue
        reason = skip_reason(b, args, cuda_ok)
        if reason:
            outcomes.append(Outcome(b.name, "skipped", 0.0, reason))
            print(f"[{k}/{len(selected)}] {b.name}: skipped ({reason})", flush=True)
            continue
        print(f"[{k}/{len(selected)}] {b.name}: {b.what} ...", flush=True)
        o = run_benchmark(b, args, log_dir)
        outcomes.append(o)
        print(f"[{k}/{len(selected)}] {b.name}: {o.status} ({o.wall_s:.1f} s) {o.detail}", flush=True)
        if o.status == "failed":
            tail = (log_dir / f"{b.name}.log").read_text().splitlines()[-15:]
            print("\n".join("    " + ln for ln in tail), flush=True)
    print_summary(outcomes, time.monotonic() - t_all)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())

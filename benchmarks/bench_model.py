"""Benchmark the VGGT model code: time and peak memory vs frames and resolution, localization against a
scene memory vs re-running the window, and scene-memory bytes per anchor vs tokens kept.

CPU (default): a reduced config (random weights, timing only - outputs are meaningless) so a run takes a
few minutes on 2 cores. GPU (``--device cuda``): the full VGGT-1B / SAIL-Recon shape with random weights
under the official autocast. Each measurement runs in a fresh subprocess so the peak memory is its own
(CPU: ru_maxrss growth over the forward; GPU: torch.cuda.max_memory_allocated).

    .venv/bin/python benchmarks/bench_model.py                # CPU, writes benchmarks/results/model_cpu.md
    .venv/bin/python benchmarks/bench_model.py --device cuda  # GPU, writes benchmarks/results/model_gpu.md
    .venv/bin/python benchmarks/bench_model.py --quick --out /tmp/model.md   # a smoke-sized run (~1-2 min CPU)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from report import emit  # noqa: E402  (benchmarks/report.py)


def _cfg(size: str):
    from selfi_ros.model.config import VGGTConfig

    if size == "full":
        return VGGTConfig.sail()
    # "small": 1/4 width, 1/3 depth of VGGT-1B (head_dim 64 as the real model)
    return VGGTConfig(embed_dim=256, depth=8, num_heads=4, dino_depth=4, dino_num_heads=4, enable_track=False,
                      sail_reloc=True, dpt_layers=(1, 3, 5, 7), dpt_features=64,
                      dpt_out_channels=(64, 128, 256, 256), camera_trunk_depth=2, camera_num_heads=4)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(spec: dict) -> dict:
    """One measurement (runs in its own process)."""
    import torch

    from selfi_ros.model.loading import load_model
    from selfi_ros.model.scene_memory import query_pass, run_anchor_pass

    torch.set_num_threads(spec.get("threads", 2))
    dev = torch.device(spec["device"])
    model = load_model(None, config=_cfg(spec["size"]), random_weights=True, device=dev)
    H, W = spec["hw"]
    g = torch.Generator().manual_seed(0)

    def imgs(n):
        return torch.rand(n, 3, H, W, generator=g).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    kind = spec["kind"]
    x = imgs(spec["frames"])
    if kind == "localize":
        mem, _ = run_anchor_pass(model, x, spec.get("tokens", "all"))
        q = imgs(1)
        query_pass(model, mem, q, with_points=False)  # warm-up
    else:
        with torch.inference_mode():
            model.infer(imgs(1))  # warm-up (allocator, kernels)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = _rss_mb()
    times = []
    for _ in range(spec.get("reps", 2)):  # the minimum over repetitions (the machine is shared)
        t0 = time.perf_counter()
        if kind == "window":
            model.infer(x)
        elif kind == "localize":
            query_pass(model, mem, q, with_points=False)
        sync()
        times.append(time.perf_counter() - t0)
    dt = min(times)
    peak = ((torch.cuda.max_memory_allocated() - base) / 2**20 if dev.type == "cuda" else _rss_mb() - rss0)
    out = {"time_s": dt, "peak_mb": peak}
    if kind == "localize":
        out["memory_mb"] = mem.nbytes / 2**20
    return out


def run_one(spec: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    for line in r.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"worker failed for {spec}: {r.stderr[-2000:]}")


def memory_per_anchor_table(hw, size: str) -> list:
    """Scene-memory bytes per anchor (exact accounting of SceneMemory.nbytes, computed on the meta device
    shapes: K and V per layer, int64 positions, the 2C camera token)."""
    cfg = _cfg(size)
    H, W = hw
    n_patch = (H // 14) * (W // 14)
    rows = []
    for tokens in ("all", 300, 100, 32):
        kept = n_patch if tokens == "all" else min(tokens, n_patch)
        per_tok = 5 + kept
        for name, kbytes, vbytes in (("fp32", 4, 4), ("autocast bf16 (K fp32, V bf16)", 4, 2), ("bf16 store", 2, 2)):
            b = cfg.depth * per_tok * cfg.embed_dim * (kbytes + vbytes) + cfg.depth * per_tok * 2 * 8 + 2 * cfg.embed_dim * 4
            rows.append((tokens, per_tok, name, b / 2**20))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", default=None, help="frame counts of the first table (default 1,2,4,8,16,32; "
                                                   "--quick: 1,2,4)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer frame counts and resolutions, one localization setting (a smoke-sized run)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(worker(json.loads(args.one))))
        return
    import torch

    gpu = args.device.startswith("cuda")
    size = "full" if gpu else "small"
    hw = (294, 518) if gpu else (126, 168)
    frames = [int(f) for f in (args.frames or ("1,2,4" if args.quick else "1,2,4,8,16,32")).split(",")]
    lines = []
    p = lines.append
    cfg = _cfg(size)
    dev_name = torch.cuda.get_device_name(0) if gpu else f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores (2 torch threads)"
    p(f"## VGGT model benchmark ({'GPU, full VGGT-1B/SAIL shape' if gpu else 'CPU, reduced config'})")
    p("")
    p(f"Device: {dev_name}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
      f"load average at start {os.getloadavg()[0]:.1f} (shared machine: times are the minimum of 2-3 runs).")
    p(f"Config: embed_dim {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}, DINO depth {cfg.dino_depth}, "
      f"DPT features {cfg.dpt_features}; random weights (timing only). Command: "
      f"`.venv/bin/python benchmarks/bench_model.py{' --device ' + args.device if gpu else ''}"
      f"{' --quick' if args.quick else ''}{' --frames ' + args.frames if args.frames else ''}`.")
    p("Peak memory: " + ("torch.cuda.max_memory_allocated over the call." if gpu else
                         "growth of the process max RSS during the timed call (0 = below the warm-up's high-water mark)."))
    p("")
    p(f"### Window forward (aggregator + camera/depth/point heads) vs frames at {hw[0]}x{hw[1]}")
    p("")
    p("| frames | time (s) | s / frame | peak (MB) |")
    p("|---:|---:|---:|---:|")
    for n in frames:
        r = run_one({"kind": "window", "size": size, "device": args.device, "hw": hw, "frames": n})
        p(f"| {n} | {r['time_s']:.3f} | {r['time_s'] / n:.3f} | {r['peak_mb']:.0f} |")
        print(lines[-1], flush=True)
    p("")
    res_list = [(294, 518), (392, 518), (518, 518)] if gpu else [(70, 98), (126, 168), (182, 252), (252, 336)]
    if args.quick:
        res_list = res_list[:2]
    p("### Window forward vs resolution (4 frames)")
    p("")
    p("| H x W | tokens / frame | time (s) | peak (MB) |")
    p("|---|---:|---:|---:|")
    for (h, w) in res_list:
        r = run_one({"kind": "window", "size": size, "device": args.device, "hw": (h, w), "frames": 4})
        p(f"| {h}x{w} | {5 + (h // 14) * (w // 14)} | {r['time_s']:.3f} | {r['peak_mb']:.0f} |")
        print(lines[-1], flush=True)
    p("")
    p(f"### Localizing one frame against 16 anchors vs re-running the window with it (17 frames), {hw[0]}x{hw[1]}")
    p("")
    p("| method | time (s) | peak (MB) | scene memory (MB) |")
    p("|---|---:|---:|---:|")
    for tokens in (("all",) if args.quick else ("all", 32)):
        r = run_one({"kind": "localize", "size": size, "device": args.device, "hw": hw, "frames": 16,
                     "tokens": tokens, "reps": 3})
        p(f"| query pass (tokens_per_anchor={tokens}, depth head on, points off) | {r['time_s']:.3f} | "
          f"{r['peak_mb']:.0f} | {r['memory_mb']:.1f} |")
        print(lines[-1], flush=True)
    r = run_one({"kind": "window", "size": size, "device": args.device, "hw": hw, "frames": 17})
    p(f"| re-run window of 17 frames | {r['time_s']:.3f} | {r['peak_mb']:.0f} | - |")
    print(lines[-1], flush=True)
    p("")
    for sz, shw in ((size, hw), ("full", (294, 518))):
        c = _cfg(sz)
        p(f"### Scene memory per anchor vs tokens kept ({'full VGGT-1B/SAIL shape' if sz == 'full' else 'this config'}, "
          f"{shw[0]}x{shw[1]}, {c.depth} layers, C={c.embed_dim})")
        p("")
        p("| tokens_per_anchor | kept incl. 5 special | storage | MB per anchor |")
        p("|---|---:|---|---:|")
        for tokens, per_tok, name, mb in memory_per_anchor_table(shw, sz):
            p(f"| {tokens} | {per_tok} | {name} | {mb:.2f} |")
        p("")
        if sz == "full":
            break
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / ("model_gpu.md" if gpu else "model_cpu.md")
    emit(lines, out)


if __name__ == "__main__":
    main()

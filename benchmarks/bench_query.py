"""Does the SAIL-Recon query pass cost what it promises inside the engine's backend?

Per-frame localization against a 16-anchor scene memory (``VGGTBackend.localize``: preprocessing, query
aggregator over [cached anchor K/V ; own tokens], anchor-aware camera head, optional depth head, numpy
outputs) vs re-running the window with that frame added (``VGGTBackend.reconstruct_window`` over 17
frames: anchor pass + camera/depth/point heads). Target (issue "Anchors and localization"): a query costs
at most 1/8 of the re-run.

Model: the reduced CPU config of benchmarks/bench_model.py (embed_dim 256, 8 layers, random weights -
timing only) at 126x168 input (``image_width`` 168), frames from data/sample/woodbox_orbit.mcap. Each
torch thread count runs in its own process; repetitions of the two methods are interleaved so that load
changes of the shared machine hit both alike; the table gives median and minimum.

    .venv/bin/python benchmarks/bench_query.py            # writes benchmarks/results/query_cpu.md
    python benchmarks/bench_query.py --device cuda        # full VGGT-1B/SAIL shape at 518 px, bf16 autocast,
                                                          # 300 tokens per anchor -> results/query_gpu.md
                                                          # (GPU path not yet run: no GPU so far)
(without the ``mcap`` package, e.g. on a bare GPU machine, random 480x360 images stand in for the bag.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from report import emit  # noqa: E402  (benchmarks/report.py)
sys.path.insert(0, str(ROOT / "benchmarks"))


def _frames(n: int):
    from selfi_ros.engine.types import Frame

    import importlib.util

    if importlib.util.find_spec("mcap") is None:
        import numpy as np

        rng = np.random.default_rng(0)
        return [Frame(stamp_ns=(i + 1) * 200_000_000, image=rng.integers(0, 255, (360, 480, 3), dtype=np.uint8),
                      index=i) for i in range(n)]
    from selfi_ros.ros import conversions as cv
    from selfi_ros.ros.bag import read_messages

    out = []
    for i, m in enumerate(read_messages(str(ROOT / "data" / "sample" / "woodbox_orbit.mcap"),
                                        topics=["/camera/image_raw/compressed"])):
        if len(out) == n:
            break
        out.append(Frame(stamp_ns=cv.stamp_to_ns(m.message.header.stamp), image=cv.compressed_to_rgb8(m.message),
                         index=i))
    return out


def worker(threads: int, reps: int, width: int, device: str = "cpu", size: str = "small",
           tokens="all") -> dict:
    """All measurements for one torch thread count (own process)."""
    import torch

    from bench_model import _cfg
    from selfi_ros.backends.vggt import VGGTBackend
    from selfi_ros.model.loading import load_model

    torch.set_num_threads(threads)
    b = VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=width, device=device,
                    tokens_per_anchor=0 if tokens == "all" else int(tokens))
    b.model = load_model(None, config=_cfg(size), random_weights=True, device=torch.device(device))
    frames = _frames(25)
    anchors, query, batch = frames[:16], frames[16], frames[17:25]

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    b.reconstruct_window(0, anchors)  # warm-up, and the scene memory the queries use
    mem = b.memory
    b.localize([query])
    res = {k: [] for k in ("window17", "query_depth", "query_camera", "query_batch8_per_frame")}
    for _ in range(reps):
        res["window17"].append(timed(lambda: b.reconstruct_window(1, anchors + [query])))
        b._memory = mem  # localize against the 16-anchor memory, not the 17-frame one
        b.localize_depth = True
        res["query_depth"].append(timed(lambda: b.localize([query])))
        b.localize_depth = False
        res["query_camera"].append(timed(lambda: b.localize([query])))
        b.localize_depth = True
        res["query_batch8_per_frame"].append(timed(lambda: b.localize(batch)) / len(batch))
    out = {"threads": threads, "memory_mb": mem.nbytes / 2**20, "times": res,
           "hw": list(mem.image_size_hw), "load": os.getloadavg()[0]}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
        out["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--width", type=int, default=None, help="input width (default 168 CPU, 518 GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tokens", default=None, help="tokens_per_anchor (default: all on CPU, 300 on GPU)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    size = "full" if gpu else "small"
    width = args.width or (518 if gpu else 168)
    tokens = args.tokens or ("300" if gpu else "all")
    tokens = tokens if tokens == "all" else int(tokens)
    out_path = args.out or str(ROOT / "benchmarks" / "results" / ("query_gpu.md" if gpu else "query_cpu.md"))
    if args.one:
        print(json.dumps(worker(int(args.one), args.reps, width, args.device, size, tokens)))
        return
    import torch

    rows = []
    load0 = os.getloadavg()[0]
    for th in [int(t) for t in args.threads.split(",")]:
        r = subprocess.run([sys.executable, __file__, "--one", str(th), "--reps", str(args.reps), "--width",
                            str(width), "--device", args.device, "--tokens", str(tokens)],
                           capture_output=True, text=True, cwd=ROOT)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if not line:
            raise RuntimeError(r.stderr[-3000:])
        rows.append(json.loads(line[-1]))
        print(rows[-1], flush=True)
    if gpu:
        head = (f"## Query pass vs re-running the window (GPU {rows[0].get('gpu')}, full VGGT-1B/SAIL-Recon shape, "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
        model_txt = (f"Model: VGGTConfig.sail() (1.2 B-parameter VGGT + 24 reloc blocks), RANDOM WEIGHTS (timing only), "
                     f"official bf16 autocast; peak GPU memory {rows[0].get('peak_gb', float('nan')):.1f} GiB; ")
        cmd = f"python benchmarks/bench_query.py --device {args.device} --threads {args.threads} --reps {args.reps}"
    else:
        head = f"## Query pass vs re-running the window (CPU, reduced config, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
        model_txt = "Model: bench_model.py's reduced config (embed_dim 256, 8 layers), RANDOM WEIGHTS (timing only); "
        cmd = f".venv/bin/python benchmarks/bench_query.py --threads {args.threads} --reps {args.reps}"
    L = [head,
         "",
         f"Command: `{cmd}`; "
         f"torch {torch.__version__}; {os.cpu_count()} CPU cores (load average {load0:.1f} at start). "
         + model_txt +
         f"input {rows[0]['hw'][0]}x{rows[0]['hw'][1]} from 480x360 frames; "
         f"scene memory of 16 anchors, tokens_per_anchor {tokens}: {rows[0]['memory_mb']:.1f} MB. "
         "Through `VGGTBackend` (preprocessing and numpy outputs included). Times in s, median / min of the "
         "interleaved repetitions; ratio = re-run / query (target >= 8).",
         "",
         "| torch threads | re-run window, 17 frames | query, camera + depth | ratio | query, camera only | ratio | query in a batch of 8, per frame | ratio |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = r["times"]
        med = {k: statistics.median(v) for k, v in t.items()}
        mn = {k: min(v) for k, v in t.items()}
        cells = [f"{med['window17']:.3f} / {mn['window17']:.3f}"]
        for k in ("query_depth", "query_camera", "query_batch8_per_frame"):
            cells += [f"{med[k]:.3f} / {mn[k]:.3f}", f"{med['window17'] / med[k]:.1f} / {mn['window17'] / mn[k]:.1f}"]
        L.append(f"| {r['threads']} | " + " | ".join(cells) + " |")
    out = Path(out_path)
    emit(L, out)


if __name__ == "__main__":
    main()

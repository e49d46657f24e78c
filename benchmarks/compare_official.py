"""Compare our VGGT implementation with the OFFICIAL one (facebookresearch/vggt): numerics, time, memory.

The official code is NOT part of this repository: pass ``--official PATH`` pointing at a user's checkout
of https://github.com/facebookresearch/vggt (the directory that contains the ``vggt`` package); it is
imported from there at run time. The track head is not compared (both sides are built without it).

What it does:

1. Draws ONE set of random weights, perturbed so that every branch matters: LayerScale gammas
   U(0.1, 0.6), camera/register/cls tokens and pos_embed N(0, 0.5^2), random biases N(0, 0.1^2),
   LayerNorm affines 1 + N(0, 0.1^2), every other weight N(0, 1/fan_in), and the last DPT conv x``--out-gain``.
   Parameter names are identical by design, so the same state dict loads strictly into both models.
2. ``numerics``: runs the same fp32 input through both models (CPU, no autocast, TF32 off) and reports the
   max abs difference (and the max abs difference relative to max|official|) of pose_enc, pose_enc_list,
   depth, depth_conf, world_points, world_points_conf.
3. ``sweep``: time and peak memory of one forward for each frame count, each model in its OWN fresh
   subprocess (CPU: peak RSS growth over the forward, measured with /proc/self/clear_refs + VmHWM; CUDA:
   torch.cuda.max_memory_allocated growth), and the same peak including the weights ("with weights").
   Ours and official alternate to share machine noise.

4. ``sail`` (``--official`` = a checkout of HKUST-SAIL/sail-recon, the directory holding ``sailrecon``):
   SAIL-Recon anchor pass (``tmp_forward``) + query pass in the deterministic all-tokens setting
   (``fix_rank`` = number of patch tokens, HKUST-SAIL/sail-recon
   ``sailrecon/models/sail_recon.py`` ``tmp_forward``) against our ``run_anchor_pass`` / ``query_pass``: max abs difference
   of the query pose_enc, depth, depth_conf, point map, point conf and camera tokens. The official pass
   caches the anchor keys in a random order, so its own runs differ at the 1e-6 relative level.

Sizes: ``--size full`` is VGGT-1B (1.26 B parameters, ~5 GB fp32 per model); ``--size reduced`` is the
same architecture at embed_dim 384 (DINOv2 ViT-S/14 with registers, 12 blocks), aggregator depth 8 (6 heads
of 64), camera trunk 2 blocks, DPT features 128 - built from the official classes' own constructor
arguments (the official ``VGGT`` class fixes ViT-L, so its aggregator/heads are constructed directly and
the official ``VGGT.forward`` is used unchanged).

Examples::

    .venv/bin/python benchmarks/compare_official.py --official /path/to/vggt numerics --size full --frames 2 --hw 126 168
    .venv/bin/python benchmarks/compare_official.py --official /path/to/vggt sweep --size reduced --frames 1 2 4 8 16 --hw 126 168
    .venv/bin/python benchmarks/compare_official.py --official /path/to/sail-recon sail --size full --anchors 3 --queries 2 --hw 126 182

RANDOM WEIGHTS: every output here is meaningless as geometry; this is a numerical-equivalence and cost check.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUTPUT_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")

# reduced shape: (our VGGTConfig kwargs, official constructor kwargs)
REDUCED = dict(embed_dim=384, depth=8, num_heads=6, dino_depth=12, dino_num_heads=6, enable_track=False,
               dpt_layers=(1, 3, 5, 7), dpt_features=128, dpt_out_channels=(96, 192, 384, 384),
               camera_trunk_depth=2, camera_num_heads=12)


def our_config(size: str, sail: bool = False):
    from selfi_ros.model.config import VGGTConfig

    cfg = VGGTConfig(enable_track=False) if size == "full" else VGGTConfig(**REDUCED)
    return cfg.with_(sail_reloc=True) if sail else cfg


def build_official(official: str, size: str, device: str = "cpu"):
    """The official model (imported from ``official``) at the given size, eval mode, random init."""
    import torch
    from torch import nn

    if official not in sys.path:
        sys.path.insert(0, official)
    from vggt.models.vggt import VGGT  # noqa: E402  (the user's official checkout)

    with torch.device(device):
        if size == "full":
            return VGGT(enable_track=False).eval()
        from vggt.heads.camera_head import CameraHead
        from vggt.heads.dpt_head import DPTHead
        from vggt.models.aggregator import Aggregator

        r = REDUCED
        m = VGGT.__new__(VGGT)
        nn.Module.__init__(m)
        C = r["embed_dim"]
        m.aggregator = Aggregator(img_size=518, patch_size=14, embed_dim=C, depth=r["depth"],
                                  num_heads=r["num_heads"], patch_embed="dinov2_vits14_reg")
        m.camera_head = CameraHead(dim_in=2 * C, trunk_depth=r["camera_trunk_depth"],
                                   num_heads=r["camera_num_heads"])
        kw = dict(dim_in=2 * C, features=r["dpt_features"], out_channels=list(r["dpt_out_channels"]),
                  intermediate_layer_idx=list(r["dpt_layers"]))
        m.point_head = DPTHead(output_dim=4, activation="inv_log", conf_activation="expp1", **kw)
        m.depth_head = DPTHead(output_dim=2, activation="exp", conf_activation="expp1", **kw)
        m.track_head = None
        return m.eval()


def build_official_sail(official_sail: str, size: str):
    """Official SAIL-Recon (``SailRecon(kv_cache=True)``, imported from ``official_sail``), eval mode."""
    from torch import nn

    if official_sail not in sys.path:
        sys.path.insert(0, official_sail)
    from sailrecon.models.sail_recon import SailRecon  # noqa: E402  (the user's official checkout)

    if size == "full":
        m = SailRecon(kv_cache=True)
    else:
        from sailrecon.heads.camera_head import CameraHead
        from sailrecon.heads.dpt_head import DPTHead
        from sailrecon.models.aggregator import Aggregator

        r = REDUCED
        C = r["embed_dim"]
        m = SailRecon.__new__(SailRecon)
        nn.Module.__init__(m)
        m.aggregator = Aggregator(img_size=518, patch_size=14, embed_dim=C, depth=r["depth"], num_heads=r["num_heads"],
                                  patch_embed="dinov2_vits14_reg", intermediate_layer_idx=list(r["dpt_layers"]),
                                  kv_cache=True)
        m.camera_head = CameraHead(dim_in=2 * C, trunk_depth=r["camera_trunk_depth"], num_heads=r["camera_num_heads"])
        kw = dict(dim_in=2 * C, features=r["dpt_features"], out_channels=list(r["dpt_out_channels"]),
                  intermediate_layer_idx=list(r["dpt_layers"]))
        m.point_head = DPTHead(output_dim=4, activation="inv_log", conf_activation="expp1", **kw)
        m.depth_head = DPTHead(output_dim=2, activation="exp", conf_activation="expp1", **kw)
        m.cam_token_last_layer = None
        m.need_re_forward = False
    return m.eval()


def sail_outputs(which: str, model, anchors, queries) -> Dict[str, "torch.Tensor"]:
    """Anchor pass then query pass in the deterministic all-tokens setting (HKUST-SAIL/sail-recon
    ``tmp_forward`` with ``fix_rank`` = all patch tokens).

    Official: ``tmp_forward(anchors, fix_rank=N_p)`` then the network steps of ``reloc`` (its pose
    conversion and NumPy unprojection are not compared): ``aggregator.forward_with_cache``, camera head
    with the stored anchor camera tokens, point and depth heads. Ours: ``anchor_pass`` / ``query_pass``.
    """
    H, W = queries.shape[-2:]
    n_p = (H // 14) * (W // 14)
    if which == "official":
        model.tmp_forward(anchors, fix_rank=n_p)
        q = queries[None]
        feats, psi = model.aggregator.forward_with_cache(q, fix_rank=n_p)
        cams = model.camera_head(feats, model.cam_token_last_layer)
        pts, pts_conf = model.point_head(feats, images=q, patch_start_idx=psi)
        dep, dep_conf = model.depth_head(feats, images=q, patch_start_idx=psi)
        return {"pose_enc": cams[-1][0], "depth": dep[0, ..., 0], "depth_conf": dep_conf[0],
                "world_points": pts[0], "world_points_conf": pts_conf[0],
                "camera_tokens": feats[-1][0, :, 0]}
    from selfi_ros.model.scene_memory import anchor_pass, query_pass

    # the anchor pass alone (no heads over the anchors, like the official tmp_forward)
    memory, _, _ = anchor_pass(model, anchors, tokens_per_anchor="all", keep_layers=[model.cfg.depth - 1])
    res = query_pass(model, memory, queries, autocast=False)
    return {"pose_enc": res.pose_enc, "depth": res.depth.reshape(queries.shape[0], H, W),
            "depth_conf": res.depth_conf, "world_points": res.points, "world_points_conf": res.points_conf,
            "camera_tokens": res.camera_tokens}


def perturbed_state_dict(size: str, seed: int = 0, out_gain: float = 1.0, sail: bool = False
                         ) -> Dict[str, "torch.Tensor"]:
    """Random weights where every branch matters (see module docstring); names = checkpoint names."""
    import torch

    from selfi_ros.model.loading import build_model

    model = build_model(our_config(size, sail), meta=True)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in model.state_dict().items():
        shape = tuple(p.shape)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gamma":
            t = torch.empty(shape).uniform_(0.1, 0.6, generator=g)
        elif leaf in ("camera_token", "register_token", "cls_token", "register_tokens", "pos_embed",
                      "camera_token_reloc", "register_token_reloc", "mask_token", "empty_pose_tokens"):
            t = torch.randn(shape, generator=g) * 0.5
        elif leaf == "bias":
            t = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1:  # LayerNorm weights
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:]) if not name.endswith("resize_layers.0.weight") and \
                not name.endswith("resize_layers.1.weight") else shape[0]
            t = torch.randn(shape, generator=g) / math.sqrt(max(fan_in, 1))
        sd[name] = t.contiguous()
    for head in ("depth_head", "point_head"):
        k = f"{head}.scratch.output_conv2.2.weight"
        if k in sd:
            sd[k] = sd[k] * out_gain
    return sd


def _input(frames: int, hw, seed: int = 1):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, frames, 3, hw[0], hw[1], generator=g)


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _load(which: str, official: str, size: str, sd_path: str, device: str, sail: bool = False):
    import torch

    sd = torch.load(sd_path, map_location="cpu")
    if which == "official":
        model = build_official_sail(official, size) if sail else build_official(official, size, device="cpu")
        model.load_state_dict(sd, strict=True, assign=True)
    else:
        from selfi_ros.model.loading import _restore_buffers, build_model

        model = build_model(our_config(size, sail), meta=True)
        model.load_state_dict(sd, strict=True, assign=True)
        _restore_buffers(model, "cpu")
    del sd
    model = model.to(device).eval()
    _release_free_heap()
    return model


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``) so that the peak-RSS growth of the
    forward is not hidden by memory freed while building the model (e.g. the official model's random
    init replaced by ``load_state_dict(assign=True)``)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _outputs(which: str, model, images) -> Dict[str, "torch.Tensor"]:
    if which == "official":
        pred = model(images)
        out = {k: pred[k] for k in OUTPUT_KEYS}
        for i, p in enumerate(pred["pose_enc_list"]):
            out[f"pose_enc_list.{i}"] = p
        return out
    res = model(images)
    out = {k: getattr(res, k) for k in OUTPUT_KEYS}
    for i, p in enumerate(res.pose_enc_list):
        out[f"pose_enc_list.{i}"] = p
    return out


def worker(spec: dict) -> dict:
    """One model, one measurement (own process). Returns timing/memory; saves outputs if asked."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = spec["device"]
    sail = bool(spec.get("sail"))
    model = _load(spec["which"], spec["official"], spec["size"], spec["sd_path"], dev, sail)
    images = _input(spec["frames"], spec["hw"]).to(dev)
    if sail:  # anchors = the first `anchors` frames, queries = the rest
        na = spec["anchors"]
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = sail_outputs(spec["which"], model, images[0, :na], images[0, na:])
            t = time.perf_counter() - t0
        torch.save({k: v.detach().cpu() for k, v in out.items()}, spec["save"])
        return {"which": spec["which"], "frames": spec["frames"], "hw": spec["hw"], "t_s": t, "peak_mb": 0.0,
                "peak_total_mb": 0.0}

    def sync():
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    _release_free_heap()
    res = {"which": spec["which"], "frames": spec["frames"], "hw": spec["hw"]}
    with torch.inference_mode():
        # first (cold) forward: peak memory
        if dev.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            res["peak_reset"] = _reset_peak()
            base = _rss_kb("VmRSS") * 1024
        sync()
        t0 = time.perf_counter()
        out = _outputs(spec["which"], model, images)
        sync()
        res["t_first_s"] = time.perf_counter() - t0
        if dev.startswith("cuda"):
            res["peak_total_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            res["peak_total_mb"] = _rss_kb("VmHWM") / 1024
        res["peak_mb"] = res["peak_total_mb"] - base / 2**20
        if spec.get("save"):
            torch.save({k: v.detach().cpu() for k, v in out.items()}, spec["save"])
        del out
        gc.collect()
        times = []
        for _ in range(spec["repeats"]):
            sync()
            t0 = time.perf_counter()
            out = _outputs(spec["which"], model, images)
            sync()
            times.append(time.perf_counter() - t0)
            del out
        res["t_s"] = min(times) if times else res["t_first_s"]
    return res


def run_worker(spec: dict) -> dict:
    p = subprocess.run([sys.executable, __file__, "--official", spec["official"], "worker", json.dumps(spec)],
                       capture_output=True, text=True, cwd=str(ROOT))
    if p.returncode != 0:
        raise RuntimeError(f"worker failed ({spec['which']}, S={spec['frames']}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def compare_outputs(ours: dict, off: dict) -> Dict[str, dict]:
    rows = {}
    for k in off:
        a, b = ours[k].double(), off[k].double()
        if a.shape != b.shape:
            rows[k] = {"shape_ours": list(a.shape), "shape_official": list(b.shape)}
            continue
        d = (a - b).abs().max().item()
        scale = b.abs().max().item()
        rows[k] = {"max_abs_diff": d, "max_abs_official": scale, "rel": d / max(scale, 1e-30),
                   "shape": list(a.shape)}
    return rows


def _write_sd(size: str, seed: int, out_gain: float, sail: bool = False) -> str:
    import torch

    tag = "sail_" if sail else ""
    path = os.path.join(tempfile.gettempdir(), f"compare_official_{tag}{size}_{seed}_{out_gain}.pt")
    if not os.path.exists(path):
        torch.save(perturbed_state_dict(size, seed, out_gain, sail), path)
    return path


def run_sail(args, official: str) -> int:
    import torch

    sd_path = _write_sd(args.size, args.seed, 1.0, sail=True)
    S = args.anchors + args.queries
    outs, res = {}, {}
    for which in ("official", "ours"):
        spec = dict(official=official, size=args.size, sd_path=sd_path, hw=list(args.hw), threads=args.threads,
                    device="cpu", repeats=0, which=which, frames=S, sail=True, anchors=args.anchors,
                    save=os.path.join(tempfile.gettempdir(), f"compare_official_sail_out_{which}.pt"))
        res[which] = run_worker(spec)
        outs[which] = torch.load(spec["save"])
    diffs = compare_outputs(outs["ours"], outs["official"])
    print(f"# SAIL-Recon size={args.size} anchors={args.anchors} queries={args.queries} hw={args.hw} "
          f"(all tokens kept)")
    for k, v in diffs.items():
        print(f"{k:22s} " + (f"max|diff|={v['max_abs_diff']:.3e}  max|official|={v['max_abs_official']:.3e}"
                             if "max_abs_diff" in v else f"SHAPE MISMATCH {v}"))
    print(f"time ours {res['ours']['t_s']:.2f}s official {res['official']['t_s']:.2f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({"diffs": diffs, "ours": res["ours"], "official": res["official"]},
                                              indent=1))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", required=True, help="path to a checkout of facebookresearch/vggt")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("numerics", "sweep"):
        s = sub.add_parser(name)
        s.add_argument("--size", choices=("full", "reduced"), default="reduced")
        s.add_argument("--frames", type=int, nargs="+", default=[2] if name == "numerics" else [1, 2, 4, 8, 16])
        s.add_argument("--hw", type=int, nargs=2, default=[126, 168])
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--device", default="cpu")
        s.add_argument("--repeats", type=int, default=0 if name == "numerics" else 1)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--out-gain", type=float, default=1.0, help="scale of the last DPT conv weights")
        s.add_argument("--json", default=None, help="write the result rows here")
    sl = sub.add_parser("sail", help="SAIL-Recon anchor + query pass (needs --official pointing at a "
                                     "checkout of HKUST-SAIL/sail-recon, the directory holding `sailrecon`)")
    sl.add_argument("--size", choices=("full", "reduced"), default="reduced")
    sl.add_argument("--anchors", type=int, default=3)
    sl.add_argument("--queries", type=int, default=2)
    sl.add_argument("--hw", type=int, nargs=2, default=[126, 182])
    sl.add_argument("--threads", type=int, default=2)
    sl.add_argument("--seed", type=int, default=0)
    sl.add_argument("--json", default=None)
    w = sub.add_parser("worker")
    w.add_argument("spec")
    args = ap.parse_args(argv)
    official = str(Path(args.official).resolve())

    if args.cmd == "worker":
        print(json.dumps(worker(json.loads(args.spec))))
        return 0

    if args.cmd == "sail":
        return run_sail(args, official)
    sd_path = _write_sd(args.size, args.seed, args.out_gain)
    base = dict(official=official, size=args.size, sd_path=sd_path, hw=list(args.hw), threads=args.threads,
                device=args.device, repeats=args.repeats)
    rows: List[dict] = []
    print(f"# {args.cmd} size={args.size} hw={args.hw} threads={args.threads} device={args.device} "
          f"torch={__import__('torch').__version__} {platform.processor() or platform.machine()}")
    for S in args.frames:
        outs = {}
        res = {}
        order = ("official", "ours") if len(rows) % 2 == 0 else ("ours", "official")
        for which in order:
            spec = dict(base, which=which, frames=S)
            if args.cmd == "numerics":
                spec["save"] = os.path.join(tempfile.gettempdir(), f"compare_official_out_{which}_{S}.pt")
            res[which] = run_worker(spec)
            if args.cmd == "numerics":
                import torch

                outs[which] = torch.load(spec["save"])
        row = {"frames": S, "ours": res["ours"], "official": res["official"],
               "time_ratio": res["ours"]["t_s"] / res["official"]["t_s"],
               "mem_ratio": res["ours"]["peak_mb"] / max(res["official"]["peak_mb"], 1e-9),
               "mem_total_ratio": res["ours"]["peak_total_mb"] / max(res["official"]["peak_total_mb"], 1e-9)}
        if args.cmd == "numerics":
            row["diffs"] = compare_outputs(outs["ours"], outs["official"])
            for k, v in row["diffs"].items():
                print(f"S={S} {k:22s} " + (f"max|diff|={v['max_abs_diff']:.3e}  max|official|={v['max_abs_official']:.3e}"
                                            if "max_abs_diff" in v else f"SHAPE MISMATCH {v}"))
        print(f"S={S} time ours {res['ours']['t_s']:.2f}s official {res['official']['t_s']:.2f}s "
              f"(ratio {row['time_ratio']:.2f}); peak ours {res['ours']['peak_mb']:.0f} MB official "
              f"{res['official']['peak_mb']:.0f} MB (ratio {row['mem_ratio']:.2f}); with weights ours "
              f"{res['ours']['peak_total_mb']:.0f} MB official {res['official']['peak_total_mb']:.0f} MB "
              f"(ratio {row['mem_total_ratio']:.2f})", flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

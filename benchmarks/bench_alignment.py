"""Benchmark of the Selfi alignment pieces on a procedurally rendered scene with exact geometry.

    .venv/bin/python benchmarks/bench_alignment.py [--steps 300] [--out benchmarks/results/alignment_cpu.md]

Scene: a textured room (floor, three walls) with two free-standing textured panels that occlude the walls,
rendered by per-pixel ray/plane intersection (numpy + cv2.remap) with exact z-depth, intrinsics and poses
(camera-from-world). Procedural textures (multi-scale noise, discs, bars) are drawn with a fixed seed.

Part 1 - correspondence accuracy (PCK at 1/3/5 px of hard-argmax matches vs ground-truth correspondences):
a FeatureAdapter on a *tiny, randomly initialised* VGGT backbone (VGGTConfig.tiny(), frozen) is trained
on CPU. Because a random backbone's own depth/poses are noise, the training correspondences come from the
renderer's ground-truth depth/poses used in place of the pseudo-GT (``pseudo_gt="given"``); the
self-supervised path (pseudo-GT from the backbone's own predictions) is run for a few steps to show it
works end to end. Evaluation is on a held-out trajectory of the same room. Baselines: the untrained
adapter and nearest neighbours on raw aggregator features (last layer; the four DPT layers concatenated),
bilinearly upsampled.

Part 2 - bundle adjustment: ground-truth poses are perturbed; points are initialised from depth with the
perturbed poses; matches between all frame pairs come from (a) ground-truth correspondences and (b) the
trained adapter's mutual-NN matches; BA error before/after is reported. Then an affine depth drift applied
to every frame's dense depth is recovered with the depth-correction fit.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfi_ros.alignment.adapter import AdapterConfig, FeatureAdapter, raw_backbone_features  # noqa: E402
from selfi_ros.alignment.bundle_adjustment import (bundle_adjust, camera_errors,  # noqa: E402
                                                   problem_from_matches, robust_bundle_adjust, rotvec_to_matrix)
from selfi_ros.alignment.depth_correction import correct_depths  # noqa: E402
from selfi_ros.alignment.loss import match_metrics, soft_argmax_matches  # noqa: E402
from selfi_ros.alignment.matching import Matches, match_features  # noqa: E402
from selfi_ros.alignment.pseudo_gt import pseudo_gt_correspondences, sample_query_pixels  # noqa: E402
from selfi_ros.alignment.train import AdapterTrainer, Clip  # noqa: E402


# ------------------------------------------------------------------------------------------ rendering
@dataclass
class Plane:
    centre: np.ndarray  # (3,) world
    e1: np.ndarray  # (3,) unit, texture x axis
    e2: np.ndarray  # (3,) unit, texture y axis
    half: tuple  # half extents along e1, e2 (world units)
    texture: np.ndarray  # (h, w, 3) uint8


def make_texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Multi-scale colour noise plus random discs and bars (uint8 RGB)."""
    tex = np.zeros((size, size, 3), np.float32)
    for s, w in ((4, 0.5), (16, 0.3), (64, 0.2)):
        n = rng.random((s, s, 3)).astype(np.float32)
        tex += w * cv2.resize(n, (size, size), interpolation=cv2.INTER_CUBIC)
    tex = np.clip(tex, 0, 1) * 255
    img = tex.astype(np.uint8).copy()
    for _ in range(40):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        p = tuple(int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.circle(img, p, int(rng.integers(3, 20)), c, -1, lineType=cv2.LINE_AA)
        else:
            q = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(img, p, q, c, int(rng.integers(1, 5)), lineType=cv2.LINE_AA)
    return img


def make_room(seed: int = 0) -> list[Plane]:
    rng = np.random.default_rng(seed)
    X, Y, Z = np.eye(3)
    P = []
    P.append(Plane(np.array([0, 1.2, 3.5]), X, Z, (3.5, 4.0), make_texture(rng)))  # floor (y down = +)
    P.append(Plane(np.array([0, -0.5, 7.0]), X, Y, (3.5, 2.0), make_texture(rng)))  # back wall
    P.append(Plane(np.array([-3.0, -0.5, 3.5]), Z, Y, (4.0, 2.0), make_texture(rng)))  # left wall
    P.append(Plane(np.array([3.0, -0.5, 3.5]), Z, Y, (4.0, 2.0), make_texture(rng)))  # right wall
    a = np.radians(25)
    P.append(Plane(np.array([-0.8, 0.3, 4.0]), np.array([np.cos(a), 0, np.sin(a)]), Y, (0.6, 0.8),
                   make_texture(rng)))
    P.append(Plane(np.array([1.0, 0.0, 5.0]), np.array([np.cos(-a), 0, np.sin(-a)]), Y, (0.5, 1.0),
                   make_texture(rng)))
    return P


def render(planes: list[Plane], E: np.ndarray, K: np.ndarray, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Render (H, W, 3) uint8 RGB and (H, W) float32 z-depth (0 = nothing) for camera-from-world E (3x4)."""
    R, t = E[:, :3], E[:, 3]
    C = -R.T @ t
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # z = 1 in camera
    d = rays @ R  # world directions (R^T r)
    depth = np.full((H, W), np.inf)
    rgb = np.zeros((H, W, 3), np.uint8)
    for pl in planes:
        n = np.cross(pl.e1, pl.e2)
        den = d @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = ((pl.centre - C) @ n) / den
        Xw = C + lam[..., None] * d
        s = (Xw - pl.centre) @ pl.e1
        q = (Xw - pl.centre) @ pl.e2
        ok = (lam > 1e-3) & (np.abs(s) <= pl.half[0]) & (np.abs(q) <= pl.half[1]) & (lam < depth)
        if not ok.any():
            continue
        h, w = pl.texture.shape[:2]
        mx = ((s + pl.half[0]) / (2 * pl.half[0]) * (w - 1)).astype(np.float32)
        my = ((q + pl.half[1]) / (2 * pl.half[1]) * (h - 1)).astype(np.float32)
        col = cv2.remap(pl.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        rgb[ok] = col[ok]
        depth[ok] = lam[ok]
    depth[~np.isfinite(depth)] = 0
    return rgb, depth.astype(np.float32)


def trajectory(n: int, variant: int = 0) -> np.ndarray:
    """(n, 3, 4) camera-from-world poses: sideways dolly with yaw/pitch wobble (variant changes the path)."""
    Es = []
    for i in range(n):
        a = i / max(n - 1, 1)
        if variant == 0:
            C = np.array([-1.0 + 2.0 * a, -0.1 * np.sin(3 * a), 0.6 * a])
            yaw, pitch = np.radians(12 * np.sin(2 * np.pi * a)), np.radians(4 * np.cos(2 * np.pi * a))
        else:
            C = np.array([0.8 - 1.6 * a, 0.15 * np.sin(2 * a), 0.3 + 0.4 * np.sin(np.pi * a)])
            yaw, pitch = np.radians(-10 * np.sin(2 * np.pi * a + 1)), np.radians(-3 + 5 * a)
        Rw = rotvec_to_matrix(np.array([[0, yaw, 0]]))[0] @ rotvec_to_matrix(np.array([[pitch, 0, 0]]))[0]
        R = Rw.T  # camera-from-world rotation
        Es.append(np.hstack([R, (-R @ C)[:, None]]))
    return np.stack(Es)


def make_sequence(planes, n, variant, H, W, K):
    E = trajectory(n, variant)
    imgs, depths = zip(*(render(planes, e, K, H, W) for e in E))
    return np.stack(imgs), np.stack(depths), E


def to_clip(imgs, depths, E, K, name="") -> Clip:
    S = len(imgs)
    return Clip(images=torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0,
                depth=torch.from_numpy(depths), extrinsics=torch.from_numpy(E).float(),
                intrinsics=torch.from_numpy(np.repeat(K[None], S, 0)).float(), name=name)


# ------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def eval_features(feature_fn, clips, num_queries=1024, seed=7):
    """Hard-argmax PCK of ``feature_fn(clip) -> (1, S, C, H, W)`` against exact correspondences."""
    g = torch.Generator().manual_seed(seed)
    hard_all, gt_all, val_all = [], [], []
    for clip in clips:
        S, _, H, W = clip.images.shape
        src = S // 2
        uv = sample_query_pixels(1, H, W, num_queries, generator=g, valid_mask=clip.depth[src][None] > 0)
        corr = pseudo_gt_correspondences(clip.depth[None], clip.extrinsics[None], clip.intrinsics[None], src, uv)
        f = feature_fn(clip)
        q = torch.nn.functional.grid_sample(
            f[:, src], torch.stack([uv[..., 0] / (W - 1) * 2 - 1, uv[..., 1] / (H - 1) * 2 - 1], -1)[:, None],
            align_corners=True)[:, :, 0].transpose(1, 2)
        _, hard = soft_argmax_matches(q, f[:, corr.tgt_index], want_hard=True, use_checkpoint=False)
        hard_all.append(hard.reshape(-1, 2)); gt_all.append(corr.tgt_uv.reshape(-1, 2))
        val_all.append(corr.valid.reshape(-1))
    m = match_metrics(None, torch.cat(hard_all), torch.cat(gt_all), torch.cat(val_all))
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--clip-len", type=int, default=7)
    ap.add_argument("--num-queries", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--height", type=int, default=126)
    ap.add_argument("--width", type=int, default=168)
    ap.add_argument("--train-frames", type=int, default=40)
    ap.add_argument("--image-skip", action="store_true", help="adapter with the optional RGB skip encoder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/alignment_cpu.md")
    ap.add_argument("--json", default=None, help="also write raw numbers here")
    ap.add_argument("--save-adapter", default=None, help="save the trained adapter (safetensors) here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    H, W = args.height, args.width
    K = np.array([[0.9 * W, 0, (W - 1) / 2], [0, 0.9 * W, (H - 1) / 2], [0, 0, 1]])
    t0 = time.time()
    planes = make_room(0)
    tr_imgs, tr_depth, tr_E = make_sequence(planes, args.train_frames, 0, H, W, K)
    va_imgs, va_depth, va_E = make_sequence(planes, 2 * args.clip_len, 1, H, W, K)
    t_render = time.time() - t0
    L = args.clip_len
    train_clips = [to_clip(tr_imgs[s:s + L], tr_depth[s:s + L], tr_E[s:s + L], K, f"train@{s}")
                   for s in range(0, len(tr_imgs) - L + 1)]
    val_clips = [to_clip(va_imgs[s:s + L], va_depth[s:s + L], va_E[s:s + L], K, f"val@{s}")
                 for s in range(0, len(va_imgs) - L + 1, L)]

    from selfi_ros.model.config import VGGTConfig
    from selfi_ros.model.loading import load_model

    vcfg = VGGTConfig.tiny()
    print("NOTE: tiny RANDOM-WEIGHT backbone (plumbing-scale measurement); training pseudo-GT = rendered "
          "ground-truth geometry", file=sys.stderr)
    backbone = load_model(None, config=vcfg, random_weights=True, seed=0)
    adapter = FeatureAdapter(AdapterConfig.for_backbone(vcfg, image_skip=args.image_skip))
    trainer = AdapterTrainer(backbone, adapter, pseudo_gt="given", num_queries=args.num_queries, lr=args.lr,
                             seed=0, chunk=512)

    def adapter_fn(clip):
        tok, psi, _ = trainer.backbone_pass(clip.images, need_geometry=False)
        trainer.adapter.eval()
        return trainer.adapter(tok, clip.images[None], psi)

    def raw_fn(layers):
        def f(clip):
            tok, psi, _ = trainer.backbone_pass(clip.images, need_geometry=False)
            x = clip.images[None]
            return torch.nn.functional.normalize(torch.cat(
                [raw_backbone_features(tok, x, psi, layer=i) for i in layers], dim=2), dim=2)
        return f

    def rgb_fn(clip):
        return torch.nn.functional.normalize(clip.images[None] - 0.5, dim=2)

    base = {
        "raw aggregator, last layer": eval_features(raw_fn([vcfg.depth - 1]), val_clips),
        "raw RGB pixels": eval_features(rgb_fn, val_clips),
    }
    curve = []
    m0 = eval_features(adapter_fn, val_clips)
    curve.append((0, m0, float("nan")))
    print(f"step 0: {m0.pck}", file=sys.stderr)
    rng = np.random.default_rng(0)
    t_train = time.time()
    losses = []
    for step in range(1, args.steps + 1):
        rec = trainer.train_step(train_clips[int(rng.integers(len(train_clips)))], with_metrics=False)
        losses.append(rec["loss"])
        if step % args.eval_every == 0 or step == args.steps:
            m = eval_features(adapter_fn, val_clips)
            curve.append((step, m, float(np.mean(losses[-args.eval_every:]))))
            print(f"step {step}: loss {curve[-1][2]:.1f} {m.pck} ({time.time() - t_train:.0f} s)", file=sys.stderr)
    t_train = time.time() - t_train
    if args.save_adapter:
        from selfi_ros.alignment.adapter import save_adapter
        save_adapter(trainer.adapter, args.save_adapter, {"step": args.steps, "random_backbone": "true",
                                                          "pseudo_gt": "given (rendered ground truth)"})

    # self-supervised path end to end (pseudo-GT from the backbone's own predictions) - plumbing only
    ss = AdapterTrainer(backbone, FeatureAdapter(AdapterConfig.for_backbone(vcfg)), pseudo_gt="model",
                        num_queries=256, seed=0)
    ss_recs = [ss.train_step(train_clips[i], with_metrics=True) for i in range(3)]

    # ---------------------------------------------------------------- Part 2: bundle adjustment
    ba_rows = []
    n_ba = 6
    idx = np.linspace(0, len(va_imgs) - 1, n_ba).round().astype(int)
    E_gt = va_E[idx]
    D_gt = va_depth[idx].astype(np.float64)
    Ks = np.repeat(K[None], n_ba, 0)
    prng = np.random.default_rng(1)
    E_pert = E_gt.copy()
    for c in range(1, n_ba):
        E_pert[c, :, :3] = rotvec_to_matrix(prng.normal(0, np.radians(1.5), (1, 3)))[0] @ E_gt[c, :, :3]
        E_pert[c, :, 3] = E_gt[c, :, 3] + prng.normal(0, 0.05, 3)
    clip_ba = to_clip(va_imgs[idx], va_depth[idx], E_gt, K)

    def gt_matches(i, j, n=150):
        g = torch.Generator().manual_seed(100 * i + j)
        uv = sample_query_pixels(1, H, W, n, generator=g, valid_mask=torch.from_numpy(D_gt[i] > 0)[None])
        sub = [i, j]
        c = pseudo_gt_correspondences(torch.from_numpy(D_gt[sub])[None].float(), torch.from_numpy(E_gt[sub])[None].float(),
                                      torch.from_numpy(Ks[sub])[None].float(), 0, uv)
        ok = c.valid[0, 0].numpy()
        return Matches(uv[0].numpy()[ok], c.tgt_uv[0, 0].numpy()[ok], np.ones(ok.sum(), np.float32))

    with torch.no_grad():
        feats = adapter_fn(clip_ba)[0]
    pairs = [(i, j) for i in range(n_ba) for j in range(i + 1, n_ba)]
    near = [(i, j) for (i, j) in pairs if j - i <= 2]
    match_sets = {
        "ground-truth correspondences (all 15 pairs)": {p: gt_matches(*p) for p in pairs},
        "trained adapter, mutual NN stride 4 (9 pairs with |i-j| <= 2)": {
            p: match_features(feats[p[0]], feats[p[1]], stride=4, cycle_px=1.5, ratio=0.95) for p in near},
    }
    noisy = {}
    orng = np.random.default_rng(5)
    for p_, m in match_sets["ground-truth correspondences (all 15 pairs)"].items():
        uv1 = m.uv1 + orng.normal(0, 0.5, m.uv1.shape).astype(np.float32)
        out = orng.random(len(uv1)) < 0.3
        uv1[out] = orng.uniform([0, 0], [W - 1, H - 1], (int(out.sum()), 2))
        noisy[p_] = Matches(m.uv0, uv1, m.score, m.num_candidates)
    match_sets["GT + 0.5 px noise + 30 % random outliers (all 15 pairs)"] = noisy
    settings = {  # (gate px, robust rounds)
        "GT + 0.5 px noise + 30 % random outliers (all 15 pairs)": (10.0, (8.0, 4.0, 2.0)),
        "ground-truth correspondences (all 15 pairs)": (None, None),
        "trained adapter, mutual NN stride 4 (9 pairs with |i-j| <= 2)": (10.0, (8.0, 4.0, 2.0)),
    }
    for name, ms in match_sets.items():
        # correctness of the matches vs GT projection (px)
        errs = []
        for (i, j), m in ms.items():
            gtm = pseudo_gt_correspondences(torch.from_numpy(D_gt[[i, j]])[None].float(),
                                            torch.from_numpy(E_gt[[i, j]])[None].float(),
                                            torch.from_numpy(Ks[[i, j]])[None].float(), 0,
                                            torch.from_numpy(m.uv0)[None].float())
            e = np.linalg.norm(gtm.tgt_uv[0, 0].numpy() - m.uv1, axis=1)
            errs.append(e[gtm.valid[0, 0].numpy()])
        errs = np.concatenate(errs) if errs else np.zeros(0)
        st: dict = {}
        gate, rounds = settings[name]
        prob = problem_from_matches(ms, D_gt, E_pert, Ks, max_init_reproj_px=gate, max_per_pair=150, stats=st)
        t_ba = time.time()
        if rounds is None:
            res = bundle_adjust(prob, huber_px=1.0, max_nfev=500)
            st["rejected_by_ba"] = 0
        else:
            res, keep = robust_bundle_adjust(prob, reject_px=rounds, huber_px=1.0, max_nfev=300)
            st["rejected_by_ba"] = int((~keep).sum())
        t_ba = time.time() - t_ba
        r0, tr0 = camera_errors(E_pert, E_gt)
        r1, tr1 = camera_errors(res.extrinsics, E_gt)
        ba_rows.append(dict(name=name, n_obs=res.num_observations, match_med=float(np.median(errs)) if len(errs) else float("nan"),
                            match_in3=float(np.mean(errs < 3)) if len(errs) else float("nan"),
                            rot0=float(r0[1:].mean()), rot1=float(r1[1:].mean()), t0=float(tr0[1:].mean()),
                            t1=float(tr1[1:].mean()), rms0=res.initial_rms, rms1=res.final_rms, time=t_ba, res=res,
                            prob=prob, stats=st))

    # depth drift correction on the GT-match BA result: dense depth with a per-frame affine drift
    drift = [(1.0 + 0.1 * np.sin(k), 0.05 * np.cos(k)) for k in range(n_ba)]
    D_drift = np.stack([a * D_gt[k] + b for k, (a, b) in enumerate(drift)]) * (D_gt > 0)
    # BA points: the GT-matched problem rebuilt with drifted depth (as a VGGT-like init) and re-solved
    prob_d = problem_from_matches(match_sets["ground-truth correspondences (all 15 pairs)"], D_drift, E_pert, Ks,
                                  max_per_pair=150)
    res_d = bundle_adjust(prob_d, huber_px=1.0, max_nfev=200)
    # express everything in the GT scale (BA keeps the mean camera distance of its start, not GT's)
    C_ba = -np.einsum("nji,nj->ni", res_d.extrinsics[:, :, :3], res_d.extrinsics[:, :, 3])
    C_gt = -np.einsum("nji,nj->ni", E_gt[:, :, :3], E_gt[:, :, 3])
    s = np.mean(np.linalg.norm(C_gt[1:] - C_gt[0], axis=1)) / np.mean(np.linalg.norm(C_ba[1:] - C_ba[0], axis=1))
    E_s = res_d.extrinsics.copy()
    E_s[:, :, 3] *= s
    D_corr, fits = correct_depths(D_drift, E_s, res_d.points * s, prob_d.cam_idx, prob_d.point_idx, prob_d.uv)
    mask = D_gt > 0
    rel_before = float(np.mean(np.abs(D_drift[mask] - D_gt[mask]) / D_gt[mask]))
    rel_after = float(np.mean(np.abs(D_corr[mask] - D_gt[mask]) / D_gt[mask]))

    # ---------------------------------------------------------------- report
    lines = []
    cmd = "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_alignment.py " + " ".join(sys.argv[1:])
    lines += ["# Selfi alignment on CPU: correspondence accuracy and bundle adjustment", "",
              f"Command: `{cmd.strip()}`  ",
              f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
              "Scene: procedurally textured room (floor, 3 walls, 2 occluding panels) rendered with exact "
              f"z-depth and poses at {W}x{H} px, fx = fy = {K[0, 0]:.1f}. Training: {len(tr_imgs)}-frame "
              f"trajectory, clips of {L} frames (middle = source), {args.num_queries} queries/clip, AdamW lr "
              f"{args.lr}, {args.steps} steps ({t_train:.0f} s). Evaluation: a different, held-out trajectory "
              f"through the same room, {len(val_clips)} clips, 1024 queries each, hard-argmax matches vs exact "
              "correspondences (visible points only).", "",
              "**Caveats (read first).** The backbone is `VGGTConfig.tiny()` with RANDOM weights (frozen); "
              "its own depth/poses are noise, so the training correspondences here come from the renderer's "
              "ground-truth geometry used in place of Selfi's pseudo-GT (`pseudo_gt=\"given\"`). This measures "
              "that the adapter + soft-argmax objective learn geometric matching features from a frozen "
              "backbone; it is not a measurement of Selfi on VGGT-1B.", "",
              f"Adapter parameters: tiny backbone {adapter.num_parameters():,}; full VGGT-1B default "
              f"(layers 4/11/17/23, 24 channels) {FeatureAdapter(AdapterConfig()).num_parameters():,}."
              + (" Adapter uses the optional RGB skip encoder." if args.image_skip else ""), "",
              "## 1. Correspondence accuracy (held-out trajectory)", "",
              "| features | PCK@1 | PCK@3 | PCK@5 | matches |", "|---|---|---|---|---|"]
    for name, m in base.items():
        lines.append(f"| {name} | {m.pck[1.0]:.3f} | {m.pck[3.0]:.3f} | {m.pck[5.0]:.3f} | {m.num_valid} |")
    lines.append(f"| adapter, untrained (step 0) | {m0.pck[1.0]:.3f} | {m0.pck[3.0]:.3f} | {m0.pck[5.0]:.3f} | {m0.num_valid} |")
    mf = curve[-1][1]
    lines.append(f"| **adapter, trained ({args.steps} steps)** | **{mf.pck[1.0]:.3f}** | **{mf.pck[3.0]:.3f}** | "
                 f"**{mf.pck[5.0]:.3f}** | {mf.num_valid} |")
    lines += ["", "PCK vs training step (held-out):", "", "| step | train loss (px², mean of last interval) | PCK@1 | PCK@3 | PCK@5 |",
              "|---|---|---|---|---|"]
    for st, m, lo in curve:
        lines.append(f"| {st} | {'' if lo != lo else f'{lo:.1f}'} | {m.pck[1.0]:.3f} | {m.pck[3.0]:.3f} | {m.pck[5.0]:.3f} |")
    lines += ["", "Self-supervised path (pseudo-GT from the tiny random backbone's own depth/poses/intrinsics), "
              "3 steps, run end to end: " + ", ".join(
                  f"step {r['step']}: loss {r['loss']:.3g}, valid fraction {r['valid_frac']:.3f}" for r in ss_recs)
              + ". With random weights the predicted geometry is noise, so (almost) no correspondence passes "
              "the visibility test and the adapter is not updated (counted as `empty_steps`); this is the "
              "expected plumbing-only behaviour.", ""]
    lines += ["## 2. Bundle adjustment from perturbed poses (held-out trajectory, 6 frames)", "",
              "Start: GT poses with camera 0 fixed, the others perturbed by 1.5° (per-axis σ) rotation and "
              "5 cm (per-axis σ) translation; points from the GT depth unprojected with the perturbed poses. "
              "At most 150 matches per pair (best score first). Adapter matches are also gated by their "
              "reprojection under the initial (perturbed) geometry (<= 10 px) and BA runs with outlier-rejection "
              "rounds (points with any residual > 8, 4, 2 px dropped; `robust_bundle_adjust`). Errors: mean over cameras 1-5 after scaling centres "
              "to GT (camera 0 = gauge); centre error in scene units (the room is 6 x 7 units).", "",
              "| matches | match median err (px) | within 3 px | matches given / gated / used / rejected in BA | rot err before → after (°) | "
              "centre err before → after | reproj RMS before → after (px) | BA time (s) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in ba_rows:
        lines.append(f"| {r['name']} | {r['match_med']:.2f} | {r['match_in3']:.3f} | {r['stats']['given']} / {r['stats']['gated']} / {r['stats']['kept']} / {r['stats']['rejected_by_ba']} | "
                     f"{r['rot0']:.3f} → {r['rot1']:.3f} | {r['t0']:.4f} → {r['t1']:.4f} | "
                     f"{r['rms0']:.2f} → {r['rms1']:.2f} | {r['time']:.2f} |")
    for r in ba_rows:
        verdict = "reduced" if (r["rot1"] < r["rot0"] and r["t1"] < r["t0"]) else "did NOT reduce"
        lines.append(f"- {r['name']}: BA {verdict} both rotation and centre error.")
    gt_row = ba_rows[0]
    conv = ("converges to the exact poses (final reprojection RMS {:.1e} px)".format(gt_row["rms1"])
            if gt_row["rms1"] < 0.01 else "reduces the pose error (final RMS {:.2f} px)".format(gt_row["rms1"]))
    lines += ["", f"Reading: on clean matches BA {conv}; with 30 % random outliers the rejection rounds keep "
              "most of the gain. Matches from the adapter trained here (tiny random-weight "
              "backbone, 300 CPU steps) are mostly several pixels off (see 'within 3 px'): with two-view "
              "points a wrong match that lies near its epipolar line is absorbed by moving the point, so such "
              "matches bias the poses, and the geometric gate cannot tell them apart. The pose gain needs "
              "matches at the precision of the GT rows, i.e. an adapter on a real backbone.", ""]
    lines += ["", "## 3. Depth-drift correction", "",
              "Every frame's dense depth was given an affine drift d' = a d + b (a in 0.92..1.10, b in "
              "-0.05..0.05); BA on GT matches started from these depths and the perturbed poses, then per frame "
              "a robust affine fit of BA point depths vs dense depths was applied (BA result rescaled to the "
              "GT camera spread first).", "",
              f"Mean relative depth error: before {rel_before:.4f}, after {rel_after:.4f}. Fitted (a, b) vs "
              "applied inverse: " + "; ".join(f"({f.scale:.3f}, {f.shift:.3f}) vs ({1 / a:.3f}, {-b / a:.3f})"
                                             for f, (a, b) in zip(fits, drift)) + ".", "",
              f"Render time {t_render:.1f} s; total {time.time() - t0:.0f} s."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "baselines": {k: v.as_dict() for k, v in base.items()},
            "curve": [(s, m.as_dict(), lo) for s, m, lo in curve],
            "ba": [{k: v for k, v in r.items() if k not in ("res", "prob")} for r in ba_rows],
            "depth_rel_err": [rel_before, rel_after]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``selfi-ros train-adapter``: train the Selfi feature adapter self-supervised on recorded images.

``selfi-ros train-adapter (--bag BAG | --images DIR)... --checkpoint WEIGHTS --out adapter.safetensors``

Reads image folders and MCAP bags (through :mod:`selfi_ros.ros.bag` and the node's own conversions), builds
clips at network resolution and runs :class:`selfi_ros.alignment.train.AdapterTrainer` (Selfi, Deng et al.
2025, arXiv 2512.08930). Resumable: ``<out>.state.pt`` keeps adapter, optimiser, step, sampler and RNG
states; ``--resume`` continues from it. Metrics go to ``<out>.log.jsonl`` (one JSON object per logged step).
With ``--allow-random-weights`` and no checkpoint the backbone is randomly initialised: the pseudo ground
truth is then meaningless (plumbing only) and the saved adapter says so (``random_backbone``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from selfi_ros.alignment.adapter import AdapterConfig, FeatureAdapter, save_adapter
from selfi_ros.alignment.train import AdapterTrainer, Clip, split_clips, to_network_images

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")


def load_image_folder(path: str, max_frames: Optional[int] = None) -> List[np.ndarray]:
    """Sorted images of a folder as (H, W, 3) uint8 RGB arrays. Raises FileNotFoundError if none."""
    from PIL import Image

    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) in {path}")
    files = files[:max_frames] if max_frames else files
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def load_bag_frames(path: str, topic: Optional[str] = None, max_frames: Optional[int] = None) -> List[np.ndarray]:
    """RGB frames (H, W, 3) uint8 of an MCAP bag's image topic (sensor_msgs/Image or CompressedImage), in log
    order, decoded and validated by the node's own input code (:func:`selfi_ros.apps.reconstruct.frames_from_bag`
    without CameraInfo: the adapter needs pixels only; undecodable images are skipped with a warning).

    ``topic`` None picks the first image topic. Raises ValueError when the bag has no such image topic.
    """
    from selfi_ros.apps.reconstruct import frames_from_bag
    from selfi_ros.ros.bag import bag_topics

    if topic is not None and bag_topics(path).get(topic) not in ("sensor_msgs/msg/Image",
                                                                  "sensor_msgs/msg/CompressedImage"):
        raise ValueError(f"topic {topic!r} of {path} is not an image topic (has {bag_topics(path).get(topic)!r})")
    frames = []
    for f in frames_from_bag(path, topic, use_camera_info=False):
        frames.append(f.image)
        if max_frames and len(frames) >= max_frames:
            break
    return frames


# ------------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``selfi-ros train-adapter``."""
    p.add_argument("--bag", action="append", default=[], help="MCAP bag with an image topic (repeatable)")
    p.add_argument("--images", action="append", default=[], help="folder of sorted images (repeatable)")
    p.add_argument("--topic", default=None, help="image topic in the bags (default: the first image topic)")
    p.add_argument("--checkpoint", default=None, help="VGGT weights (file, folder or HF repo id)")
    p.add_argument("--model-config", choices=("tiny", "full"), default="full",
                   help="network shape for --allow-random-weights (a checkpoint carries its own)")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="train on a RANDOMLY INITIALISED backbone when no checkpoint is given (plumbing only)")
    p.add_argument("--out", required=True, help="output adapter .safetensors")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--clip-len", type=int, default=11)
    p.add_argument("--frame-stride", type=int, default=1, help="take every k-th frame when building clips")
    p.add_argument("--image-size", type=int, default=518, help="network input width (multiple of 14)")
    p.add_argument("--max-frames", type=int, default=None, help="per source")
    p.add_argument("--num-queries", type=int, default=4096)
    p.add_argument("--temperature", type=float, default=100.0)
    p.add_argument("--alpha", type=float, default=0.05, help="relative depth-consistency threshold")
    p.add_argument("--conf-weighting", action="store_true", help="weight correspondences by depth confidence")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--out-dim", type=int, default=24, help="adapter feature channels")
    p.add_argument("--image-skip", action="store_true", help="adapter with an RGB skip encoder (not in Selfi)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--no-amp", action="store_true", help="disable bf16/fp16 autocast on GPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=1024, help="queries per similarity-volume chunk")
    p.add_argument("--save-every", type=int, default=200, help="write the resumable state every N steps")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--resume", action="store_true", help="continue from <out>.state.pt if it exists")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def _load_sources(args) -> List[List[np.ndarray]]:
    seqs = []
    for d in args.images:
        seqs.append(load_image_folder(d, args.max_frames))
    for b in args.bag:
        seqs.append(load_bag_frames(b, args.topic, args.max_frames))
    if not seqs:
        raise SystemExit("train-adapter: give at least one --images DIR or --bag BAG")
    return [s[:: max(1, args.frame_stride)] for s in seqs]


def build_backbone(args):
    """The frozen VGGT from --checkpoint, or a loudly-flagged random one with --allow-random-weights."""
    from selfi_ros.model.config import VGGTConfig
    from selfi_ros.model.loading import load_model

    if args.checkpoint:
        return load_model(args.checkpoint)
    if not args.allow_random_weights:
        raise SystemExit("train-adapter: --checkpoint is required (or --allow-random-weights for plumbing)")
    cfg = VGGTConfig.tiny() if args.model_config == "tiny" else VGGTConfig()
    msg = ("RANDOM WEIGHTS: the backbone is randomly initialised, its depth/poses are noise and the "
           "pseudo-ground-truth is meaningless. The adapter trained here is for plumbing tests only.")
    log.warning(msg)
    print("WARNING: " + msg, file=sys.stderr)
    return load_model(None, config=cfg, random_weights=True, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``selfi-ros train-adapter``; returns a process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tqdm import tqdm

    dev = args.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev)
    backbone = build_backbone(args)
    patch = backbone.cfg.patch_size
    if args.image_size % patch:
        raise SystemExit(f"--image-size {args.image_size} must be a multiple of {patch}")
    seqs = _load_sources(args)
    train_clips: List[tuple] = []  # (seq index, start)
    val_clips: List[Clip] = []
    images = [to_network_images(s, args.image_size, patch) for s in seqs]
    clip_len = args.clip_len
    for k, imgs in enumerate(images):
        tr, va = split_clips(len(imgs), clip_len)
        train_clips += [(k, s) for s in tr]
        if va is not None:
            val_clips.append(Clip(imgs[va.start : va.stop], name=f"val{k}"))
    if not val_clips:
        log.warning("sequences too short for a held-out clip: validation uses the first training clip")
        k, s = train_clips[0]
        val_clips.append(Clip(images[k][s : s + clip_len], name="val-from-train"))

    adapter = FeatureAdapter(AdapterConfig.for_backbone(backbone.cfg, out_dim=args.out_dim,
                                                        image_skip=args.image_skip))
    log.info("adapter: %d parameters (%s)", adapter.num_parameters(), adapter.cfg.to_json())
    trainer = AdapterTrainer(backbone, adapter, pseudo_gt="model", num_queries=args.num_queries,
                             temperature=args.temperature, alpha=args.alpha, conf_weighting=args.conf_weighting,
                             lr=args.lr, weight_decay=args.weight_decay, device=device, amp=not args.no_amp,
                             seed=args.seed, chunk=args.chunk)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = Path(str(out) + ".state.pt")
    log_path = Path(str(out) + ".log.jsonl")
    if args.resume and state_path.is_file():
        trainer.load_state(state_path)
        log.info("resumed from %s at step %d", state_path, trainer.step)
    elif args.resume:
        log.info("no state at %s: starting from scratch", state_path)

    def save_all():
        trainer.save_state(state_path)
        save_adapter(adapter, out, {"step": trainer.step, "random_backbone": str(trainer.random_backbone).lower(),
                                    "pseudo_gt": "model", "checkpoint": args.checkpoint or "",
                                    "image_size": args.image_size, "clip_len": clip_len})

    bar = tqdm(total=args.steps, initial=min(trainer.step, args.steps), disable=args.no_progress,
               desc="train-adapter" + (" [RANDOM BACKBONE]" if trainer.random_backbone else ""))
    t0 = time.time()
    with open(log_path, "a") as logf:
        while trainer.step < args.steps:
            k, s = train_clips[int(trainer.rng.integers(len(train_clips)))]
            clip = Clip(images[k][s : s + clip_len], name=f"seq{k}@{s}")
            want = (trainer.step + 1) % args.log_every == 0 or trainer.step == 0
            rec = trainer.train_step(clip, with_metrics=want)
            if (trainer.step % args.eval_every == 0) or trainer.step == args.steps:
                m = trainer.evaluate(val_clips)
                rec.update({"val_" + k2: v for k2, v in m.as_dict().items()})
            if want or "val_num_valid" in rec:
                rec["time_s"] = round(time.time() - t0, 3)
                trainer.history.append(rec)
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                bar.set_postfix({k2: f"{v:.3g}" for k2, v in rec.items()
                                 if k2 in ("loss", "pck@3", "val_pck@3") and v == v})
            bar.update(1)
            if trainer.step % args.save_every == 0:
                save_all()
    bar.close()
    save_all()
    log.info("saved adapter to %s (state %s, log %s)", out, state_path, log_path)
    return 0

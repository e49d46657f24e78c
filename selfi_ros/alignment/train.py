"""Self-supervised training of the Selfi feature adapter (Selfi, Deng et al. 2025, arXiv 2512.08930).

The command line is :mod:`selfi_ros.apps.train_adapter`.

Recipe (Selfi): the VGGT backbone is frozen; each step takes a clip of 11 consecutive frames, uses the
middle frame as the source, computes pseudo-ground-truth correspondences to the other 10 frames from
VGGT's *own* predicted depth, intrinsics and relative poses (:mod:`.pseudo_gt`), and trains the adapter
with the soft-argmax loss over 4,096 query points (:mod:`.loss`). Optimiser AdamW; bf16 autocast for the
backbone and adapter on GPUs with compute capability >= 8 (fp16 below; fp32 on CPU); the loss itself runs
in fp32. Training is resumable: ``<out>.state.pt`` keeps adapter, optimiser, step, data-sampler and RNG
states; ``--resume`` continues from it. Metrics go to ``<out>.log.jsonl`` (one JSON object per logged step).

With ``--allow-random-weights`` and no checkpoint the backbone is randomly initialised: the pseudo-GT is
then meaningless (plumbing only) and the saved adapter says so in its metadata (``random_backbone``).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from selfi_ros.atomic import torch_save
from selfi_ros.alignment.adapter import FeatureAdapter
from selfi_ros.alignment.loss import PCK_THRESHOLDS_PX, MatchMetrics, correspondence_loss
from selfi_ros.alignment.pseudo_gt import pseudo_gt_correspondences, sample_query_pixels
from selfi_ros.model.vggt import autocast_context, autocast_dtype, autocast_off

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ data
@dataclass
class Clip:
    """A clip of S consecutive frames at network resolution.

    Attributes:
        images: (S, 3, H, W) float32 RGB in [0, 1], H and W multiples of the patch size.
        depth: optional (S, H, W) ground-truth z-depth (used instead of the model's when given and the
            trainer's ``pseudo_gt`` is "given").
        extrinsics: optional (S, 3, 4) camera-from-world ground truth.
        intrinsics: optional (S, 3, 3) ground truth K in pixels of ``images``.
        name: where it came from (for logs).
    """

    images: torch.Tensor
    depth: Optional[torch.Tensor] = None
    extrinsics: Optional[torch.Tensor] = None
    intrinsics: Optional[torch.Tensor] = None
    name: str = ""

    @property
    def has_geometry(self) -> bool:
        return self.depth is not None and self.extrinsics is not None and self.intrinsics is not None


def to_network_images(frames: Sequence[np.ndarray], width: int, patch: int = 14) -> torch.Tensor:
    """Official VGGT "crop" preprocessing to ``width`` -> (S, 3, H, W) float32 in [0, 1]."""
    from selfi_ros.model.preprocessing import preprocess_images

    imgs, _ = preprocess_images(list(frames), mode="crop", target=width, patch=patch)
    return imgs


def split_clips(num_frames: int, clip_len: int, holdout: bool = True) -> tuple[range, Optional[range]]:
    """Start indices for training clips and, when the sequence is long enough (>= 2 clips), a held-out
    range (the last ``clip_len`` frames) for validation. Clips shorter than 2 frames are impossible."""
    if num_frames < 2:
        raise ValueError(f"a sequence needs at least 2 frames, got {num_frames}")
    clip_len = min(clip_len, num_frames)
    if holdout and num_frames >= 2 * clip_len:
        return range(0, num_frames - 2 * clip_len + 1), range(num_frames - clip_len, num_frames)
    return range(0, num_frames - clip_len + 1), None


# --------------------------------------------------------------------------------------------- trainer
class AdapterTrainer:
    """Trains a :class:`FeatureAdapter` on a frozen VGGT backbone with Selfi's objective.

    Args:
        backbone: a :class:`selfi_ros.model.vggt.VGGT` (frozen here; needs camera and depth heads when
            ``pseudo_gt == "model"``).
        adapter: the adapter to train.
        pseudo_gt: "model" (Selfi: VGGT's own depth/pose/intrinsics) or "given" (the clip's ground-truth
            geometry, for measurements on synthetic data).
        num_queries: query points per clip (Selfi: 4096).
        temperature, alpha: loss temperature (100) and visibility threshold (0.05, relative).
        conf_weighting: weight correspondences by the predicted depth confidence.
        lr, weight_decay: AdamW settings.
        device: torch device; amp: use bf16/fp16 autocast on CUDA.
        seed: seeds torch, numpy and python RNGs and the query sampler.
    """

    def __init__(self, backbone, adapter: FeatureAdapter, pseudo_gt: str = "model", num_queries: int = 4096,
                 temperature: float = 100.0, alpha: float = 0.05, conf_weighting: bool = False,
                 lr: float = 1e-4, weight_decay: float = 1e-4, device: str | torch.device = "cpu",
                 amp: bool = True, seed: int = 0, chunk: int = 1024, grad_clip: float = 1.0):
        if pseudo_gt not in ("model", "given"):
            raise ValueError(f"pseudo_gt must be 'model' or 'given', got {pseudo_gt!r}")
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device).eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.adapter = adapter.to(self.device).train()
        self.pseudo_gt = pseudo_gt
        self.num_queries = num_queries
        self.temperature = temperature
        self.alpha = alpha
        self.conf_weighting = conf_weighting
        self.chunk = chunk
        self.grad_clip = grad_clip
        self.amp_dtype = autocast_dtype(self.device) if amp else None
        self.optimizer = torch.optim.AdamW(self.adapter.parameters(), lr=lr, weight_decay=weight_decay)
        self.step = 0
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.query_gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        random.seed(seed)
        self.history: List[dict] = []
        self.empty_steps = 0  # steps whose clip had no valid correspondence (no update)
        self.random_backbone = bool(getattr(backbone, "random_weights", False))

    # ---------------------------------------------------------------- backbone
    def _autocast(self):
        return autocast_context(self.amp_dtype)

    @torch.no_grad()
    def backbone_pass(self, images: torch.Tensor, need_geometry: bool):
        """Frozen backbone on one clip (S, 3, H, W).

        Returns:
            (tokens list, patch_start_idx, geometry) where geometry is None or a dict with depth
            (1, S, H, W), conf (1, S, H, W), extrinsics (1, S, 3, 4), intrinsics (1, S, 3, 3), all fp32.
        """
        from selfi_ros.model.vggt import pose_encoding_to_cameras

        bb = self.backbone
        x = images.to(self.device).unsqueeze(0)
        with self._autocast():
            tokens, psi = bb.aggregator(x)
        geo = None
        if need_geometry:
            if bb.camera_head is None or bb.depth_head is None:
                raise ValueError("self-supervised pseudo-GT needs a backbone with camera and depth heads")
            tok32 = [t.float() if t is not None else None for t in tokens]
            pose_enc = bb.camera_head(tok32)[-1]
            depth, conf = bb.depth_head(tok32, images=x.float(), patch_start_idx=psi)
            extr, intr = pose_encoding_to_cameras(pose_enc.float(), tuple(x.shape[-2:]))
            geo = dict(depth=depth[..., 0].float(), conf=conf.float(), extrinsics=extr.float(),
                       intrinsics=intr.float())
        return tokens, psi, geo

    def clip_geometry(self, clip: Clip, geo: Optional[dict]) -> dict:
        """The geometry the pseudo-GT comes from ("given": the clip's ground truth; "model": ``geo``)."""
        if self.pseudo_gt == "given":
            if not clip.has_geometry:
                raise ValueError(f"pseudo_gt='given' needs clips with depth/extrinsics/intrinsics ({clip.name})")
            return dict(depth=clip.depth[None].float().to(self.device), conf=None,
                        extrinsics=clip.extrinsics[None].float().to(self.device),
                        intrinsics=clip.intrinsics[None].float().to(self.device))
        return geo

    # ---------------------------------------------------------------- loss
    def clip_loss(self, clip: Clip, with_metrics: bool = False, generator: Optional[torch.Generator] = None,
                  src_index: Optional[int] = None):
        """Loss (and metrics) of one clip; the source is the middle frame unless given."""
        S, _, H, W = clip.images.shape
        src = S // 2 if src_index is None else src_index
        tokens, psi, geo = self.backbone_pass(clip.images, need_geometry=self.pseudo_gt == "model")
        g = self.clip_geometry(clip, geo)
        gen = generator or self.query_gen
        with torch.no_grad():
            valid_src = g["depth"][:, src] > 0
            uv = sample_query_pixels(1, H, W, self.num_queries, generator=gen, device=self.device,
                                     valid_mask=valid_src)
            corr = pseudo_gt_correspondences(g["depth"], g["extrinsics"], g["intrinsics"], src, uv, alpha=self.alpha,
                                             conf=g.get("conf"), conf_weighting=self.conf_weighting and
                                             g.get("conf") is not None)
        x = clip.images.to(self.device).unsqueeze(0)
        with self._autocast():
            feats = self.adapter(tokens, x, psi)
        with autocast_off(self.device.type):
            loss, metrics = correspondence_loss(feats.float(), corr, src, temperature=self.temperature,
                                                chunk=self.chunk, with_metrics=with_metrics)
        return loss, metrics, corr

    def train_step(self, clip: Clip, with_metrics: bool = True) -> dict:
        """One AdamW step on one clip. Returns a dict with step, loss, and metrics (if asked)."""
        self.adapter.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, metrics, corr = self.clip_loss(clip, with_metrics=with_metrics)
        if loss.requires_grad:
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.adapter.parameters(), self.grad_clip)
            self.optimizer.step()
        self.step += 1
        rec = {"step": self.step, "loss": float(loss.detach()), "valid_frac": float(corr.valid.float().mean())}
        if not bool(corr.valid.any()):
            self.empty_steps += 1
            if self.empty_steps <= 3 or self.empty_steps % 100 == 0:
                log.warning("step %d: no valid pseudo-GT correspondence in clip %s (%d such steps so far); "
                            "the adapter was not updated", self.step, clip.name, self.empty_steps)
        rec["empty_steps"] = self.empty_steps
        if metrics is not None:
            rec.update({k: v for k, v in metrics.as_dict().items()})
        return rec

    @torch.no_grad()
    def evaluate(self, clips: Sequence[Clip], seed: int = 1234) -> MatchMetrics:
        """Hard-argmax match accuracy (PCK at 1/3/5 px) on ``clips`` with fixed query points (``seed``)."""
        self.adapter.eval()
        gen = torch.Generator().manual_seed(seed)
        tot = {t: 0.0 for t in PCK_THRESHOLDS_PX}
        n, epe = 0, 0.0
        for clip in clips:
            _, m, _ = self.clip_loss(clip, with_metrics=True, generator=gen)
            if m.num_valid == 0:
                continue
            for t in tot:
                tot[t] += m.pck[t] * m.num_valid
            epe += m.epe_soft * m.num_valid
            n += m.num_valid
        self.adapter.train()
        if n == 0:
            return MatchMetrics(pck={t: float("nan") for t in tot}, num_valid=0)
        return MatchMetrics(pck={t: v / n for t, v in tot.items()}, epe_soft=epe / n, num_valid=n)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything needed to resume exactly: adapter, optimiser, step, sampler and RNG states."""
        return {
            "adapter": self.adapter.state_dict(),
            "adapter_config": self.adapter.cfg.to_json(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "np_rng": self.rng.bit_generator.state,
            "query_gen": self.query_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "py_rng": random.getstate(),
            "history": self.history,
            "empty_steps": self.empty_steps,
        }

    def load_state_dict(self, st: dict) -> None:
        """Restore :meth:`state_dict` output. Raises ValueError if the adapter config differs."""
        if st.get("adapter_config") != self.adapter.cfg.to_json():
            raise ValueError("training state was made for a different adapter config: "
                             f"{st.get('adapter_config')} vs {self.adapter.cfg.to_json()}")
        self.adapter.load_state_dict(st["adapter"], strict=True)
        self.optimizer.load_state_dict(st["optimizer"])
        self.step = int(st["step"])
        self.rng.bit_generator.state = st["np_rng"]
        self.query_gen.set_state(st["query_gen"])
        torch.set_rng_state(st["torch_rng"])
        if st.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["cuda_rng"])
        random.setstate(st["py_rng"])
        self.history = list(st.get("history", []))
        self.empty_steps = int(st.get("empty_steps", 0))

    def save_state(self, path: Path) -> None:
        torch_save(str(path), self.state_dict())

    def load_state(self, path: Path) -> None:
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))

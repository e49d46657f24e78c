"""Online adapter refinement: train the Selfi adapter in the background on the stream's keyframes while
the node is idle, and swap the new weights in only when they match better on held-out clips.

This follows the test-time self-calibration idea of LoRA3D / "Free Geometry" (per-scene fine-tuning
from the model's own predictions, minutes of compute) applied to Selfi's adapter objective
(arXiv 2512.08930): pseudo-GT from the frozen backbone's own depth/poses, soft-argmax loss.

Data: keyframes are grouped into non-overlapping clips of ``clip_len`` consecutive keyframes; every
``holdout_every``-th clip goes to a validation buffer, the others to a training buffer; both are bounded
deques (oldest dropped). A worker thread trains a *candidate* copy of the adapter whenever
:meth:`OnlineAdapterTrainer.set_idle` says the node is idle; every ``eval_every`` steps it scores the
candidate and the current adapter (hard-argmax PCK@3 on the validation clips, fixed queries) and swaps
the candidate in only if it wins by ``min_gain``. Readers take the current adapter with
:meth:`OnlineAdapterTrainer.adapter` (a reference that stays valid; swaps replace it atomically).
"""
from __future__ import annotations

import copy
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from selfi_ros.alignment.adapter import FeatureAdapter
from selfi_ros.alignment.train import AdapterTrainer, Clip

log = logging.getLogger(__name__)


@dataclass
class OnlineStats:
    """Counters of the online trainer (for status / diagnostics)."""

    steps: int = 0
    evaluations: int = 0
    swaps: int = 0
    rejected: int = 0
    current_score: float = float("nan")
    last_candidate_score: float = float("nan")
    train_clips: int = 0
    val_clips: int = 0
    dropped_clips: int = 0
    errors: int = 0


class OnlineAdapterTrainer:
    """Background trainer that improves the adapter while the node is idle.

    Args:
        backbone: frozen VGGT (shared with the inference path; only used under no_grad here).
        adapter: the adapter currently in use (never modified in place).
        clip_len: keyframes per clip (>= 2).
        max_train_clips, max_val_clips: buffer bounds.
        holdout_every: every n-th completed clip is held out for validation.
        eval_every: candidate evaluation period in training steps.
        min_gain: the candidate must beat the current PCK@3 by this much to be swapped in.
        pseudo_gt: "model" (Selfi, default) or "given" (keyframes carry geometry).
        score_fn: optional ``score_fn(adapter, clips) -> float`` replacing the default PCK@3 scorer.
        trainer_kwargs: passed to :class:`~.train.AdapterTrainer` (num_queries, lr, device, ...).
    """

    def __init__(self, backbone, adapter: FeatureAdapter, clip_len: int = 11, max_train_clips: int = 32,
                 max_val_clips: int = 4, holdout_every: int = 5, eval_every: int = 50, min_gain: float = 0.005,
                 pseudo_gt: str = "model", score_fn: Optional[Callable[[FeatureAdapter, Sequence[Clip]], float]] = None,
                 **trainer_kwargs):
        if clip_len < 2:
            raise ValueError(f"clip_len must be >= 2, got {clip_len}")
        self.clip_len = clip_len
        self.holdout_every = max(2, int(holdout_every))
        self.eval_every = max(1, int(eval_every))
        self.min_gain = float(min_gain)
        self._lock = threading.Lock()
        self._current = adapter.eval()
        self._pending: List[Clip] = []
        self._pending_frames: list = []
        self._train: deque = deque(maxlen=max_train_clips)
        self._val: deque = deque(maxlen=max_val_clips)
        self._val_version = 0
        self._scored_version = -1
        self._clips_made = 0
        self._idle = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.stats = OnlineStats()
        self._trainer = AdapterTrainer(backbone, copy.deepcopy(adapter), pseudo_gt=pseudo_gt, **trainer_kwargs)
        self._score_fn = score_fn or self._default_score
        self._rng = np.random.default_rng(trainer_kwargs.get("seed", 0))

    # ------------------------------------------------------------------ producer side
    def adapter(self) -> FeatureAdapter:
        """The adapter to use now (thread-safe; do not modify it)."""
        with self._lock:
            return self._current

    def set_idle(self, idle: bool) -> None:
        """Allow (True) or pause (False) background training; pausing takes effect after the current step."""
        (self._idle.set if idle else self._idle.clear)()

    def add_keyframe(self, image, depth=None, extrinsics=None, intrinsics=None) -> None:
        """Queue one keyframe.

        Args:
            image: (3, H, W) float tensor in [0, 1] or (H, W, 3) uint8 RGB array at network resolution
                (H, W multiples of the patch size).
            depth, extrinsics, intrinsics: optional ground-truth geometry ((H, W), (3, 4), (3, 3)) used
                only with ``pseudo_gt="given"``.
        Raises:
            ValueError: malformed image or a frame size different from the pending clip's.
        """
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"image array must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
            image = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be a (3, H, W) tensor, got {getattr(image, 'shape', type(image))}")
        p = self._trainer.backbone.cfg.patch_size
        if image.shape[1] % p or image.shape[2] % p:
            raise ValueError(f"image size {tuple(image.shape[1:])} must be a multiple of the patch size {p}")
        with self._lock:
            if self._pending_frames and self._pending_frames[0][0].shape != image.shape:
                raise ValueError(f"keyframe size {tuple(image.shape)} differs from the pending clip's "
                                 f"{tuple(self._pending_frames[0][0].shape)}")
            self._pending_frames.append((image, depth, extrinsics, intrinsics))
            if len(self._pending_frames) < self.clip_len:
                return
            frames, self._pending_frames = self._pending_frames, []
            clip = self._make_clip(frames)
            self._clips_made += 1
            target = self._val if self._clips_made % self.holdout_every == 0 else self._train
            if len(target) == target.maxlen:
                self.stats.dropped_clips += 1
            target.append(clip)
            if target is self._val:
                self._val_version += 1
            self.stats.train_clips, self.stats.val_clips = len(self._train), len(self._val)

    def _make_clip(self, frames) -> Clip:
        imgs = torch.stack([f[0] for f in frames])
        geo = [f[1:] for f in frames]
        if all(g[0] is not None and g[1] is not None and g[2] is not None for g in geo):
            t = lambda xs: torch.stack([torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in xs])  # noqa: E731
            return Clip(imgs, t([g[0] for g in geo]), t([g[1] for g in geo]), t([g[2] for g in geo]),
                        name=f"online{self._clips_made}")
        return Clip(imgs, name=f"online{self._clips_made}")

    # ------------------------------------------------------------------ worker
    def start(self) -> None:
        """Start the background worker (daemon thread)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="selfi-online-adapter", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker and wait for it (up to ``timeout`` s)."""
        self._stop.set()
        self._idle.set()  # wake it
        if self._thread is not None:
            self._thread.join(timeout)
        self._idle.clear()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._idle.wait(timeout=0.2) or self._stop.is_set():
                continue
            try:
                if not self.step():
                    self._stop.wait(0.2)
            except Exception:  # never kill the node: count and log
                self.stats.errors += 1
                log.exception("online adapter training step failed (%d errors)", self.stats.errors)
                self._stop.wait(1.0)

    def step(self) -> bool:
        """One training step on a random buffered clip (+ evaluation / swap every ``eval_every`` steps).

        Returns False when there is nothing to train on yet. Called by the worker; callable directly
        (synchronously) in tests and offline tools.
        """
        with self._lock:
            if not self._train or not self._val:
                return False
            clip = self._train[int(self._rng.integers(len(self._train)))]
        self._trainer.train_step(clip, with_metrics=False)
        self.stats.steps += 1
        if self.stats.steps % self.eval_every == 0:
            self.evaluate_and_maybe_swap()
        return True

    def _default_score(self, adapter: FeatureAdapter, clips: Sequence[Clip]) -> float:
        tr = self._trainer
        saved = tr.adapter
        tr.adapter = adapter
        try:
            m = tr.evaluate(clips, seed=4321)
        finally:
            tr.adapter = saved
            saved.train()
        return float(m.pck[3.0])

    def evaluate_and_maybe_swap(self) -> bool:
        """Score candidate vs current on the validation clips; swap if the candidate wins. Returns swapped."""
        with self._lock:
            val = list(self._val)
            version = self._val_version
            current = self._current
        if not val:
            return False
        if self._scored_version != version or not np.isfinite(self.stats.current_score):
            self.stats.current_score = self._score_fn(copy.deepcopy(current), val)
            self._scored_version = version
        cand = copy.deepcopy(self._trainer.adapter).eval()
        score = self._score_fn(cand, val)
        self.stats.evaluations += 1
        self.stats.last_candidate_score = score
        cur = self.stats.current_score
        if np.isfinite(score) and (not np.isfinite(cur) or score >= cur + self.min_gain):
            with self._lock:
                self._current = cand
            self.stats.current_score = score
            self.stats.swaps += 1
            log.info("online adapter swapped in: PCK@3 %.3f -> %.3f (step %d)", cur, score, self.stats.steps)
            return True
        self.stats.rejected += 1
        return False

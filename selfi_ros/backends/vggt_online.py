"""Online Selfi adapter training for the node: feeds the engine's windows to an
:class:`~selfi_ros.alignment.online.OnlineAdapterTrainer` and hands improved adapters to the backend.

Selfi (arXiv 2512.08930) trains its adapter on the frozen backbone's own predictions; online, the robot's
own keyframes are the data: each reconstructed window gives ``clip_len`` anchors at network resolution
(``WindowReconstruction.colors``) with the backend's dense depth, camera-from-window extrinsics and
intrinsics as pseudo ground truth (``pseudo_gt="given"``: one clip never mixes two windows' frames). The
trainer runs in its own daemon thread only while the node's worker is idle (empty queue), scores the
candidate against the current adapter on held-out clips (PCK@3) and replaces it only when it wins; the
hook then passes the new adapter to the backend (:meth:`VGGTBackend.set_adapter`, effective from the
next window) and counts the swap. No ROS imports: testable without a node.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np

from selfi_ros.engine.types import WindowReconstruction

log = logging.getLogger(__name__)


class OnlineAdapterHook:
    """Glue between the node's worker, an online trainer and a backend with an adapter.

    Args:
        backend: a backend with ``adapter``, ``model``, ``device`` and ``set_adapter`` (the vggt backend
            built with an adapter).
        clip_len, eval_every, min_gain: see :class:`~selfi_ros.alignment.online.OnlineAdapterTrainer`.
        score_fn: optional scorer replacing held-out PCK@3 (tests).
        start: start the background thread now.
        **trainer_kwargs: passed on (num_queries, lr, ...).
    Raises:
        ValueError: the backend has no adapter.
    """

    def __init__(self, backend, clip_len: int = 6, eval_every: int = 50, min_gain: float = 0.005,
                 score_fn: Optional[Callable] = None, start: bool = True, **trainer_kwargs):
        from selfi_ros.alignment.online import OnlineAdapterTrainer

        if getattr(backend, "adapter", None) is None or not hasattr(backend, "set_adapter"):
            raise ValueError("online adapter training needs the vggt backend with an adapter (parameter adapter)")
        self.backend = backend
        self.clip_len = int(clip_len)
        self.trainer = OnlineAdapterTrainer(backend.model, backend.adapter, clip_len=self.clip_len,
                                            eval_every=eval_every, min_gain=min_gain, pseudo_gt="given",
                                            score_fn=score_fn, device=backend.device, **trainer_kwargs)
        self._given = backend.adapter
        self.swaps = 0
        self.windows_fed = 0
        self.windows_skipped = 0
        if start:
            self.trainer.start()

    def feed_window(self, window: WindowReconstruction) -> bool:
        """Queue the first ``clip_len`` anchors of a window as one clip. Returns False (counted) when the
        window has fewer anchors, no depth or no colours, or a frame is refused."""
        S = window.num_frames
        if S < self.clip_len or window.depth is None or window.colors is None:
            self.windows_skipped += 1
            return False
        try:
            for i in range(self.clip_len):
                self.trainer.add_keyframe(np.ascontiguousarray(window.colors[i]), window.depth[i],
                                          window.extrinsics[i], window.intrinsics[i])
        except ValueError as e:
            self.windows_skipped += 1
            log.warning("online adapter training: window %d not used: %s", window.window_id, e)
            return False
        self.windows_fed += 1
        return True

    def set_idle(self, idle: bool) -> None:
        """The worker's queue is empty (True) or a frame is being processed (False)."""
        self.trainer.set_idle(idle)

    def poll_swap(self) -> bool:
        """Hand the trainer's current adapter to the backend when it changed (a held-out win). Returns True
        on a swap."""
        cur = self.trainer.adapter()
        if cur is self._given:
            return False
        self.backend.set_adapter(cur)
        self._given = cur
        self.swaps += 1
        st = self.trainer.stats
        log.info("online adapter training: adapter swapped in (swap %d, held-out score %.4f, step %d)",
                 self.swaps, st.current_score, st.steps)
        return True

    def values(self) -> dict:
        """Counters for /diagnostics."""
        st = self.trainer.stats
        return dict(online_swaps=self.swaps, online_steps=st.steps, online_evaluations=st.evaluations,
                    online_rejected_candidates=st.rejected, online_score=st.current_score,
                    online_train_clips=st.train_clips, online_val_clips=st.val_clips,
                    online_windows_fed=self.windows_fed, online_windows_skipped=self.windows_skipped,
                    online_errors=st.errors)

    def stop(self) -> None:
        """Stop the background thread."""
        self.trainer.stop()

"""Online Selfi adapter training inside the VGGT backend: the backend feeds its reconstructed windows to
an :class:`~selfi_ros.alignment.online.OnlineAdapterTrainer` through this hook and takes improved adapters
from it (the hook never touches the backend).

Selfi (arXiv 2512.08930) trains its adapter on the frozen backbone's own predictions; online, the robot's
own keyframes are the data: each reconstructed window gives ``clip_len`` anchors at network resolution
(``WindowReconstruction.colors``) with the backend's dense depth, camera-from-window extrinsics and
intrinsics as pseudo ground truth (``pseudo_gt="given"``: one clip never mixes two windows' frames). The
trainer runs in its own daemon thread only while the backend was last told its caller is idle
(``set_idle(True)``), scores the candidate against the current adapter on held-out clips (PCK@3) and
replaces it only when it wins; :meth:`OnlineAdapterHook.take_adapter` then hands the new adapter over once
(the backend swaps it in at its next window). No ROS imports: testable on its own.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np
import torch

from selfi_ros.engine.status import BackendStatus
from selfi_ros.engine.types import WindowReconstruction

log = logging.getLogger(__name__)


class OnlineAdapterHook:
    """Glue between a backend, an online trainer and the adapter the backend uses.

    Args:
        model: the frozen :class:`~selfi_ros.model.vggt.VGGT` backbone.
        adapter: the :class:`~selfi_ros.alignment.adapter.FeatureAdapter` in use (never modified in place).
        device: torch device of the training.
        clip_len, eval_every, min_gain: see :class:`~selfi_ros.alignment.online.OnlineAdapterTrainer`.
        score_fn: optional scorer replacing held-out PCK@3 (tests).
        start: start the background thread now.
        **trainer_kwargs: passed on (num_queries, lr, ...).
    Raises:
        ValueError: no adapter.
    """

    def __init__(self, model, adapter, device, clip_len: int = 6, eval_every: int = 50, min_gain: float = 0.005,
                 score_fn: Optional[Callable] = None, start: bool = True, **trainer_kwargs):
        from selfi_ros.alignment.online import OnlineAdapterTrainer

        if adapter is None:
            raise ValueError("online adapter training needs an adapter (option adapter)")
        self.clip_len = int(clip_len)
        self.trainer = OnlineAdapterTrainer(model, adapter, clip_len=self.clip_len, eval_every=eval_every,
                                            min_gain=min_gain, pseudo_gt="given", score_fn=score_fn,
                                            device=torch.device(device), **trainer_kwargs)
        self._given = adapter
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
        """The backend's caller is idle (True: training may run) or busy (False)."""
        self.trainer.set_idle(idle)

    def take_adapter(self):
        """The trainer's current adapter when it changed since the last call (a held-out win), else None.
        Each new adapter is handed over once (counted in ``swaps``)."""
        cur = self.trainer.adapter()
        if cur is self._given:
            return None
        self._given = cur
        self.swaps += 1
        st = self.trainer.stats
        log.info("online adapter training: new adapter (swap %d, held-out score %.4f, step %d)",
                 self.swaps, st.current_score, st.steps)
        return cur

    def fill_status(self, status: BackendStatus) -> BackendStatus:
        """Write the ``online_*`` figures into ``status`` (returned)."""
        st = self.trainer.stats
        status.online_steps = int(st.steps)
        status.online_evaluations = int(st.evaluations)
        status.online_rejected_candidates = int(st.rejected)
        status.online_score = float(st.current_score)
        status.online_train_clips = int(st.train_clips)
        status.online_val_clips = int(st.val_clips)
        status.online_windows_fed = int(self.windows_fed)
        status.online_windows_skipped = int(self.windows_skipped)
        status.online_errors = int(st.errors)
        return status

    def stop(self) -> None:
        """Stop the background thread (idempotent)."""
        self.trainer.stop()

"""Which anchors the next window attempt uses, and the fallbacks after failed windows.

A window can fail (the backend cannot reconstruct the anchors, or the result cannot be chained into the
map). The current window then stays in use and every following keyframe tries the next plan of a small
state machine, never an anchor set that already failed since the last successful window:

0. ``overlap``: the most recent previous anchors + new keyframes (:meth:`WindowPolicy.select_anchors`).
1. ``other_overlap``: shared frames other than the previous anchors of failed attempts (recently localized
   keyframes with good confidence, :meth:`WindowPolicy.select_with_other_overlap`).
2. ``fresh``: the newest keyframes only (:meth:`WindowPolicy.select_fresh`), chained through their
   localized poses (needs >= 2 of them localized with good confidence).
3. ``segment``: the newest keyframes as a new map segment, not chained (a discontinuity; its placement is
   a constant-velocity guess, :func:`selfi_ros.engine.integration.segment_transform`).

After stage 1, failed attempts alternate between 2 and 3 (a fresh window stays preferable to a
discontinuity when new keyframes make it possible again). Stages 2-3 need at least
``window_size - window_overlap`` (>= 2) keyframes since the last window, else the engine waits.
The anchors-and-localization scheme is SAIL-Recon's (official repository HKUST-SAIL/SAIL-Recon);
the fallbacks are this project's own.
"""
from __future__ import annotations

from typing import Sequence

from selfi_ros.engine.keyframes import Keyframe
from selfi_ros.engine.windows import WindowPolicy

#: stage index -> plan name
MODES = ("overlap", "other_overlap", "fresh", "segment")
#: next stage after a failed attempt of a stage
_NEXT_AFTER_FAILURE = {0: 1, 1: 2, 2: 3, 3: 2}


class WindowRecovery:
    """State of the window plans since the last successful window (see module docstring).

    Args:
        policy: the engine's window policy (window size, overlap, minimum confidence).

    Attributes:
        stage: the next plan to try (0 = no window failed since the last success).
    """

    def __init__(self, policy: WindowPolicy) -> None:
        self.policy = policy
        self.reset()

    def reset(self) -> None:
        """Back to stage 0 with no failed anchor sets (after a successful window, or an engine reset)."""
        self.stage = 0
        self._tried_sets: set = set()  # anchor sets (frozensets of stamps) that failed since the last window
        self._failed_overlap: set = set()  # previous anchors (stamps) used by failed attempts

    @property
    def recovering(self) -> bool:
        """A window failed since the last success: every keyframe tries the next plan."""
        return self.stage > 0

    def plan(self, previous: Sequence[Keyframe], candidates: Sequence[Keyframe]) -> tuple[str, list[Keyframe]]:
        """The next window attempt: ``(mode, anchors)``, or ``("", [])`` when none is possible yet.

        Args:
            previous: the current window's anchors (time order, with map poses).
            candidates: keyframes since the current window (time order).
        """
        p = self.policy
        candidates = list(candidates)
        min_fresh = max(2, p.window_size - p.overlap)
        stage = self.stage
        while stage <= 3:
            if stage == 0:
                a = p.select_anchors(previous, candidates)
            elif stage == 1:
                a = p.select_with_other_overlap(previous, candidates, self._failed_overlap)
            else:
                a = p.select_fresh(candidates)
                if len(a) < min_fresh:
                    return "", []  # wait for more keyframes
                if stage == 2 and sum(k.T_map_cam is not None and k.confidence >= p.min_confidence
                                      for k in a) < 2:
                    a = []
            if len(a) >= 2 and frozenset(k.stamp_ns for k in a) not in self._tried_sets:
                self.stage = stage
                return MODES[stage], a
            if stage == 3:
                return "", []  # the newest keyframes already failed as a segment: wait for another
            stage += 1
        return "", []

    def succeeded(self) -> None:
        """The attempt made a window: back to stage 0."""
        self.reset()

    def failed(self, anchors: Sequence[Keyframe], previous_stamps: set) -> None:
        """The attempt with ``anchors`` failed; ``previous_stamps`` are the stamps of the current window's
        anchors (those among ``anchors`` are not used as shared frames by the ``other_overlap`` plan)."""
        self._tried_sets.add(frozenset(k.stamp_ns for k in anchors))
        self._failed_overlap.update(k.stamp_ns for k in anchors if k.stamp_ns in previous_stamps)
        self.stage = _NEXT_AFTER_FAILURE[self.stage]

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

Relocalization (:class:`Relocalization`, for backends with window memories): after ``lost_after_failures``
consecutive localization failures (and every ``relocalization_interval`` failures after that) the failed
frame's global descriptor retrieves the top-k windows of the window database and the frame is localized
against each (``Backend.localize_in``); the one with the most correspondences (>= ``relocalization_min_inliers``;
a backend without correspondences: the most confident, :func:`~selfi_ros.engine.loop_closure.supported`)
becomes the window the following frames are localized against, in the same map frame: no new segment.
A camera in a known place continues against the stored window that covers its view best instead of
making a new window (revisits; the map does not grow). Only when relocalization fails too do the window
fallbacks above go on to a new segment (which a later
loop closure merges back, :mod:`selfi_ros.engine.loop_closure`). The same retrieval + ``localize_in``
localizes every frame in localization-only mode.
"""
from __future__ import annotations

import logging
import time
from typing import Optional, Sequence

import numpy as np

from selfi_ros.engine.backend import BackendError
from selfi_ros.engine.integration import predict_pose
from selfi_ros.engine.keyframes import Keyframe
from selfi_ros.engine.loop_closure import localized_pose, support, supported
from selfi_ros.engine.map_store import camera_mismatch
from selfi_ros.engine.types import Frame, LocalizationResult, PoseEstimate, PoseKind
from selfi_ros.engine.windows import WindowPolicy

log = logging.getLogger("selfi_ros.engine")

#: a stored window is revisited only when the keyframe's pose in it, placed in the map, is within this
#: fraction of the window's scene depth (camera centres) ...
REVISIT_MAX_OFFSET = 0.1
#: ... and this many degrees (viewing directions) of its pose from the current window
REVISIT_MAX_DEG = 10.0

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


class Relocalization:
    """The engine's localization steps (a base class of :class:`selfi_ros.engine.engine.Engine`, whose state
    it uses): localizing against the current window (the backend's, or a stored one being revisited),
    revisits of stored windows instead of new ones, relocalization when lost, and localization-only mode
    (see module docstring)."""

    def _backend_localize(self, frames: list[Frame]) -> list:
        """``backend.localize`` (current backend window) or ``localize_in`` of the revisited stored window."""
        if self._active_memory is not None:
            return list(self.backend.localize_in(self._active_memory, frames))
        return list(self.backend.localize(frames))

    def _localize(self, frames: list[Frame]) -> tuple[list[Optional[PoseEstimate]], list[int]]:
        """Localize frames against the current window in one backend call; failures are counted; a lost
        frame triggers relocalization (after which the rest of the batch is localized against the new
        window).

        Returns one stored pose (map units) or None per frame, and the consecutive-failure count after each.
        """
        st = self._status
        c = self.config
        t0 = time.perf_counter()
        try:
            results = self._backend_localize(frames)
        except Exception as e:  # noqa: BLE001 - BackendError or an unexpected backend crash (e.g. OOM)
            if not isinstance(e, BackendError):
                log.exception("backend.localize raised %s", type(e).__name__)
            st.backend_errors += 1
            st.last_error = f"localize: {e}"
            log.warning("localization failed: %s", e)
            results = [LocalizationResult(f.stamp_ns, f.index, None, reason=f"localize: {e}") for f in frames]
        finally:
            st.last_localize_ms = 1e3 * (time.perf_counter() - t0)
        if len(results) != len(frames):
            st.localization_failures += len(frames)
            st.last_error = f"backend returned {len(results)} localizations for {len(frames)} frames"
            return [None] * len(frames), [self._consecutive_failures] * len(frames)
        poses, failures = [], []
        for n, (fr, r) in enumerate(zip(frames, results)):
            T = localized_pose(r)
            if T is None:
                nfail = self._consecutive_failures + 1
                k = nfail - c.lost_after_failures
                got = None
                if self._active_memory is not None and nfail == 1:  # left the revisited window: the next one
                    got = self._next_revisit(fr)
                if got is None and k >= 0 and k % max(1, c.relocalization_interval) == 0:
                    got = self._relocalize(fr)
                if got is not None:
                    r, T = got
                    rest = frames[n + 1:]
                    if rest:  # the rest of the batch against the window just found
                        try:
                            again = self._backend_localize(rest)
                            if len(again) == len(rest):
                                results[n + 1:] = again  # in place: the loop sees them
                        except Exception as e:  # noqa: BLE001
                            self._map_error("localize after relocalization", e)
            if T is None:
                st.localization_failures += 1
                self._consecutive_failures += 1
                st.last_error = f"localize frame {fr.index}: " + (r.reason if isinstance(r, LocalizationResult) else
                                                                  f"not a LocalizationResult ({type(r).__name__})")
                poses.append(None)
            else:
                self._consecutive_failures = 0
                T_map = self._T_map_window.transform_pose(T)
                K = r.K if r.K is not None else fr.K
                poses.append(self._store_pose(fr, T_map, K, r.confidence, PoseKind.QUERY))
            failures.append(self._consecutive_failures)
        return poses, failures

    def _try_revisit(self, kf: Keyframe):
        """Before a new window: continue against a stored window of this map segment that localizes the
        keyframe with >= ``loop_min_inliers`` correspondences and good confidence (the most inliers wins).
        At the frontier of the map the most recent windows are not candidates (they were just left).
        Returns the keyframe's new stored pose, or None (make a window)."""
        c = self.config
        if not (self._maps_enabled and c.revisit_windows) or len(self.db) < 2 or self._window_id not in self.graph.nodes:
            return None
        desc = self._descriptor(kf.frame)
        if desc is None:
            return None
        comp = self.graph.components()
        here = comp.get(self._window_id)
        exclude = {w for w in self.graph.nodes if comp.get(w) != here}
        if self._active_memory is None:
            newest = max(self.graph.nodes)
            exclude |= {w for w in self.graph.nodes if w > newest - c.retrieval_exclude_recent} | {self._window_id}
        best = None
        for wid, _sim in self.db.retrieve(desc, c.retrieval_top_k, exclude, c.retrieval_min_similarity):
            r = self._localize_in(wid, [kf.frame])[0]
            T = localized_pose(r)
            if T is None or not supported(r, c.loop_min_inliers, 0.0) or not r.confidence >= c.min_localization_confidence:
                continue
            if not self._agrees_with_map(wid, T, kf.T_map_cam):
                continue
            if best is None or support(r) > support(best[1]):
                best = (wid, r, T)
        if best is None:
            return None
        wid, r, T = best
        log.info("keyframe %d revisits window %d (%d inliers)", kf.frame.index, wid, r.inliers)
        if self._active_memory is None:  # leaving the frontier: keep measuring the loop to it
            self._frontier, self._frontier_misses = self._window_id, 0
        self._activate(wid, kf.stamp_ns)
        return self._pose_in_window(kf.frame, r, T, kf)

    def _agrees_with_map(self, wid: int, T_win_cam: np.ndarray, T_map_pred: Optional[np.ndarray],
                         slack: float = 1.0) -> bool:
        """Whether a keyframe's pose in stored window ``wid`` (``T_win_cam``), placed in the map by the window's
        pose-graph Sim(3), agrees with its pose from the current window (``T_map_pred``, map units; None: no
        prediction, accepted): camera centres within :data:`REVISIT_MAX_OFFSET` x the window's scene depth
        and viewing directions within :data:`REVISIT_MAX_DEG` (both times ``slack``). A revisit adds no correction, so a stored
        window that disagrees (a wrong match, or drift a loop closure must remove first) is not revisited."""
        if T_map_pred is None or int(wid) not in self.graph.nodes:
            return True
        S = self.graph.nodes[int(wid)]
        T = S.transform_pose(T_win_cam)
        depth = S.s * self._scene_depth(int(wid), [np.asarray(T_win_cam)[:3, 3]])
        off = float(np.linalg.norm(T[:3, 3] - np.asarray(T_map_pred)[:3, 3]))
        R = T[:3, :3].T @ np.asarray(T_map_pred)[:3, :3]
        ang = float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))
        ok = ang <= slack * REVISIT_MAX_DEG and (depth <= 0.0 or off <= slack * REVISIT_MAX_OFFSET * depth)
        if not ok:
            log.debug("no revisit of window %d: %.3g map units (%.3g x depth) and %.3g deg from the current pose",
                      wid, off, off / depth if depth > 0 else float("nan"), ang)
        return ok

    def _pose_in_window(self, frame, r: LocalizationResult, T_win_cam: np.ndarray, kf: Optional[Keyframe] = None):
        """Store the pose of ``frame`` localized against the current window (``T_win_cam``); updates its
        keyframe. Returns the stored pose (map units)."""
        T = self._T_map_window.transform_pose(T_win_cam)
        p = self._store_pose(frame, T, r.K if r.K is not None else frame.K, r.confidence, PoseKind.QUERY)
        if kf is not None:
            kf.T_map_cam, kf.confidence, kf.window_id = T, float(r.confidence), self._window_id
        return p

    def _best_stored_window(self, frame: Frame, min_inliers: int, exclude=()) -> Optional[tuple]:
        """Retrieval + ``localize_in``: ``(window_id, result, T_win_cam)`` with the most inliers (>=
        ``min_inliers``) among the top-k retrieved windows, or None."""
        c = self.config
        if self.db is None or not len(self.db):
            return None
        desc = self._descriptor(frame)
        if desc is None:
            return None
        best = None
        for wid, _sim in self.db.retrieve(desc, c.retrieval_top_k, exclude, c.retrieval_min_similarity):
            r = self._localize_in(wid, [frame])[0]
            T = localized_pose(r)
            if T is not None and supported(r, min_inliers, c.min_localization_confidence) and (
                    best is None or support(r) > support(best[1])):
                best = (wid, r, T)
        return best

    def _next_revisit(self, frame: Frame) -> Optional[tuple[LocalizationResult, np.ndarray]]:
        """A frame failed against the revisited stored window: continue against the stored window of the
        same map segment that localizes it best (>= ``relocalization_min_inliers``), if any (not counted as a
        relocalization: the camera is not lost, it moved on through the known map)."""
        if self.db is None or not self.config.revisit_windows:
            return None
        comp = self.graph.components()
        here = comp.get(self._window_id)
        best = self._best_stored_window(frame, self.config.relocalization_min_inliers,
                                        exclude={w for w in comp if comp[w] != here} | {self._window_id})
        if best is None:
            return None
        wid, r, T = best
        # the camera moved on from a known place: the next stored window must agree with the motion so far
        # (a constant-velocity prediction, hence twice the tolerance of a keyframe's own pose)
        if not self._agrees_with_map(wid, T, predict_pose(self.traj, frame.stamp_ns), slack=2.0):
            return None
        self._activate(wid, frame.stamp_ns)
        return r, T

    def _relocalize(self, frame: Frame) -> Optional[tuple[LocalizationResult, np.ndarray]]:
        """Relocalization of a lost frame against the window database; on success the found window becomes
        the current one. Returns ``(result, T_win_cam)`` or None; counted either way."""
        if self.db is None or not self.config.relocalization or not len(self.db):
            return None
        st = self._status
        best = self._best_stored_window(frame, self.config.relocalization_min_inliers)
        if best is None:
            st.relocalization_failures += 1
            log.warning("relocalization of frame %d failed", frame.index)
            return None
        wid, r, T = best
        st.relocalizations += 1
        log.info("frame %d relocalized against window %d (%d inliers)", frame.index, wid, r.inliers)
        self._activate(wid, frame.stamp_ns)
        return r, T

    def restart_stream(self) -> bool:
        """The stream restarted (a time jump back: a bag replayed or looped, a driver restart, a simulated
        clock reset) and the map is to be kept: the window database, pose graph, map cloud, trajectory,
        scale and counters stay; the stream state (keyframes, held frames, the current window, the stamp
        order, odometry) is forgotten, and each next frame is relocalized against the stored windows
        (:meth:`_relocalize`) until one succeeds - the camera then goes on in the same map frame - or a
        first window of its own is made (a new map segment that a relocalization or loop closure merges
        later, as after :meth:`load_map`). Poses of repeated stamps replace the earlier ones in the
        trajectory. Returns False, after a full :meth:`reset`, when there is no map to keep (a backend
        without window memories, or no window yet)."""
        with self._lock:
            if self.db is None or not len(self.db) or not len(self.graph.nodes):
                self.reset()
                return False
            kept = (self.db, self.graph, self.map, self.traj, self._status, self._next_window_id, self._camera,
                    self.map_info, self._metric_scale, self.scale)
            self.db = None  # reset() must not clear the kept database
            self.reset()
            if self.db is not None:
                self.db.clear()
            (self.db, self.graph, self.map, self.traj, self._status, self._next_window_id, self._camera,
             self.map_info, self._metric_scale, self.scale) = kept
            self.db.pinned = None
            self._relocalize_first = True
            self._status.state = "lost"
            return True

    def _restart_relocalized(self, frame: Frame, kf: Optional[Keyframe], out) -> bool:
        """After :meth:`restart_stream`, before a first window: relocalize ``frame`` against the stored
        windows; on success the found window is current (the camera goes on in the map frame), the pose is
        in ``out`` and True is returned."""
        got = self._relocalize(frame)
        if got is None:
            return False
        r, T = got
        self._relocalize_first = False
        self._consecutive_failures = 0
        self._status.state = "mapping"
        out.poses.append(self._output_pose(self._pose_in_window(frame, r, T, kf)))
        out.metric = self.metric
        return True

    def _localization_only_step(self, frame: Frame, out) -> None:
        """Localization-only mode: ``frame`` against the current stored window, else (failure or too few
        inliers) relocalization against the whole database. No window is made."""
        c = self.config
        st = self._status
        if self.db is None or not len(self.db):
            st.localization_failures += 1
            st.last_error = "localization_only: no map loaded (Engine.load_map)"
            return
        saved_cam = self.map_info.get("camera") if self.map_info else None
        why = camera_mismatch(saved_cam, (frame.K, frame.width, frame.height)) if frame.K is not None else ""
        if why:
            st.frames_rejected += 1
            st.last_error = f"localization_only: frame {frame.index}: {why}"
            out.rejected = why
            return
        t0 = time.perf_counter()
        r = T = None
        if self._active_memory is not None:
            r = self._localize_in(self._window_id, [frame])[0]
            T = localized_pose(r)
            if T is not None and not supported(r, c.relocalization_min_inliers, c.min_localization_confidence):
                T = None
        if T is None:
            best = self._best_stored_window(frame, c.relocalization_min_inliers)
            if best is not None:
                wid, r, T = best
                if wid != self._window_id or self._active_memory is None:
                    st.relocalizations += 1
                self._activate(wid, frame.stamp_ns)
            else:
                st.relocalization_failures += 1
        st.last_localize_ms = 1e3 * (time.perf_counter() - t0)
        if T is None:
            st.localization_failures += 1
            self._consecutive_failures += 1
            st.last_error = f"localize frame {frame.index}: " + (r.reason if r is not None else "no window retrieved")
        else:
            self._consecutive_failures = 0
            out.poses.append(self._output_pose(self._pose_in_window(frame, r, T)))
        st.state = "localizing" if self._consecutive_failures < c.lost_after_failures else "lost"

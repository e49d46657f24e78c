"""Loop closure: keyframes localized against old windows give Sim(3) loop edges of the window pose graph.

Detection: at every keyframe localized against the current window, its global descriptor retrieves the
top-k windows of the database (:meth:`~selfi_ros.engine.window_db.WindowDatabase.retrieve`) that are at
least ``loop_min_window_gap`` pose-graph hops away and not among the most recent windows; the keyframe is
localized against each (``Backend.localize_in``). A localization with at least ``loop_min_inliers``
correspondences (a backend without correspondences: confidence >= ``min_localization_confidence``,
:func:`supported`) is a *loop hypothesis* (``loop_candidates``): the keyframe's pose in the candidate window
and in the current one. The hypothesis is completed at once with the previous keyframes posed in the
current window (localized against the candidate in one call) and with later keyframes' hypotheses,
also those found in other old windows of the candidate's neighbourhood (at most :data:`GROUP_HOPS`
pose-graph hops from the group's reference window, each moved into the reference window's frame through
the two windows' pose-graph Sim(3)s): with sparse views (e.g. 10 degrees apart) a revisiting camera sees
each old window in one or two keyframes only, never in ``loop_min_keyframes`` of them.

Verification (:func:`verify_loop`), before anything enters the graph (a false loop bends the whole map):
1. agreement: ``loop_min_keyframes`` (>= 2) distinct keyframes of the same window pair; one Sim(3)
   ``T_cand_cur`` is fitted to all of them (rotation mean + centres,
   :func:`selfi_ros.engine.chaining.fit_from_poses`) and must explain each: RMS camera-centre residual
   <= ``loop_max_residual`` x the scene depth (median distance of the candidate window's points from the
   keyframes; at least the keyframes' spread), mean rotation residual <= ``loop_max_rotation_deg``;
2. plausibility (windows of one map segment): the correction it implies against the current estimate
   ``T_map_cand^-1 ∘ T_map_cur`` is bounded: camera centres move by <= ``loop_max_correction`` x the path
   length between the two windows (drift grows with distance travelled), rotation <= ``loop_max_correction_deg``,
   scale by <= a factor ``1 + loop_max_correction``. Windows of different segments have no estimate to
   compare with: only (1) applies, and an accepted loop merges the segments.
A rejected hypothesis group counts in ``loop_rejections``.

Closure: the loop edge enters :class:`~selfi_ros.engine.pose_graph.PoseGraph`, the graph is optimised, every
stored pose is re-expressed with its window's correction ``T_map_w,new ∘ T_map_w,old^-1``, the map cloud is
rebuilt from the windows' clouds, and the engine continues against the candidate window (a revisit: the map
does not grow while the camera moves through known places). ORB-SLAM (Mur-Artal et al., T-RO 2015,
section VI) detects loops the same way (place recognition, then Sim(3) verification with consistency over
several keyframes, then an essential-graph optimisation); the test against the prediction is this project's.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from selfi_ros.geometry.sim3 import Sim3
from selfi_ros.engine.keyframes import Keyframe
from selfi_ros.engine.loop_verify import (LoopCheck, LoopDetector, LoopObservation, localized_pose,
                                          support, supported, verify_loop)
from selfi_ros.engine.types import LocalizationResult

log = logging.getLogger("selfi_ros.engine")

#: re-exported from :mod:`selfi_ros.engine.loop_verify` (their home before the split)
__all__ = ["GROUP_HOPS", "LoopCheck", "LoopClosure", "LoopDetector", "LoopObservation", "localized_pose", "support",
           "supported", "verify_loop"]

#: pose-graph hops between a hypothesis's candidate window and the reference window of the group it joins
#: (neighbouring old windows are chained with little drift between them; the verification is unchanged)
GROUP_HOPS = 2


class LoopClosure:
    """The engine's window-memory steps (a base class of :class:`selfi_ros.engine.engine.Engine`, whose state
    it uses: backend, config, status, window database ``db``, pose graph ``graph``, trajectory, keyframes,
    map, current window): registering windows, loop detection at keyframes, closing loops (revisits of
    stored windows: :class:`selfi_ros.engine.recovery.Relocalization`)."""

    # ------------------------------------------------------------------ helpers
    @property
    def _maps_enabled(self) -> bool:
        return self.db is not None

    def _descriptor(self, frame) -> Optional[np.ndarray]:
        """(D,) float32 descriptor of a frame (cached by stamp), None when the backend fails."""
        d = self._desc_cache.get(frame.stamp_ns)
        if d is not None:
            return d
        try:
            D = np.asarray(self.backend.describe([frame]), np.float32)
            if D.ndim != 2 or D.shape[0] != 1 or not np.all(np.isfinite(D)):
                raise ValueError(f"describe returned shape {D.shape}")
        except Exception as e:  # noqa: BLE001 - a backend failure must not stop the stream
            self._map_error("describe", e)
            return None
        self._desc_cache[frame.stamp_ns] = D[0]
        while len(self._desc_cache) > 256:
            self._desc_cache.popitem(last=False)
        return D[0]

    def _map_error(self, what: str, e: Exception) -> None:
        st = self._status
        st.backend_errors += 1
        st.last_error = f"{what}: {type(e).__name__}: {e}"
        log.warning("%s failed: %s", what, e)

    def _localize_in(self, window_id: int, frames: list) -> list:
        """``backend.localize_in`` against a stored window; failures (no memory, backend error) are results
        with ``extrinsics`` None."""
        mem = self.db.memory(window_id) if self.db is not None else None
        if mem is not None:
            try:
                res = list(self.backend.localize_in(mem, frames))
                if len(res) == len(frames):
                    return res
                raise ValueError(f"{len(res)} results for {len(frames)} frames")
            except Exception as e:  # noqa: BLE001
                self._map_error(f"localize_in window {window_id}", e)
        return [LocalizationResult(f.stamp_ns, f.index, None, reason=f"window {window_id} unavailable") for f in frames]

    def _activate(self, window_id: int, stamp_ns: int) -> None:
        """Localize the next frames against stored window ``window_id`` (a revisit)."""
        self._active_memory = self.db.memory(window_id)
        self._window_id = int(window_id)
        self._T_map_window = self.graph.nodes[int(window_id)]
        self._anchors = []
        self._cutoff_ns = int(stamp_ns)
        self.db.pinned = int(window_id)
        self.recovery.succeeded()

    # ------------------------------------------------------------------ windows
    def _on_window_added(self, win, anchors: Sequence[Keyframe], mode: str, first: bool, prev_id: int,
                         prev_S: Optional[Sim3], pts: Optional[np.ndarray], cols: Optional[np.ndarray]) -> None:
        """Register a new window: pose-graph node (+ chaining edge to the window it was chained to) and
        database entry (its memory, anchor descriptors, subsampled window-frame cloud)."""
        self._active_memory = None
        self._frontier = None
        if not self._maps_enabled:
            return
        c = self.config
        wid = int(win.window_id)
        S = self._T_map_window
        prior = None
        if first and len(self.graph) == 0:
            prior = "fixed"
        elif first or mode == "segment":
            prior = "weak"
            if first:  # a new run in a loaded map: a segment until a loop closure joins them
                self._status.map_segments += 1
        self.graph.add_node(wid, S, prior)
        if not first and mode != "segment" and prev_S is not None and prev_id in self.graph.nodes:
            self.graph.add_edge(prev_id, wid, prev_S.inverse() @ S, "chain")
        try:
            memory = self.backend.export_window()
        except Exception as e:  # noqa: BLE001
            self._map_error(f"export_window {wid}", e)
            return
        D = win.descriptors
        if D is None or np.shape(D)[0] != len(anchors):
            D = [self._descriptor(k.frame) for k in anchors]
            D = None if any(d is None for d in D) else np.stack(D)
        if pts is not None and len(pts) > c.window_db_cloud_points > 0:
            idx = np.sort(self._rng.choice(len(pts), c.window_db_cloud_points, replace=False))
            pts, cols = pts[idx], cols[idx]
        try:
            self.db.add(wid, self._segment_of(wid), memory, D, [k.stamp_ns for k in anchors], pts, cols)
        except ValueError as e:
            self._map_error(f"window database add {wid}", e)
        self.db.pinned = wid

    def _segment_of(self, wid: int) -> int:
        return int(self.graph.components().get(int(wid), wid))

    # ------------------------------------------------------------------ loops
    def _loop_step(self, kf: Keyframe, out) -> None:
        """Loop detection and verification for a keyframe localized against the current window."""
        c = self.config
        if not (self._maps_enabled and c.loop_closure) or kf.T_map_cam is None or self._T_map_window is None:
            return
        cur = self._window_id
        if cur not in self.graph.nodes or len(self.db) < 2:
            return
        self._loops.tick()
        if self._frontier is not None and self._active_memory is not None and self._frontier in self.graph.nodes:
            self._frontier_step(kf, out)
            if out.map_corrected:
                return
        desc = self._descriptor(kf.frame)
        if desc is None:
            return
        newest = max(self.graph.nodes)
        exclude = self.graph.neighbours_within(cur, max(0, c.loop_min_window_gap - 1))
        exclude |= {w for w in self.graph.nodes if w > newest - c.retrieval_exclude_recent}
        cands = self.db.retrieve(desc, c.retrieval_top_k, exclude, c.retrieval_min_similarity)
        if not cands:
            return
        seg = self.graph.components().get(cur, cur)
        st = self._status
        for wid, _sim in cands:
            r = self._localize_in(wid, [kf.frame])[0]
            T = localized_pose(r)
            if T is None or not supported(r, c.loop_min_inliers, c.min_localization_confidence):
                continue
            st.loop_candidates += 1
            ref = self._loops.reference(seg, self.graph.neighbours_within(wid, GROUP_HOPS) - {wid})
            if ref is None or ref in exclude:
                ref = wid
            obs = LoopObservation(kf.stamp_ns, T, kf.T_map_cam.copy(), int(r.inliers), -1 if ref == wid else wid)
            group = self._loops.add(seg, ref, obs)
            if len(group) < self._loops.min_keyframes:
                group = self._more_observations(seg, ref, group, wid)
            if self._verify_and_close(cur, ref, group, kf, out) == "closed":
                return

    def _in_reference(self, ref: int, group: list) -> list:
        """The group's observations with ``T_cand_cam`` in window ``ref``'s frame (those of other old
        windows moved through the pose-graph Sim(3)s ``S_ref^-1 S_w``); ones of windows no longer in the
        graph are dropped."""
        out = []
        for o in group:
            if o.window_id < 0 or o.window_id == ref:
                out.append(o)
            elif o.window_id in self.graph.nodes and ref in self.graph.nodes:
                M = self.graph.nodes[ref].inverse() @ self.graph.nodes[o.window_id]
                out.append(LoopObservation(o.stamp_ns, M.transform_pose(o.T_cand_cam), o.T_cur_cam, o.inliers))
        return out

    def _verify_and_close(self, cur: int, cand: int, group: list, kf: Keyframe, out) -> str:
        """Verify a hypothesis group (keyframes posed in window ``cand`` and in the map frame of ``cur``'s
        segment) and close the loop between ``cand`` and ``cur`` when it passes. Returns "few" (not enough
        keyframes yet), "wait" (keyframes too close together), "rejected" or "closed"."""
        c = self.config
        group = self._in_reference(cand, group)
        if int(cand) == int(cur):  # a window against itself is no loop (it would add a self-edge)
            return "few"
        if len(group) < self._loops.min_keyframes:
            return "few"
        comp = self.graph.components()
        same = comp.get(cur) == comp.get(cand)
        S_cand, S_cur = self.graph.nodes[cand], self.graph.nodes[cur]
        chk = verify_loop(group, c.loop_min_keyframes, c.loop_max_residual, c.loop_max_rotation_deg,
                          S_cand.inverse() if same else None, self._path_length(cand, cur) / S_cand.s,
                          c.loop_max_correction, c.loop_max_correction_deg,
                          self._scene_depth(cand, [o.T_cand_cam[:3, 3] for o in group]), c.loop_min_spread)
        if chk.wait:
            return "wait"
        self._loops.discard(comp.get(cur, cur), cand)
        if not chk.accepted:
            self._status.loop_rejections += 1
            log.warning("loop %d <-> %d rejected: %s", cand, cur, chk.reason)
            return "rejected"
        chk.T_cand_cur = chk.T_cand_cur @ S_cur  # fitted map -> candidate; the edge is current -> candidate
        self._close_loop(cand, cur, chk, not same, kf, out)
        return "closed"

    def _frontier_step(self, kf: Keyframe, out) -> None:
        """While a stored window is revisited after leaving the map's frontier window (the backend's current
        one), keyframes are also localized in that frontier window: each gives a loop hypothesis between the
        two, verified and closed as any other (the revisit alone would leave the drift between them)."""
        F, O = self._frontier, self._window_id
        if F == O:  # the revisits led back to the frontier window itself: no loop to measure (a self-edge)
            self._frontier = None
            return
        try:
            r = self.backend.localize([kf.frame])[0]
        except Exception as e:  # noqa: BLE001
            self._map_error("localize in the frontier window", e)
            self._frontier = None
            return
        T_F = localized_pose(r)
        if T_F is None:
            self._frontier_misses += 1
            if self._frontier_misses > 3:
                self._frontier = None
            return
        self._status.loop_candidates += 1
        T_O = self._T_map_window.inverse().transform_pose(kf.T_map_cam)
        seg = self.graph.components().get(F, F)
        group = self._loops.add(seg, O, LoopObservation(kf.stamp_ns, T_O, self.graph.nodes[F].transform_pose(T_F),
                                                        int(r.inliers)))
        if self._verify_and_close(F, O, group, kf, out) in ("closed", "rejected"):
            self._frontier = None

    def _more_observations(self, seg: int, cand: int, group: list, window: int = -1) -> list:
        """Complete a loop hypothesis group (reference window ``cand``) with the most recent other keyframes
        posed in map segment ``seg`` (still in the keyframe buffer), localized against old window ``window``
        (default: ``cand``) in one call; returns the group."""
        window = cand if window < 0 else window
        have = {o.stamp_ns for o in group}
        need = self._loops.min_keyframes - len(group)
        comp = self.graph.components()
        kfs = [k for k in self.keyframes if k.T_map_cam is not None and k.stamp_ns not in have
               and comp.get(k.window_id) == seg]
        kfs = kfs[-(need + 2):]
        if not kfs:
            return group
        for k, r in zip(kfs, self._localize_in(window, [k.frame for k in kfs])):
            T = localized_pose(r)
            if T is not None and supported(r, self.config.loop_min_inliers, self.config.min_localization_confidence):
                group = self._loops.add(seg, cand, LoopObservation(k.stamp_ns, T, k.T_map_cam.copy(), int(r.inliers),
                                                                   -1 if window == cand else window))
        return group

    def _scene_depth(self, wid: int, centres) -> float:
        """Median distance of window ``wid``'s stored points from the mean of ``centres`` (its units; 0
        without points)."""
        e = self.db.entries.get(int(wid))
        if e is None or not len(e.cloud):
            return 0.0
        return float(np.median(np.linalg.norm(e.cloud - np.mean(np.asarray(centres), axis=0), axis=1)))

    def _path_length(self, a: int, b: int) -> float:
        """Sum of distances between the origins of consecutive windows (by id) from ``a`` to ``b`` (map units)."""
        lo, hi = sorted((int(a), int(b)))
        ids = [w for w in sorted(self.graph.nodes) if lo <= w <= hi]
        t = np.array([self.graph.nodes[w].t for w in ids]) if ids else np.zeros((0, 3))
        return float(np.linalg.norm(np.diff(t, axis=0), axis=1).sum()) if len(t) > 1 else 0.0

    def _close_loop(self, cand: int, cur: int, chk: LoopCheck, merge: bool, kf: Keyframe, out) -> None:
        """Add the verified loop edge (weighted by its fit's residuals), optimise, re-express poses and map;
        continue against ``cand``."""
        st = self._status
        old = dict(self.graph.nodes)
        self.graph.add_edge(cand, cur, chk.T_cand_cur, "loop", chk.sigmas)
        try:
            new = self.graph.optimize(self.config.pose_graph_iterations)
        except RuntimeError as e:
            self.graph.edges.pop()
            self._map_error("pose graph", e)
            return
        st.loop_closures += 1
        if merge:
            st.map_segments = max(0, st.map_segments - 1)
            log.warning("loop %d <-> %d merges two map segments (%d left unmerged)", cand, cur, st.map_segments)
        else:
            log.info("loop closed: window %d <-> %d", cand, cur)
        self._loops.clear()  # their map-frame poses are stale now
        self._apply_correction(old, new, out)
        self._activate(cand, kf.stamp_ns)

    def _apply_correction(self, old: dict, new: dict, out) -> None:
        """Re-express stored poses, keyframes, anchor records, the current window and the map cloud after
        the window Sim(3)s changed from ``old`` to ``new`` (dicts window id -> Sim3)."""
        corr = {w: new[w] @ old[w].inverse() for w in new if w in old}
        for p in self.traj.poses():
            C = corr.get(p.window_id)
            if C is not None:
                p.T_map_cam = C.transform_pose(p.T_map_cam)
        for kf in self.keyframes:
            C = corr.get(kf.window_id)
            if C is not None and kf.T_map_cam is not None:
                kf.T_map_cam = C.transform_pose(kf.T_map_cam)
        C = corr.get(self._window_id)
        if C is not None:
            for a in self._anchors:
                a.pts_map = C.apply(a.pts_map)
            self._T_map_window = new[self._window_id]
            out.map_correction = C.matrix()
            out.map_correction[:3, 3] *= self._out_scale  # output units, as the poses
        out.map_corrected = True
        self._rebuild_map()

    def _rebuild_map(self) -> None:
        """The map cloud from every stored window's cloud moved by its pose-graph Sim(3)."""
        self.map.clear()
        for wid in self.db.ids():
            e = self.db.entries[wid]
            if len(e.cloud) and wid in self.graph.nodes:
                self.map.add(self.graph.nodes[wid].apply(e.cloud), e.colors)
        self._status.map_points = len(self.map)
        self._status.map_voxel_size = self.map.voxel_size

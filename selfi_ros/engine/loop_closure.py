"""Loop closure: keyframes localized against old windows give Sim(3) loop edges of the window pose graph.

Detection: at every keyframe localized against the current window, its global descriptor retrieves the
top-k windows of the database (:meth:`~selfi_ros.engine.window_db.WindowDatabase.retrieve`) that are at
least ``loop_min_window_gap`` pose-graph hops away and not among the most recent windows; the keyframe is
localized against each (``Backend.localize_in``). A localization with at least ``loop_min_inliers``
correspondences (a backend without correspondences: confidence >= ``min_localization_confidence``,
:func:`supported`) is a *loop hypothesis* (``loop_candidates``): the keyframe's pose in the candidate window
and in the current one. The hypothesis is completed at once with the previous keyframes posed in the
current window (localized against the candidate in one call) and with later keyframes' hypotheses.

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

import collections
import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from selfi_ros.geometry.se3 import invert_transform
from selfi_ros.geometry.sim3 import Sim3
from selfi_ros.engine.chaining import ChainingError, SharedFrame, fit_from_poses
from selfi_ros.engine.keyframes import Keyframe
from selfi_ros.engine.types import LocalizationResult

log = logging.getLogger("selfi_ros.engine")


@dataclass
class LoopObservation:
    """One keyframe seen in two windows.

    Attributes:
        stamp_ns: the keyframe's stamp.
        T_cand_cam: (4, 4) rigid camera-to-candidate-window pose (candidate window units).
        T_cur_cam: (4, 4) rigid camera pose on the current side: in the map frame of the current window's
            segment (map units), so that keyframes of successive windows form one group.
        inliers: correspondences behind ``T_cand_cam``.
    """

    stamp_ns: int
    T_cand_cam: np.ndarray
    T_cur_cam: np.ndarray
    inliers: int = 0


@dataclass
class LoopCheck:
    """Outcome of :func:`verify_loop`.

    Attributes:
        accepted: the loop passed every test.
        T_cand_cur: the fitted Sim(3) current window -> candidate window (None when no fit).
        reason: why it was rejected ("" when accepted).
        residual_ratio: RMS centre residual / the reference length (scene depth or keyframe spread).
        rotation_deg: mean rotation residual (deg).
        correction_ratio: mean centre correction / path length (NaN without a prediction).
        correction_deg: rotation of the correction (deg, NaN without a prediction).
        sigmas: (rotation rad, translation, log scale) standard deviations of the fit, from its residuals
            (for the loop edge's weight in the pose graph).
        wait: not rejected, not accepted: the keyframes are too close together for a well-conditioned
            Sim(3) (spread below ``min_spread`` x the reference length); more keyframes are needed.
    """

    accepted: bool
    T_cand_cur: Optional[Sim3]
    reason: str = ""
    residual_ratio: float = float("nan")
    rotation_deg: float = float("nan")
    correction_ratio: float = float("nan")
    correction_deg: float = float("nan")
    sigmas: Optional[tuple] = None
    wait: bool = False


def _angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def verify_loop(observations: Sequence[LoopObservation], min_keyframes: int = 3, max_residual: float = 0.05,
                max_rotation_deg: float = 2.0, predicted: Optional[Sim3] = None, path_length: float = 0.0,
                max_correction: float = 0.3, max_correction_deg: float = 30.0, scale_ref: float = 0.0,
                min_spread: float = 0.0) -> LoopCheck:
    """Geometric verification of a loop hypothesis (module docstring, tests 1 and 2).

    Args:
        observations: keyframes of one (current, candidate) window pair; one per stamp is used (the last).
        min_keyframes: distinct keyframes needed (>= 2).
        max_residual, max_rotation_deg: agreement bounds (ratio to the centres' spread; deg).
        predicted: the current estimate of ``T_cand_cur`` (None: windows of different segments).
        path_length: path length between the two windows in candidate-window units.
        max_correction, max_correction_deg: plausibility bounds of the correction.
        scale_ref: reference length of the residual test (candidate-window units, e.g. the scene depth);
            the keyframes' spread when larger.
        min_spread: RMS spread of the keyframe centres needed, as a fraction of ``scale_ref`` (below it the
            Sim(3)'s scale is ill-conditioned: ``wait``).
    """
    by_stamp = {int(o.stamp_ns): o for o in observations}
    obs = list(by_stamp.values())
    if len(obs) < max(2, int(min_keyframes)):
        return LoopCheck(False, None, f"{len(obs)} keyframes, need {max(2, int(min_keyframes))}")
    shared = [SharedFrame(np.asarray(o.T_cand_cam, np.float64), np.asarray(o.T_cur_cam, np.float64), 1.0) for o in obs]
    try:
        M = fit_from_poses(shared)
    except ChainingError as e:
        return LoopCheck(False, None, f"no Sim(3) fit: {e}")
    cc = np.array([o.T_cand_cam[:3, 3] for o in obs], np.float64)
    cw = M.apply(np.array([o.T_cur_cam[:3, 3] for o in obs], np.float64))
    spread = float(np.sqrt(((cc - cc.mean(0)) ** 2).sum(1).mean()))
    res = float(np.sqrt(((cw - cc) ** 2).sum(1).mean()))
    if spread < float(min_spread) * float(scale_ref):
        return LoopCheck(False, None, f"keyframe spread {spread:.3g} below {min_spread} x {scale_ref:.3g}", wait=True)
    ratio = res / max(spread, float(scale_ref), 1e-12)
    rot = float(np.mean([_angle_deg((M.R @ o.T_cur_cam[:3, :3]).T @ o.T_cand_cam[:3, :3]) for o in obs]))
    chk = LoopCheck(False, M, "", ratio, rot)
    if not (ratio <= max_residual and rot <= max_rotation_deg):
        chk.reason = (f"keyframes disagree: centre residual {ratio:.3g} x depth (max {max_residual}), rotation "
                      f"{rot:.3g} deg (max {max_rotation_deg})")
        return chk
    if predicted is not None:
        cp = predicted.apply(np.array([o.T_cur_cam[:3, 3] for o in obs], np.float64))
        corr = float(np.linalg.norm(cw - cp, axis=1).mean())
        E = M @ predicted.inverse()
        chk.correction_ratio = corr / max(path_length, spread, 1e-12)
        chk.correction_deg = _angle_deg(E.R)
        ds = abs(float(np.log(E.s)))
        if not (chk.correction_ratio <= max_correction and chk.correction_deg <= max_correction_deg
                and ds <= np.log1p(max_correction)):
            chk.reason = (f"implausible correction: centres move {chk.correction_ratio:.3g} x path length (max "
                          f"{max_correction}), rotation {chk.correction_deg:.3g} deg (max {max_correction_deg}), "
                          f"scale x{E.s:.3g}")
            return chk
    # standard deviations of the fit from its residuals, conservatively: a residual of few keyframes
    # underestimates the noise (7 parameters fitted), and the scale of a centre fit is only as good as
    # the centres' noise over their spread
    inflate = 3.0 * np.sqrt(3.0 * len(obs) / max(1.0, 3.0 * len(obs) - 7.0))
    chk.sigmas = (inflate * np.radians(rot), inflate * res, inflate * res / max(spread, 1e-12))
    chk.accepted = True
    return chk


class LoopDetector:
    """Loop hypotheses grouped by (current map segment, candidate window), bounded: at most ``4 * min_keyframes``
    per pair (newest kept) and pairs not extended during the last ``max_age`` keyframes are dropped."""

    def __init__(self, min_keyframes: int = 3, max_age: int = 10) -> None:
        self.min_keyframes = max(2, int(min_keyframes))
        self.max_age = int(max_age)
        self.clear()

    def clear(self) -> None:
        self._groups: dict[tuple[int, int], collections.deque] = {}
        self._last: dict[tuple[int, int], int] = {}
        self._tick = 0

    def tick(self) -> None:
        """One keyframe passed: drop stale pairs."""
        self._tick += 1
        for k in [k for k, t in self._last.items() if self._tick - t > self.max_age]:
            self._groups.pop(k, None)
            self._last.pop(k, None)

    def add(self, cur: int, cand: int, obs: LoopObservation) -> list[LoopObservation]:
        """Add a hypothesis; returns the pair's group (one per stamp, time order)."""
        key = (int(cur), int(cand))
        g = self._groups.setdefault(key, collections.deque(maxlen=4 * self.min_keyframes))
        g.append(obs)
        self._last[key] = self._tick
        return list({o.stamp_ns: o for o in g}.values())

    def discard(self, cur: int, cand: int) -> None:
        self._groups.pop((int(cur), int(cand)), None)
        self._last.pop((int(cur), int(cand)), None)


def supported(r: LocalizationResult, min_inliers: int, min_confidence: float) -> bool:
    """Whether a successful localization is trusted for a loop, a revisit or a relocalization: at least
    ``min_inliers`` correspondences; a backend without correspondences (``inliers`` 0, see
    :class:`~selfi_ros.engine.types.LocalizationResult`) by its confidence (>= ``min_confidence``) instead."""
    if int(r.inliers) > 0:
        return int(r.inliers) >= int(min_inliers)
    return bool(r.confidence >= min_confidence)


def support(r: LocalizationResult) -> tuple:
    """Sort key of competing localizations: more correspondences, then more confidence."""
    return (int(r.inliers), float(r.confidence))


def localized_pose(r: LocalizationResult) -> Optional[np.ndarray]:
    """(4, 4) camera-to-window pose of a successful localization, None for a failed or non-finite one."""
    if not isinstance(r, LocalizationResult) or r.extrinsics is None:
        return None
    E = np.asarray(r.extrinsics, np.float64)
    if not np.all(np.isfinite(E)):
        return None
    return invert_transform(E)


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
            group = self._loops.add(seg, wid, LoopObservation(kf.stamp_ns, T, kf.T_map_cam.copy(), int(r.inliers)))
            if len(group) < self._loops.min_keyframes:
                group = self._more_observations(seg, wid, group)
            if self._verify_and_close(cur, wid, group, kf, out) == "closed":
                return

    def _verify_and_close(self, cur: int, cand: int, group: list, kf: Keyframe, out) -> str:
        """Verify a hypothesis group (keyframes posed in window ``cand`` and in the map frame of ``cur``'s
        segment) and close the loop between ``cand`` and ``cur`` when it passes. Returns "few" (not enough
        keyframes yet), "wait" (keyframes too close together), "rejected" or "closed"."""
        c = self.config
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

    def _more_observations(self, seg: int, cand: int, group: list) -> list:
        """Complete a loop hypothesis group with the most recent other keyframes posed in map segment
        ``seg`` (still in the keyframe buffer), localized against ``cand`` in one call; returns the group."""
        have = {o.stamp_ns for o in group}
        need = self._loops.min_keyframes - len(group)
        comp = self.graph.components()
        kfs = [k for k in self.keyframes if k.T_map_cam is not None and k.stamp_ns not in have
               and comp.get(k.window_id) == seg]
        kfs = kfs[-(need + 2):]
        if not kfs:
            return group
        for k, r in zip(kfs, self._localize_in(cand, [k.frame for k in kfs])):
            T = localized_pose(r)
            if T is not None and supported(r, self.config.loop_min_inliers, self.config.min_localization_confidence):
                group = self._loops.add(seg, cand, LoopObservation(k.stamp_ns, T, k.T_map_cam.copy(), int(r.inliers)))
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

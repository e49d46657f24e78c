"""CPU reconstruction backend on pycolmap: heavy work per keyframe, cheap work per frame. No GPU, no weights.

This plays the role of SAIL-Recon's anchor reconstruction + localization (official repository
HKUST-SAIL/SAIL-Recon) with classic structure-from-motion (Schoenberger & Frahm, "Structure-from-Motion
Revisited", CVPR 2016, as packaged by COLMAP / pycolmap 4.2):

* :meth:`ColmapBackend.reconstruct_window`: each anchor's SIFT comes from the backend's feature cache
  (:mod:`selfi_ros.backends.colmap_features`: extracted once per keyframe, from memory; without SIFT's
  upsampled octave above ``upsample_max_side_px``); each anchor is matched with its ``pairs_per_keyframe``
  successors only (verified pairs are cached, so a pair shared with the previous window is not matched
  again); keypoints, descriptors and verified two-view geometries go into an *in-memory* COLMAP
  database (``pycolmap.Database.open(":memory:")``: nothing is written to disk). When the window shares
  >= 2 anchors with the previous window's model (``grow_windows``), that model restricted to the shared
  anchors (their poses, fixed, and the 3D points they observe) seeds COLMAP's incremental pipeline, which
  then only registers the new anchors (absolute pose), triangulates and runs its local and global bundle
  adjustments (``ba_local_num_images``); otherwise, or when growing fails, the window is reconstructed
  from scratch by the same pipeline. With known intrinsics (every anchor has ``Frame.K``) a single PINHOLE
  camera with fixed K is used; otherwise one SIMPLE_RADIAL camera is estimated. The result is expressed
  in the frame of the first registered anchor (its extrinsics are identity) and scaled so that the median
  depth of the sparse points in that camera is 1 (the engine chains windows with Sim(3)). An anchor the
  mapper leaves out is tracked from the nearest registered anchor (KLT + PnP), else SIFT-localized.
* :meth:`ColmapBackend.localize`: a frame is tracked (:mod:`selfi_ros.backends.colmap_tracking`: KLT of the
  window points' 2D positions from the nearest posed image, then PnP RANSAC) and, when tracking is lost,
  localized by SIFT matching against the window's descriptors (:func:`~selfi_ros.backends.colmap_memory.
  localize_features`), whose inliers re-seed the tracks. Confidence = inlier ratio; ``inliers`` filled.
* Window memories (issue 10 of the map contract): :meth:`export_window` / :meth:`load_window` /
  :meth:`localize_in` with :class:`~selfi_ros.backends.colmap_memory.ColmapWindowMemory`, and
  :meth:`describe`: VLAD over the cached SIFT (:class:`~selfi_ros.backends.colmap_memory.Vlad`).

Logging: COLMAP logs through glog from C++ straight to file descriptor 2 (stderr). ``verbose=False`` (the
default) raises glog's ``minloglevel`` to WARNING through ``pycolmap.logging.minloglevel`` (pycolmap's
binding of glog's ``FLAGS_minloglevel``), so COLMAP's warnings and errors still show and its INFO lines do
not; ``verbose=True`` sets it to INFO. The flag is process-wide: the backend constructed last decides.
This backend logs one INFO line per window through Python's ``logging``.

Conventions: extrinsics are camera-from-window (3x4, OpenCV optical axes), intrinsics are OpenCV K
(pixel centres at integers). COLMAP puts pixel centres at +0.5, so ``cx_colmap = cx_opencv + 0.5``;
the conversion is done at this boundary only.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Mapping, Optional, Sequence

import numpy as np

from selfi_ros.backends.colmap_features import FeatureCache, PairCache, frame_key, grey
from selfi_ros.backends.colmap_mapping import seed_reconstruction, write_images
from selfi_ros.backends.colmap_memory import ColmapWindowMemory, Vlad, localize_features
from selfi_ros.backends.colmap_tracking import KltTracker, TrackSeed, absolute_pose, k_to_colmap_params
from selfi_ros.backends.config import ColmapBackendConfig, with_options
from selfi_ros.engine.backend import BackendBase, BackendError
from selfi_ros.engine.status import BackendStatus
from selfi_ros.engine.types import Frame, LocalizationResult, WindowReconstruction
from selfi_ros.geometry.camera import scale_intrinsics

log = logging.getLogger(__name__)
_k_to_colmap_params = k_to_colmap_params  # old private name, kept for callers


def _colmap_camera_to_k(camera) -> np.ndarray:
    """COLMAP camera -> (3, 3) OpenCV K (pixel centres at integers)."""
    K = np.array(camera.calibration_matrix(), dtype=np.float64)
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def set_colmap_verbose(verbose: bool) -> None:
    """Show (True) or hide (False) COLMAP's INFO log; its warnings, errors and fatal messages always show.

    Sets glog's process-wide ``minloglevel`` through ``pycolmap.logging.minloglevel`` (glog severities:
    0 INFO, 1 WARNING, 2 ERROR, 3 FATAL; pycolmap 4.x, ``pycolmap/logging`` bindings): 0 when ``verbose``,
    else 1 (WARNING). A stricter level set before (ERROR or FATAL) is kept when not ``verbose``.
    """
    import pycolmap

    L = pycolmap.logging
    L.minloglevel = 0 if verbose else max(1, int(L.minloglevel))


class ColmapBackend(BackendBase):
    """pycolmap backend (see module docstring). Implements :class:`selfi_ros.engine.backend.Backend`.

    Args:
        config: a :class:`~selfi_ros.backends.config.ColmapBackendConfig` (default: its defaults); its
            fields document every option with its unit and cost.
        **options: fields of that config overriding ``config`` (cast and validated).

    Attributes:
        counters: running counts: ``windows_grown`` / ``windows_scratch`` (how windows were built),
            ``grow_fallbacks`` (growing failed, rebuilt from scratch), ``tracked`` / ``sift_localized`` /
            ``localize_failed`` frames; the feature cache's ``extractions`` and ``hits`` are on
            ``features``, the pair cache's ``computed`` / ``hits`` on ``pairs``.

    Raises:
        selfi_ros.backends.config.BackendConfigError: an option the backend does not have, or a bad value.
    """

    name = "colmap"
    random_weights = False
    supports_map = True

    def __init__(self, config: Optional[ColmapBackendConfig] = None, **options) -> None:
        import pycolmap

        cfg = with_options(ColmapBackendConfig, config, **options)
        self.config = cfg
        self._pycolmap = pycolmap
        self.max_num_features = cfg.max_num_features
        self.max_image_size = cfg.max_image_size
        self.ratio = cfg.ratio
        self.min_inliers = cfg.min_inliers
        self.ransac_max_error_px = cfg.ransac_max_error_px
        self.min_registered = max(2, cfg.min_registered)
        self.num_threads = cfg.num_threads
        self.seed = cfg.seed
        self.work_dir = cfg.work_dir or None
        self.verbose = cfg.verbose
        self.features = FeatureCache(cfg.max_num_features, cfg.max_image_size, cfg.peak_threshold,
                                     cfg.num_threads, cfg.feature_cache_size)
        self.pairs = PairCache(cfg.feature_cache_size * cfg.pairs_per_keyframe)
        self.tracker = KltTracker(cfg.track_window_px, cfg.track_levels, cfg.track_fb_max_px,
                                  cfg.track_max_points, cfg.track_max_gap_s)
        self.vlad = Vlad(cfg.vlad_clusters, cfg.seed)
        self.counters = dict(windows_grown=0, windows_scratch=0, grow_fallbacks=0, tracked=0, sift_localized=0,
                             localize_failed=0)
        self._memory: Optional[ColmapWindowMemory] = None
        self._rec = None  # the last window's pycolmap.Reconstruction (image names = frame keys)
        pycolmap.set_random_seed(self.seed)
        set_colmap_verbose(self.verbose)

    def _anchor_octave(self, frame: Frame) -> int:
        """SIFT first octave of a keyframe: ``anchor_first_octave``, but 0 (no 2x upsampled octave) for
        images whose longer side exceeds ``upsample_max_side_px`` (when that is > 0)."""
        lim = self.config.upsample_max_side_px
        if lim > 0 and max(frame.height, frame.width) > lim:
            return max(0, self.config.anchor_first_octave)
        return self.config.anchor_first_octave

    # ------------------------------------------------------------------ window reconstruction
    def reconstruct_window(self, window_id: int, anchors: Sequence[Frame]) -> WindowReconstruction:
        """Reconstruct ``anchors`` with COLMAP and make them the scene memory (see module docstring).

        Returns every anchor (in the given order) in the frame of the first anchor COLMAP registered
        (normally anchor 0); anchors the mapper left out are localized against the window's points.
        ``sparse_points``/``sparse_colors`` and ``descriptors`` (VLAD) are filled, dense depth is None.
        Raises :class:`BackendError` for < 2 anchors, mixed image sizes, fewer than ``min_registered``
        registered anchors, an anchor that can be neither registered nor localized, or a failed
        reconstruction (the previous window stays the current one).
        """
        anchors = list(anchors)
        if len(anchors) < 2:
            raise BackendError(f"colmap: a window needs >= 2 anchors, got {len(anchors)}")
        sizes = {(f.height, f.width) for f in anchors}
        if len(sizes) != 1:
            raise BackendError(f"colmap: anchors of one window must share an image size, got {sorted(sizes)}")
        t0 = time.perf_counter()
        try:
            feats = self.features.get_many(anchors, [self._anchor_octave(f) for f in anchors])
            seed_ids = self._shared_with_previous(anchors)
            plans = ([seed_ids] if self.config.grow_windows and len(seed_ids) >= 2 else []) + [{}]
            for plan in plans:  # grow the previous model; if that fails (or is not possible), from scratch
                try:
                    rec = self._map(window_id, anchors, feats, plan)
                    result, memory, seeds = self._window_from_reconstruction(window_id, anchors, feats, rec)
                    grown = bool(plan)
                    break
                except Exception as exc:  # noqa: BLE001 - BackendError or pycolmap's RuntimeError/IndexError
                    if not plan:
                        raise
                    self.counters["grow_fallbacks"] += 1
                    log.info("colmap window %d: growing failed (%s); from scratch", window_id, exc)
        except BackendError:
            raise
        except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError
            raise BackendError(f"colmap: window {window_id} failed: {exc}") from exc
        self.counters["windows_grown" if grown else "windows_scratch"] += 1
        self._memory, self._rec = memory, rec
        self.tracker.reset_window(seeds)
        if self.vlad.centres is None:
            self.vlad.fit(np.concatenate([f.descriptors for f in feats]))
        result.descriptors = np.stack([self.vlad.describe(f.descriptors) for f in feats])
        log.info("colmap window %d: %d/%d anchors, %d points in %.2f s (%s)", window_id, result.num_frames,
                 len(anchors), len(memory.points), time.perf_counter() - t0, "grown" if grown else "from scratch")
        return result

    def _shared_with_previous(self, anchors) -> dict:
        """Anchor position -> image id in the previous window's model, for anchors it registered."""
        if self._rec is None:
            return {}
        by_name = {img.name: iid for iid, img in self._rec.images.items() if img.has_pose}
        out = {}
        for k, f in enumerate(anchors):
            iid = by_name.get(_name(f))
            if iid is not None and self.features.peek(f, self._anchor_octave(f)) is not None:
                out[k] = iid
        return out

    def _camera(self, anchors, seeded: bool):
        """The window's one COLMAP camera (id 1): PINHOLE with the anchors' K, else SIMPLE_RADIAL (from the
        previous model when growing it, else COLMAP's prior focal length 1.2 x the longer side)."""
        pc = self._pycolmap
        h, w = anchors[0].height, anchors[0].width
        if all(f.K is not None for f in anchors):
            cam = pc.Camera(model="PINHOLE", width=w, height=h, params=k_to_colmap_params(anchors[0].K))
            cam.has_prior_focal_length = True  # calibrated two-view geometry (essential matrix)
        elif seeded:
            prev = next(iter(self._rec.cameras.values()))
            cam = pc.Camera(model=prev.model_name, width=w, height=h, params=list(prev.params))
            cam.has_prior_focal_length = True
        else:
            f0 = 1.2 * max(w, h)
            cam = pc.Camera(model="SIMPLE_RADIAL", width=w, height=h, params=[f0, w / 2.0, h / 2.0, 0.0])
            cam.has_prior_focal_length = False
        cam.camera_id = 1
        return cam

    def _map(self, window_id, anchors, feats, seed_ids: dict):
        """Run COLMAP's incremental pipeline on an in-memory database of the anchors (image id = position
        + 1, name = frame key), seeded with the previous model's shared anchors when ``seed_ids`` is given.
        Returns the pycolmap.Reconstruction; raises BackendError when too few anchors register."""
        pc = self._pycolmap
        cfg = self.config
        known_k = all(f.K is not None for f in anchors)
        cam = self._camera(anchors, bool(seed_ids))
        db = pc.Database.open(":memory:")
        try:
            write_images(db, cam, [_name(f) for f in anchors], feats)
            tvo = pc.TwoViewGeometryOptions()
            tvo.detect_watermark = False  # camera streams carry no watermarks; saves a RANSAC per pair
            for a in range(len(anchors)):
                for b in range(a + 1, min(len(anchors), a + 1 + cfg.pairs_per_keyframe)):
                    tvg = self.pairs.get(frame_key(anchors[a]), frame_key(anchors[b]), feats[a], feats[b], cam,
                                         self.ratio, tvo)
                    if len(tvg.inlier_matches) >= 15:
                        db.write_two_view_geometry(a + 1, b + 1, tvg)
            mgr = pc.ReconstructionManager()
            if seed_ids:
                seed_reconstruction(mgr.get(mgr.add()), self._rec, cam, feats, seed_ids)
            io = pc.IncrementalPipelineOptions()
            io.multiple_models = False
            io.min_model_size = 2
            io.num_threads = self.num_threads
            io.random_seed = self.seed
            io.extract_colors = False  # colours come from the images in memory
            io.fix_existing_frames = bool(seed_ids)
            io.mapper.init_min_num_inliers = 50
            io.mapper.init_min_tri_angle = 2.0
            io.mapper.abs_pose_min_num_inliers = 20
            io.mapper.ba_local_num_images = cfg.ba_local_num_images
            io.mapper.filter_min_tri_angle = cfg.min_tri_angle_deg
            io.triangulation.min_angle = cfg.min_tri_angle_deg
            if known_k:
                io.ba_refine_focal_length = False
                io.ba_refine_principal_point = False
                io.ba_refine_extra_params = False
            pc.IncrementalPipeline(io, db, mgr).run()
        finally:
            db.close()
        if mgr.size() == 0:
            raise BackendError(f"colmap: window {window_id}: incremental mapping registered no model "
                               f"({len(anchors)} anchors)")
        rec = max((mgr.get(i) for i in range(mgr.size())), key=lambda r: r.num_reg_images())
        rec = pc.Reconstruction(rec)  # detached from the manager
        n_reg = rec.num_reg_images()
        if n_reg < max(self.min_registered, len(seed_ids) + 1 if seed_ids else 0):
            raise BackendError(f"colmap: window {window_id}: only {n_reg} of {len(anchors)} anchors "
                               f"registered (need {self.min_registered})")
        return rec

    def _window_from_reconstruction(self, window_id, anchors, feats, rec):
        by_name = {img.name: img for img in rec.images.values() if img.has_pose}
        names = [_name(f) for f in anchors]
        order = [k for k, n in enumerate(names) if n in by_name]
        if len(order) < self.min_registered:
            raise BackendError(f"colmap: window {window_id}: only {len(order)} of {len(anchors)} anchors "
                               f"registered (need {self.min_registered})")
        E = {k: np.asarray(by_name[names[k]].cam_from_world().matrix(), dtype=np.float64) for k in order}
        ref = order[0]
        T_ref_world = np.vstack([E[ref], [0.0, 0.0, 0.0, 1.0]])
        point_ids = list(rec.point3D_ids())
        if len(point_ids) < 10:
            raise BackendError(f"colmap: window {window_id}: only {len(point_ids)} 3D points")
        xyz_world = np.array([rec.points3D[i].xyz for i in point_ids], dtype=np.float64)
        xyz_ref = xyz_world @ T_ref_world[:3, :3].T + T_ref_world[:3, 3]
        depth = xyz_ref[:, 2]
        if np.sum(depth > 0) < 10:
            raise BackendError(f"colmap: window {window_id}: points are not in front of the first anchor")
        scale = 1.0 / float(np.median(depth[depth > 0]))
        points = xyz_ref * scale
        T_world_ref = np.linalg.inv(T_ref_world)
        extr = {}
        for k in order:
            Tk = np.vstack([E[k], [0.0, 0.0, 0.0, 1.0]]) @ T_world_ref  # camera_k from ref
            Tk[:3, 3] *= scale
            extr[k] = Tk[:3, :]
        extr[ref] = np.hstack([np.eye(3), np.zeros((3, 1))])  # exact identity by construction
        K = _colmap_camera_to_k(rec.cameras[by_name[names[ref]].camera_id])
        # memory: one descriptor per observation of each 3D point; colours from the anchor images
        row_of = {pid: r for r, pid in enumerate(point_ids)}
        colors = np.zeros((len(point_ids), 3), np.uint8)
        colored = np.zeros(len(point_ids), bool)
        d_all, rows_all, xy_all, anc_all, seeds = [], [], [], [], []
        h, w = anchors[0].height, anchors[0].width
        for j, k in enumerate(order):
            img = by_name[names[k]]
            obs = [(i, row_of[p.point3D_id]) for i, p in enumerate(img.points2D)
                   if p.has_point3D() and p.point3D_id in row_of]
            idx = np.array([o[0] for o in obs], np.int64)
            rows = np.array([o[1] for o in obs], np.int64)
            xy = (feats[k].xy[idx] - 0.5).astype(np.float32) if len(idx) else np.zeros((0, 2), np.float32)
            u = np.clip(np.round(xy[:, 0]).astype(np.int64), 0, w - 1)
            v = np.clip(np.round(xy[:, 1]).astype(np.int64), 0, h - 1)
            new = ~colored[rows]
            colors[rows[new]] = anchors[k].image[v[new], u[new]]
            colored[rows] = True
            d_all.append(feats[k].descriptors[idx])
            rows_all.append(rows)
            xy_all.append(xy)
            anc_all.append(np.full(len(idx), j, np.int64))
            seeds.append(TrackSeed(int(anchors[k].stamp_ns), grey(anchors[k].image), xy, rows))
        memory = ColmapWindowMemory(
            window_id=int(window_id), points=points, colors=colors,
            descriptors=np.concatenate(d_all).astype(np.uint8).reshape(-1, 128),
            point_index=np.concatenate(rows_all), K=K, image_size_hw=(h, w),
            anchor_stamps_ns=np.array([anchors[k].stamp_ns for k in order], np.int64),
            obs_anchor=np.concatenate(anc_all), obs_xy=np.concatenate(xy_all).reshape(-1, 2))
        missing = [k for k in range(len(anchors)) if k not in extr]
        for k in missing:  # the engine needs every anchor: track or localize the ones COLMAP left out
            f = anchors[k]
            g = grey(f.image)
            near = min(seeds, key=lambda sd: abs(int(sd.stamp_ns) - int(f.stamp_ns)))
            r = self._track_pose(memory, f, g, near)
            r = r[0] if r is not None else self._localize_sift(memory, f, None)
            if r.extrinsics is None:
                raise BackendError(f"colmap: window {window_id}: anchor {k} (frame {f.index}) "
                                   f"neither registered nor localized: {r.reason}")
            extr[k] = r.extrinsics
        if missing:
            log.info("colmap window %d: anchors %s localized after mapping", window_id, missing)
        n = len(anchors)
        result = WindowReconstruction(
            window_id=int(window_id),
            stamps_ns=np.array([f.stamp_ns for f in anchors], dtype=np.int64),
            frame_indices=np.array([f.index for f in anchors], dtype=np.int64),
            extrinsics=np.stack([extr[k] for k in range(n)]).astype(np.float64),
            intrinsics=np.stack([K] * n).astype(np.float64),
            image_size_hw=(h, w), sparse_points=points.astype(np.float32), sparse_colors=colors,
            backend=self.name, random_weights=False)
        return result, memory, seeds

    # ------------------------------------------------------------------ localization
    def localize(self, frames: Sequence[Frame]) -> list[LocalizationResult]:
        """Localize each frame against the last window (tracking, else SIFT; see module docstring).

        Raises :class:`BackendError` when no window has been reconstructed; per-frame failures come back
        as results with ``extrinsics=None`` and a ``reason``.
        """
        if self._memory is None:
            raise BackendError("colmap: localize called before any window was reconstructed")
        return [self._localize_one(f) for f in frames]

    def _k_for(self, mem: ColmapWindowMemory, frame: Frame) -> np.ndarray:
        if frame.K is not None:
            return frame.K
        return scale_intrinsics(mem.K, frame.width / mem.image_size_hw[1], frame.height / mem.image_size_hw[0])

    def _track_pose(self, mem: ColmapWindowMemory, frame: Frame, g: np.ndarray, seed: TrackSeed):
        """KLT from ``seed`` into ``frame`` (grey ``g``) + PnP RANSAC: ``(LocalizationResult, TrackSeed of the
        inliers)``, or None when fewer than ``min_inliers`` tracks / inliers remain."""
        xy, rows = self.tracker.track(seed, g)
        if len(xy) < self.min_inliers:
            return None
        K = self._k_for(mem, frame)
        fit, _ = absolute_pose(xy.astype(np.float64) + 0.5, mem.points[rows], K, frame.width, frame.height,
                               self.ransac_max_error_px, self.seed)
        if fit is None or fit.num_inliers < self.min_inliers:
            return None
        res = LocalizationResult(frame.stamp_ns, frame.index, fit.extrinsics, K=K,
                                 confidence=fit.num_inliers / float(len(xy)), inliers=fit.num_inliers)
        return res, TrackSeed(int(frame.stamp_ns), g, xy[fit.inlier_mask], rows[fit.inlier_mask], tracked=True)

    def _localize_one(self, frame: Frame) -> LocalizationResult:
        """Tracked pose when >= ``min_inliers`` tracks agree; with fewer than ``track_min_points`` of them
        the frame is also SIFT-localized and the better-supported pose wins (and re-seeds the tracks)."""
        cfg, mem = self.config, self._memory
        g, tracked = None, None
        if cfg.track_non_keyframes:
            g = grey(frame.image)
            seed = self.tracker.nearest_seed(frame.stamp_ns, g.shape)
            if seed is not None:
                tracked = self._track_pose(mem, frame, g, seed)
                if tracked is not None and tracked[0].inliers >= cfg.track_min_points:
                    self.tracker.last = tracked[1]
                    self.counters["tracked"] += 1
                    return tracked[0]
        res = self._localize_sift(mem, frame, g, count=tracked is None)
        if tracked is not None and (res.extrinsics is None or res.inliers <= tracked[0].inliers):
            self.tracker.last = tracked[1]
            self.counters["tracked"] += 1
            return tracked[0]
        if tracked is not None:
            self.counters["sift_localized"] += 1
        return res

    def _localize_sift(self, mem: ColmapWindowMemory, frame: Frame, g, count: bool = False,
                       reseed: bool = True) -> LocalizationResult:
        """SIFT of ``frame`` (cached) matched against ``mem`` + PnP RANSAC; re-seeds the tracker from the
        inliers when ``g`` (the frame's grey image) is given and ``reseed``."""
        cfg = self.config
        K = self._k_for(mem, frame)
        ft = self.features.get(frame, cfg.query_first_octave, accept=(self._anchor_octave(frame),), keep=False)
        fit, rows, reason = localize_features(mem, ft.xy, ft.descriptors, K, frame.width, frame.height, self.ratio,
                                              self.min_inliers, self.ransac_max_error_px, self.seed)
        if fit is None:
            if count:
                self.counters["localize_failed"] += 1
            return LocalizationResult(frame.stamp_ns, frame.index, None, K=K, confidence=0.0, reason=reason)
        if count:
            self.counters["sift_localized"] += 1
        if g is not None and reseed:
            keep = fit.inlier_mask
            xy = (ft.xy[fit.query_index[keep]] - 0.5).astype(np.float32)
            self.tracker.last = TrackSeed(int(frame.stamp_ns), g, xy, rows[keep], tracked=True)
        return LocalizationResult(frame.stamp_ns, frame.index, fit.extrinsics, K=K,
                                  confidence=fit.num_inliers / float(len(rows)), inliers=fit.num_inliers)

    # ------------------------------------------------------------------ window memories (issue 10)
    def map_signature(self) -> Mapping[str, str]:
        """``backend``, the local ``features`` (COLMAP SIFT, uint8, at ``max_image_size``) and the ``global``
        descriptor (VLAD size over RootSIFT)."""
        return {"backend": self.name, "features": f"colmap-sift128-uint8-max{self.max_image_size}px",
                "global": f"vlad{self.vlad.clusters}-rootsift"}

    def export_window(self) -> ColmapWindowMemory:
        """The current window's memory (arrays shared read-only; later windows make new ones), with the VLAD
        vocabulary. Raises :class:`BackendError` before any window."""
        if self._memory is None:
            raise BackendError("colmap: export_window called before any window was reconstructed")
        return dataclasses.replace(self._memory, vocabulary=self.vlad.centres, _desc_f32=None)

    def load_window(self, directory: str) -> ColmapWindowMemory:
        """Read a saved memory (:meth:`ColmapWindowMemory.load`); adopts its VLAD vocabulary if this backend
        has none yet. Raises :class:`BackendError` naming the folder and the problem."""
        mem = ColmapWindowMemory.load(directory)
        if mem.backend != self.name:
            raise BackendError(f"colmap: {directory} holds a {mem.backend!r} memory")
        self.vlad.adopt(mem.vocabulary)
        return mem

    def localize_in(self, memory, frames: Sequence[Frame]) -> list[LocalizationResult]:
        """Localize ``frames`` by SIFT matching against ``memory`` (a :class:`ColmapWindowMemory`) + PnP
        RANSAC; camera-from-window of *that* window, ``inliers`` filled. The current window and the tracker
        are left unchanged. Raises :class:`BackendError` for a memory of another backend."""
        if not isinstance(memory, ColmapWindowMemory):
            raise BackendError(f"colmap: cannot localize in a {type(memory).__name__}")
        return [self._localize_sift(memory, f, None, reseed=False) for f in frames]

    def describe(self, frames: Sequence[Frame]) -> np.ndarray:
        """(N, 128 x ``vlad_clusters``) float32 L2-normalised VLAD of each frame's cached SIFT (keyframe
        settings). Without a vocabulary yet (no window), it is built from these frames' descriptors."""
        frames = list(frames)
        feats = [self.features.get(f, self._anchor_octave(f), accept=(self.config.query_first_octave,))
                 for f in frames]
        if self.vlad.centres is None:
            self.vlad.fit(np.concatenate([f.descriptors for f in feats] + [np.zeros((0, 128), np.uint8)]))
        if not feats:
            return np.zeros((0, self.vlad.dim), np.float32)
        return np.stack([self.vlad.describe(f.descriptors) for f in feats]).astype(np.float32)

    def status(self) -> BackendStatus:
        """``memory_bytes``: the current window memory plus the feature cache."""
        mem = self._memory.nbytes() if self._memory is not None else 0
        return BackendStatus(memory_bytes=int(mem + self.features.nbytes()))

    def close(self) -> None:
        """Stop the SIFT extraction threads."""
        self.features.close()

    def reset(self) -> None:
        """Drop the scene memory, the previous model, the tracks and the caches (the VLAD vocabulary stays)."""
        self._memory = None
        self._rec = None
        self.tracker.clear()
        self.features.clear()
        self.pairs.clear()


def _name(frame: Frame) -> str:
    """COLMAP image name of a frame: its cache key ``<stamp_ns>_<index>``."""
    return f"{int(frame.stamp_ns)}_{int(frame.index)}"

"""CPU reconstruction backend on pycolmap: SIFT + exhaustive matching + incremental SfM for a window of
anchors, then 2D-3D matching + LO-RANSAC absolute pose for query frames. No GPU, no weights.

This plays the role of SAIL-Recon's anchor reconstruction + localization (official repository
HKUST-SAIL/SAIL-Recon) with classic
structure-from-motion (Schoenberger & Frahm, "Structure-from-Motion Revisited", CVPR 2016, as packaged
by COLMAP / pycolmap 4.2):

* :meth:`ColmapBackend.reconstruct_window`: the anchors are written to a temporary folder, SIFT features
  are extracted into a COLMAP database, all pairs are matched and geometrically verified, and COLMAP's
  incremental mapper reconstructs them. With known intrinsics (every anchor has ``Frame.K``) a single
  PINHOLE camera with fixed K is used; otherwise one SIMPLE_RADIAL camera is estimated. The result is
  expressed in the frame of the first registered anchor (its extrinsics are identity) and scaled so
  that the median depth of the sparse points in that camera is 1 (the scale of a monocular window is
  arbitrary; the engine chains windows with Sim(3)). The scene memory kept for localization is the
  window's 3D points with the SIFT descriptor of every observation of each point.
* :meth:`ColmapBackend.localize`: SIFT of the query image, nearest-neighbour matching against the memory
  descriptors (Lowe's ratio test against the best match of a *different* 3D point), one 2D-3D
  correspondence per 3D point, then ``pycolmap.estimate_and_refine_absolute_pose`` (P3P in LO-RANSAC and
  a non-linear refinement). Confidence = RANSAC inlier ratio.

Logging: COLMAP logs through glog from C++ straight to file descriptor 2 (stderr): about 80 INFO lines per
window of 6 anchors (several per image from feature extraction, then matching and mapping).
``verbose=False`` (the default) raises glog's ``minloglevel`` to WARNING through
``pycolmap.logging.minloglevel`` (pycolmap's binding of glog's ``FLAGS_minloglevel``), so COLMAP's warnings
and errors still show and its INFO lines do not; ``verbose=True`` sets it to INFO. The flag is process-wide:
the backend constructed last decides. This backend logs one INFO line per window through Python's
``logging``.

Conventions: extrinsics are camera-from-window (3x4, OpenCV optical axes), intrinsics are OpenCV K
(pixel centres at integers). COLMAP puts pixel centres at +0.5, so ``cx_colmap = cx_opencv + 0.5``;
the conversion is done at this boundary only.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from selfi_ros.backends.config import ColmapBackendConfig, with_options
from selfi_ros.geometry.camera import scale_intrinsics
from selfi_ros.engine.backend import BackendBase, BackendError
from selfi_ros.engine.types import Frame, LocalizationResult, WindowReconstruction

log = logging.getLogger(__name__)


@dataclass
class _SceneMemory:
    """What localization matches against (all in the window frame, window units).

    Attributes:
        points: (N, 3) float64 sparse 3D points.
        descriptors: (M, 128) float32 SIFT descriptors (uint8 values) of every observation of a point.
        point_index: (M,) int64 row of ``points`` observed by each descriptor.
        K: (3, 3) OpenCV intrinsics of the window's camera (for queries without their own K).
        image_size_hw: (H, W) the intrinsics refer to.
    """

    points: np.ndarray
    descriptors: np.ndarray
    point_index: np.ndarray
    K: np.ndarray
    image_size_hw: tuple


def _k_to_colmap_params(K: np.ndarray) -> list[float]:
    """OpenCV K -> COLMAP PINHOLE params ``fx, fy, cx, cy`` (pixel-centre convention +0.5)."""
    return [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]) + 0.5, float(K[1, 2]) + 0.5]


def _colmap_camera_to_k(camera) -> np.ndarray:
    """COLMAP camera -> (3, 3) OpenCV K (pixel centres at integers)."""
    K = np.array(camera.calibration_matrix(), dtype=np.float64)
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 grey (ITU-R 601 luma, as OpenCV)."""
    import cv2

    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))


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
            fields document every option with its unit.
        **options: fields of that config overriding ``config`` (cast and validated).

    Notes on the speed options (measured on the sample sequence, shared 2-core machine):
        ``query_first_octave`` 0 skips COLMAP's 2x upsampled first octave (-1) for query frames: 3.5x
        faster query extraction (0.10 vs 0.35 s per 480x360 frame) with the same pose accuracy inside the
        window, one frame less of reach beyond it. ``anchor_first_octave`` 0 makes windows of 4-6 anchors 3x
        faster (0.4-0.9 s instead of 1.4-2 s; a node then keeps up with the 5 Hz sample), but with about
        half the 3D points and clearly lower accuracy on wide windows (camera-centre errors up to 7% of the
        window extent instead of < 3% in ``test/test_colmap_backend.py``); a speed option, not the default.

    Raises:
        selfi_ros.backends.config.BackendConfigError: an option the backend does not have, or a bad value.
    """

    name = "colmap"
    random_weights = False

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
        self.peak_threshold = cfg.peak_threshold
        self.query_first_octave = cfg.query_first_octave
        self.anchor_first_octave = cfg.anchor_first_octave
        self.verbose = cfg.verbose
        self._memory: Optional[_SceneMemory] = None
        self._extractor = None
        pycolmap.set_random_seed(self.seed)
        set_colmap_verbose(self.verbose)

    # ------------------------------------------------------------------ helpers
    def _extraction_options(self):
        """COLMAP SIFT options shared by anchors and queries (``first_octave`` set by the caller)."""
        opts = self._pycolmap.FeatureExtractionOptions()
        opts.max_image_size = self.max_image_size
        opts.num_threads = self.num_threads
        opts.use_gpu = False
        opts.sift.max_num_features = self.max_num_features
        opts.sift.peak_threshold = self.peak_threshold
        return opts

    def _extract(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SIFT of an RGB query image (``query_first_octave``): (m, 2) float64 COLMAP pixel coordinates,
        (m, 128) float32 descriptors (uint8 values, as in the COLMAP database)."""
        import cv2

        pc = self._pycolmap
        if self._extractor is None:
            opts = self._extraction_options()
            opts.sift.first_octave = self.query_first_octave
            self._extractor = pc.FeatureExtractor.create(opts, pc.Device.cpu)
        grey = _grey(image)
        h, w = grey.shape
        s = min(1.0, self.max_image_size / max(h, w))
        if s < 1.0:
            grey = cv2.resize(grey, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
        kps, desc = self._extractor.extract_from_uint8_array(grey)
        xy = np.asarray(pc.keypoints_to_matrix(kps), dtype=np.float64)[:, :2]
        if s < 1.0:  # COLMAP coordinates: pixel corners at integers, so scaling is exact
            xy /= s
        return xy, np.asarray(desc.data, dtype=np.float32)

    # ------------------------------------------------------------------ Backend
    def reconstruct_window(self, window_id: int, anchors: Sequence[Frame]) -> WindowReconstruction:
        """Reconstruct ``anchors`` with COLMAP and make them the scene memory (see module docstring).

        Returns every anchor (in the given order) in the frame of the first anchor COLMAP registered
        (normally anchor 0); anchors the mapper left out are localized against the window's points.
        ``sparse_points``/``sparse_colors`` are filled, dense depth is None. Raises :class:`BackendError`
        for < 2 anchors, mixed image sizes, fewer than ``min_registered`` registered anchors, an anchor
        that can be neither registered nor localized, or a failed reconstruction.
        """
        import cv2

        pc = self._pycolmap
        anchors = list(anchors)
        if len(anchors) < 2:
            raise BackendError(f"colmap: a window needs >= 2 anchors, got {len(anchors)}")
        sizes = {(f.height, f.width) for f in anchors}
        if len(sizes) != 1:
            raise BackendError(f"colmap: anchors of one window must share an image size, got {sorted(sizes)}")
        h, w = anchors[0].height, anchors[0].width
        known_k = all(f.K is not None for f in anchors)
        t0 = time.perf_counter()
        tmp = tempfile.mkdtemp(prefix="selfi_colmap_", dir=self.work_dir)
        try:
            img_dir = os.path.join(tmp, "images")
            os.makedirs(img_dir)
            names = []
            for k, f in enumerate(anchors):
                name = f"{k:04d}.png"
                cv2.imwrite(os.path.join(img_dir, name), f.image[:, :, ::-1])
                names.append(name)
            db_path = os.path.join(tmp, "database.db")
            reader = pc.ImageReaderOptions()
            if known_k:
                reader.camera_model = "PINHOLE"
                reader.camera_params = ",".join(f"{v:.10g}" for v in _k_to_colmap_params(anchors[0].K))
            else:
                reader.camera_model = "SIMPLE_RADIAL"
            eopts = self._extraction_options()
            eopts.sift.first_octave = self.anchor_first_octave
            pc.extract_features(db_path, img_dir, image_names=names, camera_mode=pc.CameraMode.SINGLE,
                                reader_options=reader, extraction_options=eopts,
                                device=pc.Device.cpu)
            mopts = pc.FeatureMatchingOptions()
            mopts.use_gpu = False
            mopts.num_threads = self.num_threads
            pc.match_exhaustive(db_path, matching_options=mopts, device=pc.Device.cpu)
            iopts = pc.IncrementalPipelineOptions()
            iopts.multiple_models = False
            iopts.min_model_size = 2
            iopts.num_threads = self.num_threads
            iopts.random_seed = self.seed
            iopts.extract_colors = True
            iopts.mapper.init_min_num_inliers = 50
            iopts.mapper.init_min_tri_angle = 2.0
            iopts.mapper.abs_pose_min_num_inliers = 20
            if known_k:
                iopts.ba_refine_focal_length = False
                iopts.ba_refine_principal_point = False
                iopts.ba_refine_extra_params = False
            out_dir = os.path.join(tmp, "sparse")
            os.makedirs(out_dir)
            recs = pc.incremental_mapping(db_path, img_dir, out_dir, options=iopts)
            if not recs:
                raise BackendError(f"colmap: window {window_id}: incremental mapping registered no model "
                                   f"({len(anchors)} anchors)")
            rec = max(recs.values(), key=lambda r: r.num_reg_images())
            db = pc.Database.open(db_path)
            try:
                result, memory = self._window_from_reconstruction(window_id, anchors, names, rec, db, (h, w))
            finally:
                db.close()
        except BackendError:
            raise
        except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError
            raise BackendError(f"colmap: window {window_id} failed: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._memory = memory
        log.info("colmap window %d: %d/%d anchors, %d points in %.2f s", window_id, result.num_frames,
                 len(anchors), len(memory.points), time.perf_counter() - t0)
        return result

    def _window_from_reconstruction(self, window_id, anchors, names, rec, db, size_hw):
        by_name = {img.name: img for img in rec.images.values() if img.has_pose}
        order = [k for k, n in enumerate(names) if n in by_name]
        if len(order) < self.min_registered:
            raise BackendError(f"colmap: window {window_id}: only {len(order)} of {len(anchors)} anchors "
                               f"registered (need {self.min_registered})")
        E = {k: np.asarray(by_name[names[k]].cam_from_world().matrix(), dtype=np.float64) for k in order}
        ref = order[0]
        T_ref_world = np.eye(4)
        T_ref_world[:3, :] = E[ref]
        point_ids = list(rec.point3D_ids())
        if len(point_ids) < 10:
            raise BackendError(f"colmap: window {window_id}: only {len(point_ids)} 3D points")
        xyz_world = np.array([rec.points3D[i].xyz for i in point_ids], dtype=np.float64)
        rgb = np.array([rec.points3D[i].color for i in point_ids], dtype=np.uint8).reshape(-1, 3)
        xyz_ref = xyz_world @ T_ref_world[:3, :3].T + T_ref_world[:3, 3]
        depth = xyz_ref[:, 2]
        if np.sum(depth > 0) < 10:
            raise BackendError(f"colmap: window {window_id}: points are not in front of the first anchor")
        scale = 1.0 / float(np.median(depth[depth > 0]))
        points = xyz_ref * scale
        T_world_ref = np.linalg.inv(T_ref_world)
        extr = {}
        for k in order:
            T = np.eye(4)
            T[:3, :] = E[k]
            Tk = T @ T_world_ref  # camera_k from ref
            Tk[:3, 3] *= scale
            extr[k] = Tk[:3, :]
        extr[ref] = np.hstack([np.eye(3), np.zeros((3, 1))])  # exact identity by construction
        cam = rec.cameras[by_name[names[ref]].camera_id]
        K = _colmap_camera_to_k(cam)
        # scene memory: one descriptor per observation of each 3D point
        row_of = {pid: r for r, pid in enumerate(point_ids)}
        descs, rows = [], []
        for k in order:
            img = by_name[names[k]]
            d = np.asarray(db.read_descriptors(img.image_id).data, dtype=np.float32)
            for idx, p2d in enumerate(img.points2D):
                if p2d.has_point3D() and p2d.point3D_id in row_of:
                    descs.append(d[idx])
                    rows.append(row_of[p2d.point3D_id])
        memory = _SceneMemory(points=points, descriptors=np.array(descs, dtype=np.float32).reshape(-1, 128),
                              point_index=np.array(rows, dtype=np.int64), K=K, image_size_hw=tuple(size_hw))
        # anchors COLMAP did not register: localize them against the window (the engine needs every anchor)
        missing = [k for k in range(len(anchors)) if k not in extr]
        if missing:
            prev, self._memory = self._memory, memory
            try:
                for k in missing:
                    r = self._localize_one(anchors[k])
                    if r.extrinsics is None:
                        raise BackendError(f"colmap: window {window_id}: anchor {k} (frame {anchors[k].index}) "
                                           f"neither registered nor localized: {r.reason}")
                    extr[k] = r.extrinsics
            finally:
                self._memory = prev
            log.info("colmap window %d: anchors %s localized after mapping", window_id, missing)
        n = len(anchors)
        result = WindowReconstruction(
            window_id=int(window_id),
            stamps_ns=np.array([f.stamp_ns for f in anchors], dtype=np.int64),
            frame_indices=np.array([f.index for f in anchors], dtype=np.int64),
            extrinsics=np.stack([extr[k] for k in range(n)]).astype(np.float64),
            intrinsics=np.stack([K] * n).astype(np.float64),
            image_size_hw=tuple(size_hw),
            sparse_points=points.astype(np.float32),
            sparse_colors=rgb,
            backend=self.name,
            random_weights=False,
        )
        return result, memory

    def localize(self, frames: Sequence[Frame]) -> list[LocalizationResult]:
        """Localize each frame against the last window's 3D points (see module docstring).

        Raises :class:`BackendError` when no window has been reconstructed; per-frame failures come back
        as results with ``extrinsics=None`` and a ``reason``.
        """
        if self._memory is None:
            raise BackendError("colmap: localize called before any window was reconstructed")
        return [self._localize_one(f) for f in frames]

    def _localize_one(self, frame: Frame) -> LocalizationResult:
        import cv2

        pc = self._pycolmap
        mem = self._memory
        if frame.K is not None:
            K = frame.K
        else:  # the window's estimate, rescaled to this image size
            K = scale_intrinsics(mem.K, frame.width / mem.image_size_hw[1], frame.height / mem.image_size_hw[0])

        def fail(reason: str, conf: float = 0.0) -> LocalizationResult:
            return LocalizationResult(frame.stamp_ns, frame.index, None, K=K, confidence=conf, reason=reason)

        xy, desc = self._extract(frame.image)
        if len(xy) < self.min_inliers or len(mem.descriptors) < 2:
            return fail(f"too few features ({len(xy)} query, {len(mem.descriptors)} memory)")
        kk = min(4, len(mem.descriptors))
        knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc, mem.descriptors, k=kk)
        best: dict[int, tuple[float, int]] = {}  # 3D point row -> (distance, query keypoint)
        for q, ms in enumerate(knn):
            if not ms:
                continue
            m0 = ms[0]
            p0 = int(mem.point_index[m0.trainIdx])
            second = next((m for m in ms[1:] if int(mem.point_index[m.trainIdx]) != p0), None)
            if second is not None and m0.distance > self.ratio * second.distance:
                continue
            if p0 not in best or m0.distance < best[p0][0]:
                best[p0] = (m0.distance, q)
        if len(best) < self.min_inliers:
            return fail(f"too few 2D-3D matches ({len(best)} < {self.min_inliers})")
        rows = np.fromiter(best.keys(), dtype=np.int64)
        qidx = np.array([best[r][1] for r in rows], dtype=np.int64)
        pts2d = xy[qidx]
        pts3d = mem.points[rows]
        camera = pc.Camera(model="PINHOLE", width=frame.width, height=frame.height,
                           params=_k_to_colmap_params(K))
        est = pc.AbsolutePoseEstimationOptions()
        est.ransac.max_error = self.ransac_max_error_px
        if hasattr(est.ransac, "random_seed"):
            est.ransac.random_seed = self.seed
        try:
            ans = pc.estimate_and_refine_absolute_pose(pts2d, pts3d, camera, est)
        except Exception as exc:  # noqa: BLE001 - pycolmap raises on degenerate input
            return fail(f"absolute pose failed: {exc}")
        if not ans:
            return fail(f"absolute pose RANSAC found no model ({len(rows)} matches)")
        n_in = int(ans["num_inliers"])
        ratio = n_in / float(len(rows))
        if n_in < self.min_inliers:
            return fail(f"too few inliers ({n_in} < {self.min_inliers})", conf=ratio)
        extr = np.asarray(ans["cam_from_world"].matrix(), dtype=np.float64)
        return LocalizationResult(frame.stamp_ns, frame.index, extr, K=K, confidence=float(ratio))

    def reset(self) -> None:
        """Drop the scene memory."""
        self._memory = None

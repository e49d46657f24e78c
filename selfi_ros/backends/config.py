"""One configuration dataclass per backend: its options, their defaults and their validation (no torch, no
pycolmap, no ROS: the node imports this module to declare its parameters without loading a backend).

Every field has a default of a simple type (bool, int, float, str) and a trailing comment giving its unit;
the node declares one ROS parameter per field (same name) of :class:`ColmapBackendConfig` and
:class:`VGGTBackendConfig`, so a field is a user-facing parameter. The oracle backend is driven by test
code (its ground truth is an object, not a parameter) and is not declared by the node.
A field name shared by two configs means the same thing and has the same type and default.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

#: ``pose_check`` modes of the vggt backend's Selfi pose check
POSE_CHECK_MODES = ("auto", "off", "flag", "reject")
#: ``dtype`` values of the vggt backend
VGGT_DTYPES = ("auto", "fp32", "bf16", "fp16")


class BackendConfigError(ValueError):
    """A backend option has an invalid value or does not exist for that backend."""


def config_from_options(cls: type, options: Mapping[str, Any]):
    """Build config ``cls`` from keyword ``options`` (each cast to the field's type), then validate it.

    Raises:
        BackendConfigError: an option the backend does not have (the message lists the ones it has), or a
            value that cannot be cast or fails validation.
    """
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BackendConfigError(f"{cls.__name__}: unknown option(s) {', '.join(unknown)}; "
                                 f"options: {', '.join(sorted(known))}")
    defaults = cls()
    kw = {}
    for k, v in options.items():
        typ = type(getattr(defaults, k))
        try:
            kw[k] = v if isinstance(v, typ) else (_parse_bool(v) if typ is bool else typ(v))
        except (TypeError, ValueError) as e:
            raise BackendConfigError(f"{cls.__name__}: option {k}={v!r} is not a {typ.__name__}") from e
    cfg = cls(**kw)
    cfg.validate()
    return cfg


def with_options(cls: type, config=None, **options):
    """``config`` (an instance of ``cls``; None: the defaults) with keyword ``options`` applied, cast and
    validated (:func:`config_from_options`): what a backend's ``__init__(config=None, **options)`` does.

    Raises:
        BackendConfigError: ``config`` is not a ``cls``, an unknown option, or an invalid value.
    """
    if config is None:
        return config_from_options(cls, options)
    if not isinstance(config, cls):
        raise BackendConfigError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    return config_from_options(cls, {**asdict(config), **options})


def _parse_bool(v) -> bool:
    if isinstance(v, str) and v.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return v.strip().lower() in ("true", "1", "yes", "on")
    if isinstance(v, (int, float)):
        return bool(v)
    raise ValueError(v)


@dataclass
class ColmapBackendConfig:
    """Options of the pycolmap backend (:class:`selfi_ros.backends.colmap.ColmapBackend`).

    Defaults are tuned for a 2-core CPU. Costs measured on TUM fr1_rpy (640x480) on such a machine shared
    with other jobs (load average 5-6; cProfile of ``benchmarks/bench_colmap.py``'s loop): SIFT of a
    keyframe 0.15 s at first octave 0 (at -1, the 2x upsampled octave, about 4x that; cost grows with
    ``max_image_size`` squared and with ``max_num_features``); one verified pair 45 ms (two ratio-test
    passes + RANSAC; ``pairs_per_keyframe`` of them per new keyframe, fewer when cached); COLMAP's pipeline
    on a window of 6 anchors 0.36 s (registration, triangulation, bundle adjustment over
    ``ba_local_num_images``); a tracked frame 6 ms of KLT (``track_max_points`` tracks) + a few ms of PnP; a
    SIFT-localized frame one extraction + ~20 ms of matching.
    """

    max_num_features: int = 2048  # SIFT features per image (COLMAP max_num_features; cost grows with it)
    max_image_size: int = 640  # longer image side for SIFT, larger images are downscaled (px; cost ~ its square)
    ratio: float = 0.8  # Lowe ratio of descriptor matching, pairwise and query-to-memory (ratio)
    min_inliers: int = 15  # fewer absolute-pose RANSAC inliers is a localization failure (matches)
    ransac_max_error_px: float = 4.0  # reprojection threshold of the absolute-pose RANSAC (px)
    min_registered: int = 2  # a window with fewer registered anchors fails (frames)
    num_threads: int = -1  # COLMAP threads for extraction and mapping; -1 = all cores
    seed: int = 0  # random seed of RANSAC and mapping (integer)
    work_dir: str = ""  # unused: windows are built in memory (an in-memory COLMAP database); kept for old configs
    peak_threshold: float = 0.004  # SIFT contrast threshold (COLMAP 0.0067; lower finds more on smooth texture)
    query_first_octave: int = 0  # SIFT first octave of SIFT-localized frames (-1 = 2x upsampled, COLMAP's default)
    anchor_first_octave: int = -1  # SIFT first octave of keyframes (0: ~2.5x faster, about half the points)
    upsample_max_side_px: int = 512  # keyframes with a longer side above this use first octave 0 (px; 0 = never)
    verbose: bool = False  # COLMAP's own INFO log (glog, to stderr); warnings and errors show either way
    feature_cache_size: int = 64  # keyframes whose SIFT stays cached for later windows and localization (frames)
    pairs_per_keyframe: int = 4  # each anchor is matched with this many following anchors (pairs; cost: 1 match each)
    grow_windows: bool = True  # register a window's new anchors into the previous window's model (else SfM from scratch)
    ba_local_num_images: int = 6  # images in COLMAP's local bundle adjustment (BA window; cost grows with it)
    min_tri_angle_deg: float = 1.5  # least triangulation angle of a kept 3D point (deg; 0.5 poses more of a rotating camera)
    track_non_keyframes: bool = True  # pose frames by KLT tracking of window points + PnP (SIFT only as fallback)
    track_max_points: int = 300  # most window points tracked per frame (points; KLT cost grows linearly)
    track_min_points: int = 40  # fewer inlier tracks: the frame is SIFT-localized too, the better pose re-seeds (points)
    track_fb_max_px: float = 1.0  # forward-backward KLT error above which a track is dropped (px)
    track_window_px: int = 21  # KLT search window side (px)
    track_levels: int = 3  # KLT pyramid levels above full resolution (levels)
    track_max_gap_s: float = 1.0  # never track from an image further apart in time than this (s)
    vlad_clusters: int = 16  # VLAD vocabulary size for place recognition (descriptor dimension 128 x this)

    def validate(self) -> None:
        """Raises :class:`BackendConfigError` on a value out of range."""
        if self.max_num_features < 16 or self.max_image_size < 32:
            raise BackendConfigError("max_num_features must be >= 16 and max_image_size >= 32 px")
        if not 0.0 < self.ratio <= 1.0:
            raise BackendConfigError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.min_inliers < 4 or self.ransac_max_error_px <= 0:
            raise BackendConfigError("min_inliers must be >= 4 and ransac_max_error_px > 0")
        if self.feature_cache_size < 2 or self.pairs_per_keyframe < 1 or self.ba_local_num_images < 2:
            raise BackendConfigError("feature_cache_size >= 2, pairs_per_keyframe >= 1 and ba_local_num_images >= 2 "
                                     "are needed")
        if self.track_max_points < 4 or self.track_min_points < 4 or self.track_fb_max_px <= 0:
            raise BackendConfigError("track_max_points and track_min_points must be >= 4, track_fb_max_px > 0")
        if self.track_window_px < 5 or self.track_levels < 0 or self.track_max_gap_s <= 0:
            raise BackendConfigError("track_window_px >= 5, track_levels >= 0 and track_max_gap_s > 0 are needed")
        if not 0.0 < self.min_tri_angle_deg < 90.0:
            raise BackendConfigError(f"min_tri_angle_deg must be in (0, 90), got {self.min_tri_angle_deg}")
        if self.vlad_clusters < 2:
            raise BackendConfigError(f"vlad_clusters must be >= 2, got {self.vlad_clusters}")


@dataclass
class VGGTBackendConfig:
    """Options of the VGGT / SAIL-Recon backend (:class:`selfi_ros.backends.vggt.VGGTBackend`)."""

    checkpoint: str = ""  # model weights: .pt / .safetensors file, folder or Hugging Face repo id
    allow_random_weights: bool = False  # without weights: RANDOM model, PLUMBING ONLY, outputs are meaningless
    model_config: str = "full"  # full (VGGT-1B shape) / tiny (random-weight plumbing and CPU tests)
    device: str = "auto"  # torch device: auto (cuda when available, else cpu) / cpu / cuda / cuda:N
    dtype: str = "auto"  # auto (bf16 on compute capability >= 8, fp16 below, fp32 on CPU) / fp32 / bf16 / fp16
    tokens_per_anchor: int = 0  # scene-memory patch tokens kept per anchor and layer; 0 = all (exact)
    query_batch_size: int = 8  # query frames per forward pass in localize (frames)
    image_width: int = 518  # network input width, a multiple of 14 (px)
    preprocess_mode: str = "crop"  # official VGGT preprocessing: crop / pad
    kv_source: str = "auto"  # blocks the queries attend with: auto / global_reloc_blocks / global_blocks
    localize_depth: bool = True  # also predict depth for localized query frames
    localize_points: bool = False  # also predict point maps for localized query frames
    memory_device: str = ""  # where scene memories live; empty = the model's device
    seed: int = 0  # random seed of the anchor token subsets (integer)
    memory_store_dir: str = ""  # folder keeping evicted window scene memories for relocalization; empty = off
    memory_store_windows: int = 8  # bound on stored scene memories, oldest deleted (windows)
    torch_threads: int = 0  # torch CPU threads (1 is best on small/shared CPUs); 0 = torch default (all cores)
    adapter: str = ""  # Selfi feature adapter (adapter.safetensors from train-adapter); empty = none
    pose_check: str = "auto"  # learned pose vs aligned-feature PnP: auto (flag with an adapter) / off / flag / reject
    pose_check_max_rot_deg: float = 5.0  # pose check: max rotation disagreement (deg)
    pose_check_max_rel_trans: float = 0.1  # pose check: max camera-centre disagreement / median anchor depth
    pose_check_anchors: int = 4  # pose check: anchors matched per query, nearest the learned pose (frames)
    feature_downsample: int = 2  # grid stride of stored anchor features for matching, PnP and BA (px of features)
    refine_window: bool = False  # bundle-adjust each window on aligned matches + Selfi affine depth correction
    refine_max_rot_deg: float = 5.0  # refinement: max pose change per anchor, else not applied (deg)
    refine_max_rel_trans: float = 0.1  # refinement: max centre shift per anchor / median depth (ratio)
    online_adapter_training: bool = False  # train the adapter in the background on own keyframes while idle
    online_clip_len: int = 6  # online training: keyframes per clip, taken from one window (<= window_size)
    online_eval_every: int = 50  # online training: steps between held-out evaluations
    online_min_gain: float = 0.005  # online training: held-out PCK@3 gain needed to swap the adapter in

    def validate(self) -> None:
        """Raises :class:`BackendConfigError` on a value out of range or a combination that cannot work."""
        if self.model_config not in ("full", "tiny"):
            raise BackendConfigError(f"model_config must be 'full' or 'tiny', got {self.model_config!r}")
        if self.dtype not in VGGT_DTYPES:
            raise BackendConfigError(f"dtype must be one of {', '.join(VGGT_DTYPES)}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise BackendConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.preprocess_mode not in ("crop", "pad"):
            raise BackendConfigError(f"preprocess_mode must be 'crop' or 'pad', got {self.preprocess_mode!r}")
        if self.kv_source not in ("auto", "global_reloc_blocks", "global_blocks"):
            raise BackendConfigError(f"kv_source must be auto, global_reloc_blocks or global_blocks, "
                                     f"got {self.kv_source!r}")
        if self.image_width < 14 or self.image_width % 14:
            raise BackendConfigError(f"image_width must be a positive multiple of 14, got {self.image_width}")
        if self.query_batch_size < 1 or self.memory_store_windows < 1:
            raise BackendConfigError("query_batch_size and memory_store_windows must be >= 1")
        if self.tokens_per_anchor < 0 or self.torch_threads < 0:
            raise BackendConfigError("tokens_per_anchor and torch_threads must be >= 0")
        if self.pose_check not in POSE_CHECK_MODES:
            raise BackendConfigError(f"pose_check must be one of {', '.join(POSE_CHECK_MODES)}, "
                                     f"got {self.pose_check!r}")
        if self.feature_downsample < 1 or self.pose_check_anchors < 1:
            raise BackendConfigError("feature_downsample and pose_check_anchors must be >= 1")
        if not self.adapter and (self.pose_check in ("flag", "reject") or self.refine_window
                                 or self.online_adapter_training):
            raise BackendConfigError(
                f"pose_check={self.pose_check!r} / refine_window / online_adapter_training need an adapter "
                "(adapter:=path/to/adapter.safetensors, from `selfi-ros train-adapter`)")
        if self.online_clip_len < 2 or self.online_eval_every < 1:
            raise BackendConfigError("online_clip_len must be >= 2 and online_eval_every >= 1")

    def effective_pose_check(self) -> str:
        """``pose_check`` with ``auto`` resolved: ``flag`` with an adapter, ``off`` without."""
        if self.pose_check == "auto":
            return "flag" if self.adapter else "off"
        return self.pose_check


#: backend name -> config class, for the backends the node can build from parameters
NODE_BACKEND_CONFIGS: dict[str, type] = {"colmap": ColmapBackendConfig, "vggt": VGGTBackendConfig}

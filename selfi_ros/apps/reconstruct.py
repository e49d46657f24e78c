"""`selfi-ros reconstruct`: run the streaming :class:`~selfi_ros.engine.engine.Engine` offline on an image
folder, a TUM RGB-D sequence or a ROS 2 bag, and write its outputs (no ROS graph needed).

    selfi-ros reconstruct --bag data/sample/tum_fr1_rpy.mcap --out out/recon --gt data/sample/groundtruth.txt
    selfi-ros reconstruct --tum DIR --out out/recon [--every 3]   # rgb.txt, camera_info.yaml, groundtruth.txt
    selfi-ros reconstruct --images DIR --out out/recon [--camera-info camera.yaml | --fx 500 --fy 500 --cx 320 --cy 240]
    selfi-ros reconstruct --bag BAG --out out/again --map out/recon/map --localization-only   # reuse a saved map

Lens distortion: images are rectified before the engine (:class:`selfi_ros.data.camera_model.Rectifier`,
plumb_bob / rational_polynomial / equidistant) with the calibration of ``--camera-info FILE.yaml`` (ROS
camera_calibration format), of the TUM folder's ``camera_info.yaml``, or of the bag's CameraInfo (the node's
input code); the frames then carry the rectified intrinsics. ``--no-rectify`` uses the raw images with the
calibration's K as a pinhole camera (distortion ignored: only for comparisons).

While it runs, a progress bar (tqdm, on stderr, only when stderr is a terminal and not ``--quiet``) shows
frames, frames/s, keyframes, windows and posed frames; at the end a short summary (frames, posed, keyframes,
windows, map segments, run time, and ATE RMSE after Sim(3) alignment (evo) when ground truth is known:
``--gt``, or the TUM folder's ``groundtruth.txt``) is printed unless ``--quiet``.

Outputs in ``--out`` (written by :meth:`Engine.save`): ``trajectory.tum`` (camera-to-map poses, stamps
from the bag's image headers, or the frame index in seconds for a folder, files in sorted name order),
``map.ply``, ``cameras.json`` (per frame: timestamp, image file or index, extrinsics camera-from-world
3x4, intrinsics 3x3, width, height) and ``metadata.json``; plus ``summary.json`` with the engine status;
with a backend that keeps window memories (colmap, vggt, oracle) also the reusable map in ``OUT/map``
(:meth:`Engine.save_map`), which ``--map DIR`` loads again (``--localization-only``: frames are only localized
against it, in its frame; else the map is extended).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Iterator, Optional, Sequence

import numpy as np

from selfi_ros.engine.types import Frame

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")


def frames_from_folder(folder: str, K: Optional[np.ndarray] = None, rate_hz: float = 1.0,
                       frame_id: str = "camera") -> Iterator[Frame]:
    """Yield a :class:`Frame` per image file of ``folder`` in sorted file-name order.

    Stamps are ``index / rate_hz`` seconds (integer ns), so with the default 1 Hz the TUM stamp of a frame
    is its index. Unreadable files are skipped with a warning (and not given an index).

    Raises:
        FileNotFoundError: folder missing or holding no image files.
    """
    import cv2

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    index = 0
    for name in names:
        bgr = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
        if bgr is None:
            log.warning("skipping unreadable image %s", name)
            continue
        yield Frame(stamp_ns=int(round(index * 1e9 / rate_hz)), image=np.ascontiguousarray(bgr[:, :, ::-1]),
                    K=K, frame_id=frame_id, index=index, source=name)
        index += 1


def frames_from_bag(path: str, image_topic: Optional[str] = None, camera_info_topic: Optional[str] = None,
                    use_camera_info: bool = True, K: Optional[np.ndarray] = None,
                    input_config=None) -> Iterator[Frame]:
    """Yield a :class:`Frame` per accepted image message of an MCAP ROS 2 bag (stamp = image header stamp),
    made by the node's own input code (:class:`selfi_ros.ros.input.FrameInput`), so that a bag gives the
    same frames here as through ``selfi_node``.

    ``image_topic``: a ``sensor_msgs/Image`` or ``CompressedImage`` topic (None: the first image topic in
    the bag). Intrinsics: ``K`` if given (no CameraInfo read), else each image is paired with the
    ``CameraInfo`` on ``camera_info_topic`` (None: the ``camera_info`` topic next to the image topic, or the
    only CameraInfo topic) by the node's rules: nearest stamp within ``sync_threshold_ms``, else after
    ``camera_info_wait_s`` of bag time (message log time) the latest one; size mismatches and invalid
    CameraInfos reject the image; without any CameraInfo topic (or ``use_camera_info=False``) K is None.
    ``input_config``: an :class:`~selfi_ros.ros.input.InputConfig` (default: the node's default parameters).
    Rejected and undecodable messages are skipped with a warning; ``Frame.index`` counts image messages.

    Raises:
        FileNotFoundError / ValueError: no bag, or no image topic in it.
    """
    from dataclasses import replace

    from selfi_ros.ros.bag import bag_topics, read_messages
    from selfi_ros.ros.input import FrameInput, InputConfig
    from selfi_ros.ros.params import NodeConfig

    if not os.path.exists(path):
        raise FileNotFoundError(f"bag not found: {path}")
    topics = bag_topics(path)
    image_types = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
    if image_topic is None:
        cands = sorted(t for t, ty in topics.items() if ty in image_types)
        if not cands:
            raise ValueError(f"{path}: no Image/CompressedImage topic (topics: {topics})")
        image_topic = cands[0]
    elif image_topic not in topics:
        raise ValueError(f"{path}: topic {image_topic} not in bag (topics: {sorted(topics)})")
    if camera_info_topic is None and use_camera_info and K is None:
        infos = sorted(t for t, ty in topics.items() if ty == "sensor_msgs/msg/CameraInfo")
        base = image_topic.rsplit("/", 2 if image_topic.endswith("/compressed") else 1)[0]
        near = [t for t in infos if t.startswith(base + "/")]
        camera_info_topic = (near or infos or [None])[0]
    cfg = input_config if input_config is not None else InputConfig.from_node_config(NodeConfig())
    pair = bool(camera_info_topic) and K is None and use_camera_info
    if not pair:
        cfg = replace(cfg, use_camera_info=False, fixed_K=None if K is None else np.asarray(K, dtype=np.float64))
    fin = FrameInput(cfg)

    def accepted(events):
        for ev in events:
            if ev.kind == "frame":
                ev.frame.source = f"{image_topic}#{ev.frame.index}"
                yield ev.frame
            elif ev.kind in ("rejected", "dropped", "warning"):
                log.warning("%s: %s (%s)", path, ev.detail, ev.reason)

    for m in read_messages(path, topics=[image_topic] + ([camera_info_topic] if pair else [])):
        now_s = m.log_time_ns * 1e-9
        if pair and m.topic == camera_info_topic:
            yield from accepted(fin.add_camera_info(m.message, now_s))
        else:
            yield from accepted(fin.add_image(m.message, now_s))
    yield from accepted(fin.finish())


def _progress_bar(total: Optional[int], enabled: bool):
    """A tqdm bar on stderr (frames; frames/s is tqdm's rate), or None when disabled or stderr is no terminal."""
    if not enabled or not getattr(sys.stderr, "isatty", lambda: False)():
        return None
    from tqdm import tqdm

    return tqdm(total=total or None, unit="frame", desc="reconstruct", dynamic_ncols=True, file=sys.stderr,
                smoothing=0.1)


def reconstruct(frames: Sequence[Frame] | Iterator[Frame], out_dir: str, backend_name: str = "colmap",
                backend_options: Optional[dict] = None, config=None, max_frames: int = 0,
                every: int = 1, gt_path: Optional[str] = None, progress: bool = False,
                total: Optional[int] = None, gt_max_diff: float = 0.02, map_dir: Optional[str] = None) -> dict:
    """Feed ``frames`` through a fresh Engine with backend ``backend_name`` and save into ``out_dir``.

    Args:
        every: use every ``every``-th frame of ``frames`` (1: all).
        max_frames: stop after this many used frames (0: all).
        gt_path: TUM ground truth; when given the ATE RMSE after Sim(3) alignment (evo, stamps associated
            within ``gt_max_diff`` s) is added to the summary (``ate_rmse``, ``ate_matched``; ``ate_error`` when
            it cannot be computed, e.g. fewer than 3 associated poses) with ``ate_trivial`` (the ATE of a
            constant estimate, :class:`selfi_ros.apps.evaluate.EvalResult`).
        progress: show a tqdm bar on stderr (only if stderr is a terminal); ``total``: frames expected
            before ``every`` and ``max_frames`` (None: unknown).
        map_dir: a map saved by :meth:`Engine.save_map` (``OUT/map`` of an earlier run) loaded before the
            first frame (:meth:`Engine.load_map`, checked against the first frame's K and size); frames are
            then posed in that map's frame. With ``config.localization_only`` they are only localized
            against it (no keyframes, no windows); otherwise the map is extended.

    The outputs are :meth:`Engine.save`'s (with a backend that keeps window memories also the reusable map in
    ``out_dir/map``, key ``map_dir`` of ``outputs``).

    Returns a summary dict: frames, rejected, poses, keyframes, windows, window_failures, map_segments,
    run_time_s (engine time, s), frames_per_s, backend, random_weights, outputs (paths), status (the
    engine status as a dict) and the ATE fields above.

    Raises:
        ValueError: an unknown backend or ``every`` < 1; TypeError: an object that is not a Backend;
        selfi_ros.engine.map_store.MapLoadError (a ValueError): ``map_dir`` cannot be loaded (one-line reason);
        backend construction errors propagate.
    """
    from dataclasses import asdict

    from selfi_ros.backends import make_backend
    from selfi_ros.engine.engine import Engine, EngineConfig
    from selfi_ros.engine.io import write_json

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    backend = make_backend(backend_name, **(backend_options or {}))
    engine = Engine(backend, config or EngineConfig())
    if backend.random_weights:
        log.warning("*** backend %s uses RANDOMLY INITIALISED weights: outputs are plumbing only ***", backend_name)
    expected = None
    if total:
        expected = -(-int(total) // every)
        if max_frames:
            expected = min(expected, max_frames)
    bar = _progress_bar(expected, progress)
    t0 = time.perf_counter()
    n = 0
    rejected = 0
    last_postfix = 0.0
    loaded = None
    try:
        for k, fr in enumerate(frames):
            if k % every:
                continue
            if max_frames and n >= max_frames:
                break
            if map_dir and loaded is None:
                camera = None if fr.K is None else (fr.K, fr.width, fr.height)
                loaded = engine.load_map(map_dir, camera) or {}
            out = engine.process_frame(fr)
            n += 1
            rejected += bool(out.rejected)
            if bar is not None:
                bar.update(1)
                now = time.perf_counter()
                if now - last_postfix > 0.5:
                    last_postfix = now
                    st = engine.status()
                    bar.set_postfix_str(f"keyframes {st.keyframes}, windows {st.windows}, posed {st.poses}",
                                        refresh=False)
    finally:
        if bar is not None:
            bar.close()
    run_s = time.perf_counter() - t0
    os.makedirs(out_dir, exist_ok=True)
    paths = engine.save(out_dir)
    st = engine.status()
    summary = {"frames": n, "rejected": rejected, "poses": len(engine.trajectory()), "keyframes": st.keyframes,
               "windows": st.windows, "window_failures": st.window_failures, "map_segments": st.map_segments,
               "run_time_s": run_s, "frames_per_s": n / run_s if run_s > 0 else 0.0,
               "backend": backend_name, "random_weights": bool(backend.random_weights),
               "outputs": paths, "status": asdict(st)}
    if map_dir:
        summary.update(map_loaded=os.path.abspath(map_dir), localization_only=bool(engine.config.localization_only))
    if gt_path:
        from selfi_ros.apps.evaluate import evaluate

        summary["groundtruth"] = os.path.abspath(gt_path)
        try:
            res = evaluate(paths["trajectory"] if "trajectory" in paths else os.path.join(out_dir, "trajectory.tum"),
                           gt_path, max_diff=gt_max_diff)
            summary.update(ate_rmse=res.ate_rmse, ate_matched=res.matched, sim3_scale=res.scale,
                           gt_path_length=res.gt_path_length, ate_trivial=res.ate_trivial,
                           rpe_rot_rmse_deg=res.rpe_rot_rmse_deg, rpe_rot_median_deg=res.rpe_rot_median_deg,
                           rpe_rot_trivial_deg=res.rpe_rot_trivial_deg)
        except (ValueError, FileNotFoundError) as e:
            summary["ate_error"] = str(e)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def format_summary(s: dict) -> str:
    """The short end-of-run summary of :func:`reconstruct`'s dict (two or three lines)."""
    lines = [f"frames {s['frames']} (rejected {s['rejected']}), posed {s['poses']}, keyframes {s['keyframes']}, "
             f"windows {s['windows']} (failed attempts {s['window_failures']}), map segments {s['map_segments']}; "
             f"{s['run_time_s']:.1f} s ({s['frames_per_s']:.2f} frames/s, backend {s['backend']})"]
    if "ate_rmse" in s:
        lines.append(f"ATE RMSE (Sim(3)-aligned, evo): {s['ate_rmse']:.4g} over {s['ate_matched']} associated poses "
                     f"(a constant estimate: {s['ate_trivial']:.4g}; ground-truth path {s['gt_path_length']:.3g}); "
                     f"rotation per step: RPE median {s['rpe_rot_median_deg']:.3g} deg, RMSE "
                     f"{s['rpe_rot_rmse_deg']:.3g} deg (a constant estimate: {s['rpe_rot_trivial_deg']:.3g} deg)")
    elif "ate_error" in s:
        lines.append(f"ATE not computed: {s['ate_error']}")
    if s.get("map_loaded"):
        lines.append(f"map loaded from {s['map_loaded']}" + (" (localization only)" if s.get("localization_only") else
                                                            " (extended)"))
    out = os.path.dirname(s['outputs'].get('trajectory', '')) or '.'
    lines.append(f"outputs in {out}" + (f" (reusable map: {s['outputs']['map_dir']})" if s['outputs'].get('map_dir')
                                        else ""))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images (sorted file-name order)")
    src.add_argument("--tum", metavar="DIR",
                     help="TUM RGB-D sequence folder: rgb.txt (stamps), camera_info.yaml when present "
                          "(rectified), groundtruth.txt when present (ATE)")
    src.add_argument("--bag", help="MCAP ROS 2 bag with Image or CompressedImage (+ CameraInfo)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--backend", default="colmap", help="colmap (CPU, default), vggt, oracle")
    parser.add_argument("--checkpoint", default=None, help="model weights for learned backends (vggt)")
    parser.add_argument("--device", default=None, help="torch device for learned backends (cpu, cuda)")
    parser.add_argument("--image-topic", default=None, help="bag image topic (default: the first one)")
    parser.add_argument("--camera-info-topic", default=None, help="bag CameraInfo topic (default: next to the image)")
    parser.add_argument("--camera-info", metavar="FILE.yaml", default=None,
                        help="calibration in the ROS camera_calibration YAML format (K, distortion, R, P): "
                             "images are rectified with it (replaces a bag's CameraInfo and the TUM folder's YAML)")
    parser.add_argument("--no-rectify", action="store_true",
                        help="do not undistort: use the calibration's K as a pinhole camera (comparisons only)")
    parser.add_argument("--no-camera-info", action="store_true", help="ignore CameraInfo: estimate intrinsics")
    parser.add_argument("--fx", type=float, default=None, help="known intrinsics (pixels); needs --fy/--cx/--cy")
    parser.add_argument("--fy", type=float, default=None)
    parser.add_argument("--cx", type=float, default=None)
    parser.add_argument("--cy", type=float, default=None)
    parser.add_argument("--rate", type=float, default=1.0, help="frame rate used for folder stamps (Hz)")
    parser.add_argument("--start-s", type=float, default=0.0, help="TUM: start this long after the first image (s)")
    parser.add_argument("--duration-s", type=float, default=0.0, help="TUM: only this long (s; 0: to the end)")
    parser.add_argument("--every", type=int, default=1, help="use every N-th frame (1: all)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    parser.add_argument("--gt", default=None, help="ground truth (TUM) for the ATE of the summary "
                                                   "(default with --tum: its groundtruth.txt)")
    parser.add_argument("--gt-max-diff", type=float, default=0.02, help="stamp association tolerance (s)")
    parser.add_argument("--window-size", type=int, default=None, help="EngineConfig.window_size")
    parser.add_argument("--keyframe-min-flow-px", type=float, default=None, help="EngineConfig.keyframe_min_flow_px")
    parser.add_argument("--keyframe-min-interval-s", type=float, default=None,
                        help="EngineConfig.keyframe_min_interval_s")
    parser.add_argument("--voxel-size", type=float, default=None, help="EngineConfig.voxel_size (map units)")
    parser.add_argument("--backend-option", action="append", default=[], metavar="NAME=VALUE",
                        help="backend constructor option (repeatable; VALUE read as YAML), e.g. num_threads=1 "
                             "(colmap: deterministic), tokens_per_anchor=300 (vggt)")
    parser.add_argument("--map", metavar="DIR", default=None,
                        help="load this saved map (OUT/map of an earlier run, or a node's ~/save_map) first: poses "
                             "are in its frame, and it is extended unless --localization-only")
    parser.add_argument("--localization-only", action="store_true",
                        help="with --map: only localize frames against the loaded map (no keyframes, no windows)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    parser.add_argument("-v", "--verbose", action="store_true")


def _config_from_args(args):
    from selfi_ros.engine.engine import EngineConfig

    cfg = EngineConfig()
    for name in ("window_size", "keyframe_min_flow_px", "keyframe_min_interval_s", "voxel_size"):
        v = getattr(args, name, None)
        if v is not None:
            setattr(cfg, name, type(getattr(cfg, name))(v))
    return cfg


def _backend_options(items: Sequence[str]) -> dict:
    """``["name=value", ...]`` -> {name: YAML-parsed value}; raises SystemExit on a malformed item."""
    import yaml

    opts = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--backend-option wants NAME=VALUE, got {item!r}")
        opts[name.strip()] = yaml.safe_load(value)
    return opts


def camera_from_yaml(path: str, rectify: bool = True):
    """``(K, rectify_fn)`` of a camera_calibration YAML: with ``rectify`` the
    :class:`~selfi_ros.data.camera_model.Rectifier`'s ``K_rect`` and its ``rectify`` (image -> (image_rect,
    K_rect)); without, the raw images' K (binning/ROI applied) and None.

    Raises:
        SystemExit: the file cannot be read or its model is not supported (one line naming the file).
    """
    from selfi_ros.data.camera_model import CameraModel, CameraModelError, Rectifier

    try:
        model = CameraModel.from_yaml(path)
        if not rectify:
            return model.intrinsics(), None
        rect = Rectifier(model)
    except CameraModelError as e:
        msg = str(e)
        raise SystemExit(msg if path in msg else f"{path}: {msg}") from None
    return rect.K_rect, (None if rect.is_identity else rect.rectify)


def _rectified(frames: Iterator[Frame], rectify_fn, K) -> Iterator[Frame]:
    for fr in frames:
        if rectify_fn is not None:
            fr.image, fr.K = rectify_fn(fr.image)
        else:
            fr.K = K
        yield fr


def _bag_image_count(path: str, image_topic: Optional[str]) -> Optional[int]:
    """Image messages in a bag (MCAP summary statistics), None when unknown."""
    try:
        from mcap.reader import make_reader

        with open(path, "rb") as fh:
            s = make_reader(fh).get_summary()
        if s is None or s.statistics is None:
            return None
        types = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
        ids = [cid for cid, ch in s.channels.items()
               if (ch.topic == image_topic if image_topic else s.schemas[ch.schema_id].name in types)]
        if not image_topic:
            ids = sorted(ids, key=lambda c: s.channels[c].topic)[:1]
        return int(sum(s.statistics.channel_message_counts.get(c, 0) for c in ids)) or None
    except Exception:  # noqa: BLE001 - the count only sizes the progress bar
        return None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    K = None
    kv = [args.fx, args.fy, args.cx, args.cy]
    if any(v is not None for v in kv):
        if not all(v is not None for v in kv):
            raise SystemExit("--fx, --fy, --cx and --cy must be given together")
        if args.camera_info:
            raise SystemExit("--camera-info and --fx/--fy/--cx/--cy exclude each other")
        K = np.array([[args.fx, 0, args.cx], [0, args.fy, args.cy], [0, 0, 1]], dtype=np.float64)
    if args.every < 1:
        raise SystemExit(f"--every must be >= 1, got {args.every}")
    if args.localization_only and not args.map:
        raise SystemExit("--localization-only needs --map DIR (a saved map to localize against)")
    if args.map and not os.path.isdir(args.map):
        raise SystemExit(f"--map {args.map}: no such folder")
    rectify = not args.no_rectify
    gt = args.gt
    total = None
    rect_fn = None
    if args.camera_info:
        K, rect_fn = camera_from_yaml(args.camera_info, rectify)
    if args.tum:
        from selfi_ros.data.tum import TumSequence, frames_from_tum

        try:
            seq = TumSequence.open(args.tum)
            images = seq.select(args.start_s, args.duration_s)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(str(e)) from None
        if not args.camera_info and K is None and seq.camera_yaml:
            K, rect_fn = camera_from_yaml(seq.camera_yaml, rectify)
        gt = gt or seq.groundtruth_path
        total = len(images)
        frames = frames_from_tum(images, K=K, rectify=rect_fn)
    elif args.images:
        frames = frames_from_folder(args.images, K=K, rate_hz=args.rate)
        if args.camera_info:
            frames = _rectified(frames, rect_fn, K)
        total = sum(1 for n in os.listdir(args.images) if n.lower().endswith(IMAGE_EXTENSIONS)) \
            if os.path.isdir(args.images) else None
    else:
        input_config = None
        if not rectify:
            from dataclasses import replace

            from selfi_ros.ros.input import InputConfig
            from selfi_ros.ros.params import NodeConfig

            input_config = replace(InputConfig.from_node_config(NodeConfig()), rectify=False)
        if args.camera_info:  # the file's calibration replaces the bag's CameraInfo
            frames = _rectified(frames_from_bag(args.bag, args.image_topic, use_camera_info=False),
                                rect_fn, K)
        else:
            frames = frames_from_bag(args.bag, args.image_topic, args.camera_info_topic,
                                     use_camera_info=not args.no_camera_info, K=K, input_config=input_config)
        total = _bag_image_count(args.bag, args.image_topic) if os.path.exists(args.bag) else None
    opts = _backend_options(args.backend_option)
    if args.checkpoint:
        opts["checkpoint"] = args.checkpoint
    if args.device:
        opts["device"] = args.device
    config = _config_from_args(args)
    config.localization_only = bool(args.localization_only)
    try:
        summary = reconstruct(frames, args.out, args.backend, opts, config, args.max_frames,
                              every=args.every, gt_path=gt, progress=not args.quiet, total=total,
                              gt_max_diff=args.gt_max_diff, map_dir=args.map)
    except ValueError as e:
        from selfi_ros.engine.map_store import MapLoadError

        if not isinstance(e, MapLoadError):
            raise
        print(f"selfi-ros reconstruct: cannot load the map {args.map}: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(format_summary(summary))
    return 0 if summary["poses"] > 0 else 1

"""`selfi-ros reconstruct`: run the streaming :class:`~selfi_ros.engine.engine.Engine` offline on an image
folder or a ROS 2 bag, and write its outputs (no ROS graph needed).

    selfi-ros reconstruct --bag data/sample/woodbox_orbit.mcap --out out/recon
    selfi-ros reconstruct --images DIR --out out/recon [--fx 500 --fy 500 --cx 320 --cy 240]

Outputs in ``--out`` (written by :meth:`Engine.save`): ``trajectory.tum`` (camera-to-map poses, stamps
from the bag's image headers, or the frame index in seconds for a folder, files in sorted name order),
``map.ply``, ``cameras.json`` (per frame: timestamp, image file or index, extrinsics camera-from-world
3x4, intrinsics 3x3, width, height) and ``metadata.json``; plus ``summary.json`` with the engine status.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
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


def reconstruct(frames: Sequence[Frame] | Iterator[Frame], out_dir: str, backend_name: str = "colmap",
                backend_options: Optional[dict] = None, config=None, max_frames: int = 0) -> dict:
    """Feed ``frames`` through a fresh Engine with backend ``backend_name`` and save into ``out_dir``.

    Returns a summary dict (paths of the outputs, engine status, frames, poses, run time in s).
    Raises ValueError for an unknown backend, TypeError for an object that is not a Backend; backend
    construction errors propagate.
    """
    from dataclasses import asdict

    from selfi_ros.backends import make_backend
    from selfi_ros.engine.engine import Engine, EngineConfig

    backend = make_backend(backend_name, **(backend_options or {}))
    engine = Engine(backend, config or EngineConfig())
    if backend.random_weights:
        log.warning("*** backend %s uses RANDOMLY INITIALISED weights: outputs are plumbing only ***", backend_name)
    t0 = time.perf_counter()
    n = 0
    rejected = 0
    for fr in frames:
        if max_frames and n >= max_frames:
            break
        out = engine.process_frame(fr)
        n += 1
        rejected += bool(out.rejected)
    run_s = time.perf_counter() - t0
    os.makedirs(out_dir, exist_ok=True)
    paths = engine.save(out_dir)
    st = engine.status()
    summary = {"frames": n, "rejected": rejected, "poses": len(engine.trajectory()), "run_time_s": run_s,
               "backend": backend_name, "random_weights": bool(backend.random_weights),
               "outputs": paths, "status": asdict(st)}
    from selfi_ros.engine.io import write_json

    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images (sorted file-name order)")
    src.add_argument("--bag", help="MCAP ROS 2 bag with Image or CompressedImage (+ CameraInfo)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--backend", default="colmap", help="colmap (CPU, default), vggt, oracle")
    parser.add_argument("--checkpoint", default=None, help="model weights for learned backends (vggt)")
    parser.add_argument("--device", default=None, help="torch device for learned backends (cpu, cuda)")
    parser.add_argument("--image-topic", default=None, help="bag image topic (default: the first one)")
    parser.add_argument("--camera-info-topic", default=None, help="bag CameraInfo topic (default: next to the image)")
    parser.add_argument("--no-camera-info", action="store_true", help="ignore CameraInfo: estimate intrinsics")
    parser.add_argument("--fx", type=float, default=None, help="known intrinsics (pixels); needs --fy/--cx/--cy")
    parser.add_argument("--fy", type=float, default=None)
    parser.add_argument("--cx", type=float, default=None)
    parser.add_argument("--cy", type=float, default=None)
    parser.add_argument("--rate", type=float, default=1.0, help="frame rate used for folder stamps (Hz)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    parser.add_argument("--window-size", type=int, default=None, help="EngineConfig.window_size")
    parser.add_argument("--keyframe-min-flow-px", type=float, default=None, help="EngineConfig.keyframe_min_flow_px")
    parser.add_argument("--voxel-size", type=float, default=None, help="EngineConfig.voxel_size (map units)")
    parser.add_argument("--backend-option", action="append", default=[], metavar="NAME=VALUE",
                        help="backend constructor option (repeatable; VALUE read as YAML), e.g. num_threads=1 "
                             "(colmap: deterministic), tokens_per_anchor=300 (vggt)")
    parser.add_argument("-v", "--verbose", action="store_true")


def _config_from_args(args):
    from selfi_ros.engine.engine import EngineConfig

    cfg = EngineConfig()
    for name in ("window_size", "keyframe_min_flow_px", "voxel_size"):
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


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    K = None
    kv = [args.fx, args.fy, args.cx, args.cy]
    if any(v is not None for v in kv):
        if not all(v is not None for v in kv):
            raise SystemExit("--fx, --fy, --cx and --cy must be given together")
        K = np.array([[args.fx, 0, args.cx], [0, args.fy, args.cy], [0, 0, 1]], dtype=np.float64)
    if args.images:
        frames = frames_from_folder(args.images, K=K, rate_hz=args.rate)
    else:
        frames = frames_from_bag(args.bag, args.image_topic, args.camera_info_topic,
                                 use_camera_info=not args.no_camera_info, K=K)
    opts = _backend_options(args.backend_option)
    if args.checkpoint:
        opts["checkpoint"] = args.checkpoint
    if args.device:
        opts["device"] = args.device
    summary = reconstruct(frames, args.out, args.backend, opts, _config_from_args(args), args.max_frames)
    st = summary["status"]
    print(json.dumps({k: summary[k] for k in ("frames", "rejected", "poses", "run_time_s", "backend")}))
    print(f"keyframes {st.get('keyframes')}, windows {st.get('windows')}, map points {st.get('map_points')}; "
          f"outputs in {args.out}")
    return 0 if summary["poses"] > 0 else 1

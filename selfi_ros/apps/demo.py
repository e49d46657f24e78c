"""`selfi-ros demo`: the main job end to end over DDS on a bundled sample bag.

Samples (``--sample``, :data:`selfi_ros.data.SAMPLES`): ``tum_fr1_rpy`` (default) is 12 s of the REAL TUM
RGB-D freiburg1_rpy sequence (Sturm et al., IROS 2012, CC BY 4.0): distorted JPEG images at 10 Hz with a
CameraInfo carrying the plumb_bob distortion (the node rectifies), ground truth from motion capture (metres);
``woodbox`` is the POV-Ray rendering (exact ground truth, scene units). ``--bag`` plays any other bag (its
ground truth: ``--gt``, else ``<stem>_groundtruth.txt`` beside it, else its ``/ground_truth/pose`` topic).

Three processes, all with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a demo ``ROS_DOMAIN_ID``:

1. the node (``python -m selfi_ros.ros.node``, backend ``colmap`` by default, CPU, no weights);
2. the recorder (``python -m selfi_ros.ros.recorder``: /tf, the map and window PointCloud2, status, and
   the image topic for latency);
3. the player (``python -m selfi_ros.cli play``: image + CameraInfo of the bag at ``--rate``; the ground
   truth topic is not played).

When the player is done and the node has drained its queue (no new pose for ``--settle`` seconds), the
node and recorder are stopped with SIGINT. Written to ``--out`` (default ``out/demo``):
``trajectory.tum`` (``map -> camera`` poses received on /tf), ``map.ply`` (last map cloud), ``plot.png``
(top view of the trajectory against ground truth and of the cloud, after Sim(3) alignment),
``summary.json`` (the figures printed), and the logs of the three processes.

Printed: frames in, frames dropped, keyframes, windows, latency image -> TF (p50/p95; see
:mod:`selfi_ros.ros.recorder` for how it is measured), ATE RMSE after Sim(3) alignment (evo), run time.
Exit status 1 when no pose or no cloud arrived, 2 when a process failed to start or stop cleanly.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Optional

from selfi_ros.data import (CAMERA_FRAME, CAMERA_INFO_TOPIC, DEFAULT_SAMPLE, GT_TOPIC, IMAGE_TOPIC, SAMPLES,
                            TUM_SAMPLE_BAG)

#: the folder holding this ``selfi_ros`` package (a checkout or site-packages): first on the children's
#: PYTHONPATH, so the node, recorder and player run the same code as the demo
PACKAGE_PARENT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULT_DOMAIN_ID = 71

#: playback speed of each bundled sample when ``--rate`` is not given. The real sample is hand-held and fast
#: (50-70 deg/s) and the CPU colmap backend needs about a second per window: at half its recorded rate (12 s
#: played in 24 s) the node posed 77 of 120 frames in a measured run under load (rotation error per step
#: 0.82 deg against 9.2 deg for a constant estimate; at the recorded rate 40 poses and 1.5 deg, the margin
#: this keeps for a slower or busier machine; benchmarks/results). The rendered sample runs at its recorded
#: 5 Hz. Any other bag: 1.0.
SAMPLE_RATES = {"tum_fr1_rpy": 0.5, "woodbox": 1.0}

#: node parameters the demo sets: only the sample's topics and transport (JPEG images); everything else is
#: the node's default (config/selfi.yaml), so the demo shows what a robot gets out of the box
DEMO_NODE_PARAMS = {
    "image_topic": IMAGE_TOPIC.rsplit("/compressed", 1)[0],
    "image_transport": "compressed",
    "camera_info_topic": CAMERA_INFO_TOPIC,
}


def demo_env(domain_id: int, log_dir: str) -> dict:
    """Environment of every demo process: local-only DDS discovery, its own domain, a writable log folder,
    the ament prefix of this interpreter, and this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env["ROS_LOG_DIR"] = log_dir
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _param_arg(k: str, v) -> str:
    if isinstance(v, bool):
        v = "true" if v else "false"
    return f"{k}:={v}"


def gt_from_bag(bag: str, topic: str, out_path: str) -> Optional[str]:
    """Write the ``geometry_msgs/PoseStamped`` messages of ``topic`` as TUM; None if the bag has none."""
    from selfi_ros.ros.bag import bag_topics, read_messages
    from selfi_ros.ros.conversions import pose_to_matrix, stamp_to_ns
    from selfi_ros.engine.io import write_tum
    from selfi_ros.engine.types import PoseEstimate

    if topic not in bag_topics(bag):
        return None
    poses = [PoseEstimate(stamp_to_ns(m.message.header.stamp), pose_to_matrix(m.message.pose))
             for m in read_messages(bag, topics=[topic])]
    if not poses:
        return None
    return write_tum(out_path, poses)


def count_messages(bag: str, topic: str) -> int:
    """Messages on ``topic`` in ``bag`` (from the MCAP summary)."""
    from mcap.reader import make_reader

    with open(bag, "rb") as fh:
        s = make_reader(fh).get_summary()
    if s is None or s.statistics is None:
        return 0
    ids = [cid for cid, ch in s.channels.items() if ch.topic == topic]
    return int(sum(s.statistics.channel_message_counts.get(cid, 0) for cid in ids))


def _read_progress(path: str) -> dict:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _stop(proc: subprocess.Popen, name: str, timeout: float = 20.0) -> int:
    """SIGINT, then SIGTERM, then SIGKILL (each after ``timeout`` s); returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"[demo] {name} did not stop on {sig.name}", file=sys.stderr)
    proc.kill()
    return proc.wait()


def resolve_sample(sample: str = DEFAULT_SAMPLE, bag: Optional[str] = None,
                   rate: Optional[float] = None) -> tuple[str, float]:
    """(bag, playback rate) of the demo: ``bag`` if given (rate default 1.0), else the bundled ``sample``'s
    bag at its :data:`SAMPLE_RATES` rate; an explicit ``rate`` wins.

    Raises:
        ValueError: an unknown sample name or a rate <= 0.
    """
    if not bag and sample not in SAMPLES:
        raise ValueError(f"unknown sample {sample!r}; choose from {', '.join(sorted(SAMPLES))}")
    out_rate = float(rate) if rate is not None else (1.0 if bag else SAMPLE_RATES.get(sample, 1.0))
    if not out_rate > 0:
        raise ValueError(f"--rate must be > 0, got {rate}")
    return (bag or SAMPLES[sample][0]), out_rate


def default_groundtruth(bag: str, out_dir: str) -> Optional[str]:
    """Ground truth of ``bag``: a bundled sample's file, else ``<stem>_groundtruth.txt`` / ``<stem>.tum``
    beside the bag, else its :data:`~selfi_ros.data.GT_TOPIC` poses written to ``out_dir/groundtruth.tum``;
    None when there is none."""
    for sample_bag, sample_gt in SAMPLES.values():
        if os.path.abspath(bag) == os.path.abspath(sample_bag) and os.path.exists(sample_gt):
            return sample_gt
    stem = os.path.splitext(bag)[0]
    for cand in (stem + "_groundtruth.txt", stem + "_groundtruth.tum"):
        if os.path.exists(cand):
            return cand
    return gt_from_bag(bag, GT_TOPIC, os.path.join(out_dir, "groundtruth.tum"))


def run_demo(bag: str = TUM_SAMPLE_BAG, out_dir: str = "out/demo", gt: Optional[str] = None, backend: str = "colmap",
             rate: float = 1.0, domain_id: int = DEFAULT_DOMAIN_ID, node_params: Optional[dict] = None,
             child_frame: str = CAMERA_FRAME, settle_s: float = 4.0, timeout_s: float = 600.0,
             verbose: bool = True) -> dict:
    """Run the demo (see module docstring) and return the summary dict (also written to summary.json).

    Raises:
        FileNotFoundError: the bag is missing.
        RuntimeError: the node or recorder died before the bag was played.
    """
    t_start = time.monotonic()
    if not os.path.exists(bag):
        raise FileNotFoundError(f"bag not found: {bag} (re-create the sample with `selfi-ros make-sample`)")
    bag = os.path.abspath(bag)
    gt = os.path.abspath(gt) if gt else None
    out_dir = os.path.abspath(out_dir)
    rec_dir = os.path.join(out_dir, "record")
    shutil.rmtree(rec_dir, ignore_errors=True)
    os.makedirs(rec_dir, exist_ok=True)
    log_dir = os.path.join(out_dir, "ros_log")
    os.makedirs(log_dir, exist_ok=True)
    env = demo_env(domain_id, log_dir)
    py = sys.executable

    def say(msg: str) -> None:
        if verbose:
            print(f"[demo {time.monotonic() - t_start:6.1f}s] {msg}", flush=True)

    params = dict(DEMO_NODE_PARAMS)
    params["backend"] = backend
    params.update(node_params or {})
    node_cmd = [py, "-m", "selfi_ros.ros.node", "--ros-args"]
    for k, v in params.items():
        node_cmd += ["-p", _param_arg(k, v)]
    image_topic = params["image_topic"] + ("/compressed" if params.get("image_transport") == "compressed" else "")
    progress = os.path.join(rec_dir, "progress.json")
    rec_cmd = [py, "-m", "selfi_ros.ros.recorder", "--out", rec_dir, "--progress-file", progress,
               "--child-frame", child_frame, "--image-topic", image_topic,
               "--image-type", "compressed" if params.get("image_transport") == "compressed" else "raw"]
    play_cmd = [py, "-m", "selfi_ros.cli", "play", bag, "--rate", str(rate), "--quiet",
                "--topics", image_topic, params["camera_info_topic"]]
    n_images = count_messages(bag, image_topic)
    logs = {n: open(os.path.join(out_dir, f"{n}.log"), "w") for n in ("node", "recorder", "player")}
    procs: dict[str, subprocess.Popen] = {}
    clean_stop = True
    try:
        say(f"ROS_DOMAIN_ID={domain_id}, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; node: {' '.join(node_cmd[1:])}")
        procs["recorder"] = subprocess.Popen(rec_cmd, env=env, cwd=out_dir, stdout=logs["recorder"],
                                             stderr=subprocess.STDOUT)
        procs["node"] = subprocess.Popen(node_cmd, env=env, cwd=out_dir, stdout=logs["node"],
                                         stderr=subprocess.STDOUT)
        # wait for the node's status (its timer publishes once a second) to reach the recorder
        t0 = time.monotonic()
        while time.monotonic() - t0 < 90.0:
            for name, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited early with {p.returncode}; see {out_dir}/{name}.log")
            pr = _read_progress(progress)
            if pr.get("status_recv_ns"):
                break
            if pr.get("tf_publishers") and time.monotonic() - t0 > 15.0:  # up, but ~/status not built
                say("no ~/status from the node (selfi_ros.msg not built?): going on once /tf has a publisher")
                break
            time.sleep(0.2)
        else:
            say("no status from the node after 90 s: playing anyway")
        say(f"node up; playing {n_images} images of {bag} at rate {rate}")
        t_play = time.monotonic()
        procs["player"] = subprocess.Popen(play_cmd, env=env, cwd=out_dir, stdout=logs["player"],
                                           stderr=subprocess.STDOUT)
        deadline = t_start + timeout_s
        while procs["player"].poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if procs["player"].poll() is None:
            say("player timed out")
            _stop(procs["player"], "player")
        play_s = time.monotonic() - t_play
        say(f"player done ({procs['player'].returncode}) after {play_s:.1f} s; waiting for the node to drain")
        last_change, last_key = time.monotonic(), None
        while time.monotonic() < deadline:
            pr = _read_progress(progress)
            st = pr.get("status", {})
            key = (pr.get("poses"), st.get("frames_in"), st.get("windows"), pr.get("map_points"))
            if key != last_key:
                last_key, last_change = key, time.monotonic()
            idle = time.monotonic() - last_change
            drained = st.get("queue_depth") == 0 if st else True  # without ~/status: idleness only
            if drained and idle >= settle_s:
                break
            if procs["node"].poll() is not None:
                say(f"node exited with {procs['node'].returncode}")
                break
            time.sleep(0.25)
        t_done = time.monotonic()
    finally:
        for name in ("player", "node", "recorder"):  # the recorder last: it saves on SIGINT
            if name in procs:
                rc = _stop(procs[name], name)
                if name != "player" and rc not in (0, -signal.SIGINT, 130):
                    clean_stop = False
                    print(f"[demo] {name} exit code {rc}; see {out_dir}/{name}.log", file=sys.stderr)
        for fh in logs.values():
            fh.close()

    # ------------------------------------------------------------------ results
    rec_path = os.path.join(rec_dir, "recording.json")
    rec = json.load(open(rec_path)) if os.path.exists(rec_path) else {}
    traj = os.path.join(out_dir, "trajectory.tum")
    mapp = os.path.join(out_dir, "map.ply")
    for src, dst in ((os.path.join(rec_dir, "trajectory.tum"), traj), (os.path.join(rec_dir, "map.ply"), mapp)):
        if os.path.exists(dst):
            os.remove(dst)
        if os.path.exists(src):
            shutil.copyfile(src, dst)
    if gt is None:
        gt = default_groundtruth(bag, out_dir)
    st = rec.get("status", {})
    diag = rec.get("diagnostics", {})
    lat = rec.get("latency_image_to_tf", {})
    ev = None
    ev_error = ""
    if gt and rec.get("poses", 0) >= 3:
        from selfi_ros.apps.evaluate import evaluate

        try:
            ev = evaluate(traj, gt, plot_path=os.path.join(out_dir, "plot.png"),
                          map_path=mapp if os.path.exists(mapp) else None,
                          title=f"selfi-ros demo ({backend}): {os.path.basename(bag)}")
        except (ValueError, FileNotFoundError) as e:
            ev_error = str(e)
    summary = {
        "bag": os.path.abspath(bag),
        "backend": backend,
        "rate": rate,
        "ros_domain_id": domain_id,
        "node_params": params,
        "images_in_bag": n_images,
        "images_seen_by_recorder": rec.get("images_seen", 0),
        "frames_in": st.get("frames_in"),
        "frames_dropped": st.get("frames_dropped"),
        "frames_dropped_queue_full": _int_or_none(diag.get("count_queue_full", 0 if diag else None)),
        "frames_skipped_under_load": st.get("frames_skipped"),
        # input drops (ros.input): an image older than the last accepted one, or one of too many waiting
        # for a CameraInfo
        "frames_dropped_out_of_order": _int_or_none(sum(int(diag.get(f"count_{r}", 0)) for r in (
            "stamp_out_of_order", "stamp_repeated", "camera_info_wait_overflow")) if diag else None),
        "window_failures": st.get("window_failures"),
        "window_recoveries": st.get("window_recoveries"),
        "map_segments": st.get("map_segments"),
        "frames_rejected": st.get("frames_rejected"),
        "frames_lost_in_transport": (n_images - st["frames_in"]) if st.get("frames_in") is not None else None,
        "keyframes": st.get("keyframes"),
        "windows": st.get("windows"),
        "localization_failures": st.get("localization_failures"),
        "poses_received": rec.get("poses", 0),
        "map_points": rec.get("map_points", 0),
        "tf_messages": rec.get("counts", {}).get("/tf", 0),
        "cloud_messages": {k: v for k, v in rec.get("counts", {}).items() if "cloud" in k},
        "latency_image_to_tf_ms": {k: lat.get(k) for k in ("count", "p50_ms", "p95_ms", "mean_ms", "max_ms")},
        "latency_after_first_pose_ms": {k: rec.get("latency_image_to_tf_after_first_pose", {}).get(k)
                                        for k in ("count", "p50_ms", "p95_ms")},
        "ate_rmse": None if ev is None else ev.ate_rmse,
        "ate_trivial": None if ev is None else ev.ate_trivial,
        "rpe_trans_rmse": None if ev is None else ev.rpe_trans_rmse,
        "rpe_rot_rmse_deg": None if ev is None else ev.rpe_rot_rmse_deg,
        "rpe_rot_median_deg": None if ev is None else ev.rpe_rot_median_deg,
        "rpe_rot_trivial_deg": None if ev is None else ev.rpe_rot_trivial_deg,
        "gt_path_length": None if ev is None else ev.gt_path_length,
        "sim3_scale": None if ev is None else ev.scale,
        "eval_error": ev_error,
        "groundtruth": gt,
        "play_time_s": round(play_s, 3),
        "processing_time_s": round(t_done - t_play, 3),
        "run_time_s": round(time.monotonic() - t_start, 3),
        "clean_stop": clean_stop,
        "outputs": {"trajectory": traj, "map": mapp, "plot": os.path.join(out_dir, "plot.png"),
                    "summary": os.path.join(out_dir, "summary.json")},
    }
    from selfi_ros.engine.io import write_json

    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def _int_or_none(v) -> Optional[int]:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def format_summary(s: dict) -> str:
    """Human-readable lines of the figures the demo reports."""
    lat = s["latency_image_to_tf_ms"]
    s2 = s.get("latency_after_first_pose_ms") or {}

    def f(v, fmt="{:.1f}"):
        return "n/a" if v is None else fmt.format(v)

    lines = [
        f"frames in: {s['frames_in']} of {s['images_in_bag']} played (dropped by the node: {s['frames_dropped']} = "
        f"queue full {s.get('frames_dropped_queue_full')} + not localized under load "
        f"{s.get('frames_skipped_under_load')} + out of order {s.get('frames_dropped_out_of_order')}; rejected: "
        f"{s['frames_rejected']}, lost in transport: {s['frames_lost_in_transport']})",
        f"keyframes: {s['keyframes']}, windows: {s['windows']} (failed attempts {s.get('window_failures')}, "
        f"recovered {s.get('window_recoveries')}, map discontinuities {s.get('map_segments')}), "
        f"poses on /tf: {s['poses_received']}, map points: {s['map_points']}",
        f"latency image -> TF: p50 {f(lat.get('p50_ms'))} ms, p95 {f(lat.get('p95_ms'))} ms "
        f"({lat.get('count')} poses; after the first pose: p50 {f(s2.get('p50_ms'))} ms, "
        f"p95 {f(s2.get('p95_ms'))} ms over {s2.get('count')})",
        f"ATE RMSE (Sim(3)-aligned, evo): {f(s['ate_rmse'], '{:.4f}')} ground-truth units "
        f"(a constant estimate: {f(s.get('ate_trivial'), '{:.4f}')}; path length {f(s['gt_path_length'], '{:.2f}')})",
        f"RPE per pose pair: {f(s['rpe_trans_rmse'], '{:.4f}')} units, rotation RMSE "
        f"{f(s['rpe_rot_rmse_deg'], '{:.3f}')} deg, median {f(s.get('rpe_rot_median_deg'), '{:.3f}')} deg "
        f"(a constant estimate: {f(s.get('rpe_rot_trivial_deg'), '{:.3f}')} deg)",
        f"run time: {s['run_time_s']:.1f} s (playing {s['play_time_s']:.1f} s, until drained "
        f"{s['processing_time_s']:.1f} s)",
        f"outputs: {os.path.dirname(s['outputs']['summary'])}/{{trajectory.tum, map.ply, plot.png, summary.json}}",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample", choices=sorted(SAMPLES), default=DEFAULT_SAMPLE,
                        help=f"bundled sample to play (default {DEFAULT_SAMPLE}: real TUM RGB-D images; woodbox: "
                             "the POV-Ray rendering)")
    parser.add_argument("--bag", default=None, help="play this bag instead of a bundled sample")
    parser.add_argument("--gt", default=None, help="ground truth TUM (default: the sample's, <stem>_groundtruth.txt "
                                                   f"beside the bag, or the bag's {GT_TOPIC} topic)")
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    parser.add_argument("--backend", default="colmap", help="node backend (default colmap: CPU, no weights)")
    parser.add_argument("--rate", type=float, default=None,
                        help="playback speed factor (1.0: the recorded rate; default: "
                             + ", ".join(f"{k} {v:g}" for k, v in SAMPLE_RATES.items())
                             + ", another bag 1.0); frames the node cannot process in time are dropped and counted")
    parser.add_argument("--domain-id", type=int, default=DEFAULT_DOMAIN_ID, help="ROS_DOMAIN_ID of the demo")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter (repeatable), e.g. --param window_size:=8")
    parser.add_argument("--child-frame", default=CAMERA_FRAME, help="TF child frame to record")
    parser.add_argument("--settle", type=float, default=4.0, help="idle seconds that mean the node is done")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")


def _parse_value(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def run(args: argparse.Namespace) -> int:
    extra = {}
    for p in args.param:
        if ":=" not in p:
            raise SystemExit(f"--param expects NAME:=VALUE, got {p!r}")
        k, v = p.split(":=", 1)
        extra[k] = _parse_value(v)
    try:
        bag, rate = resolve_sample(args.sample, args.bag, args.rate)
        s = run_demo(bag, args.out, args.gt, args.backend, rate, args.domain_id, extra,
                     args.child_frame, args.settle, args.timeout)
    except (RuntimeError, FileNotFoundError, ValueError) as e:
        print(f"[demo] failed: {e}", file=sys.stderr)
        return 2
    print(format_summary(s))
    if not s["poses_received"] or not s["map_points"]:
        print("[demo] FAILED: no pose or no map cloud arrived", file=sys.stderr)
        return 1
    return 0 if s["clean_stop"] else 2

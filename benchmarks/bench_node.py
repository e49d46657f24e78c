"""End-to-end benchmark of ``selfi_node`` on the sample bag: latency image -> TF, frames dropped, throughput.

For each backend (``colmap``: pycolmap on the CPU; ``vggt``: the TINY RANDOM-WEIGHT model - plumbing
timing only, its poses are meaningless) and playback rate, the node runs in its own process
(``python -m selfi_ros.ros.node``) and this process replays data/sample/woodbox_orbit.mcap
(CompressedImage + CameraInfo, 48 frames at 5 Hz) at ``rate`` x real time and records ``/tf`` and
``~/status``; both sides use ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a private ``ROS_DOMAIN_ID``.
Both backends run with the same engine windowing (the demo's parameters: ``window_size`` 6,
``keyframe_min_flow_px`` 5, queue 8, compressed input with sensor-data QoS).

Latency of a frame = wall time at which the first ``/tf`` transform stamped with the image's stamp was
received here - wall time at which this process published that image (one clock, loopback DDS both
ways). Reported over all frames with a pose and over frames published after the first pose arrived
(the first window holds its frames until ``window_size`` keyframes exist). Throughput = poses received /
(last pose received - first image published). Dropped = frames the node's queue dropped; lost = played
images the node never received (best-effort QoS); rejected = counted by the node or the engine.

    AMENT_PREFIX_PATH=$PWD/.venv .venv/bin/python benchmarks/bench_node.py   # -> benchmarks/results/node_cpu.md
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from report import emit  # noqa: E402  (benchmarks/report.py)
from selfi_ros.ros.recorder import latency_stats  # noqa: E402

BAG = ROOT / "data" / "sample" / "woodbox_orbit.mcap"
IMAGE_TOPIC = "/camera/image_raw"
INFO_TOPIC = "/camera/camera_info"

#: engine windowing shared by both backends (the demo's values for the sample)
COMMON_PARAMS = {"image_topic": IMAGE_TOPIC, "image_transport": "compressed", "camera_info_topic": INFO_TOPIC,
                 "keyframe_min_flow_px": 5.0, "window_size": 6, "queue_size": 8, "publish_tf": "map_to_camera",
                 "status_period_s": 0.5}
BACKENDS = {
    "colmap": {"backend": "colmap"},
    "vggt-tiny-random": {"backend": "vggt", "allow_random_weights": True, "model_config": "tiny",
                         "image_width": 168, "torch_threads": 1},
}


def _env(domain_id: int) -> dict:
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("ROS_LOG_DIR", str(ROOT / "build" / "ros_log"))
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _load_bag():
    from selfi_ros.ros.bag import read_messages
    from selfi_ros.ros.conversions import stamp_to_ns

    msgs = []
    for m in read_messages(str(BAG), topics=[IMAGE_TOPIC + "/compressed", INFO_TOPIC]):
        msgs.append((m.log_time_ns, m.topic, m.message, stamp_to_ns(m.message.header.stamp)))
    return msgs


def run_one(name: str, rate: float, log_dir: Path) -> dict:
    """One node process + one replay; returns the figures (see module docstring)."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage
    from tf2_msgs.msg import TFMessage

    from selfi_ros.msg import SelfiStatus
    from selfi_ros.ros.conversions import stamp_to_ns
    from selfi_ros.ros.node import node_command

    domain = random.Random(time.monotonic_ns()).randint(120, 220)
    params = {**COMMON_PARAMS, **BACKENDS[name]}
    log_path = log_dir / f"node_{name}_{rate}.log"
    fh = open(log_path, "wb")
    proc = subprocess.Popen(node_command(params), cwd=ROOT, env=_env(domain), stdout=fh, stderr=subprocess.STDOUT)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("selfi_bench_client", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    lock = threading.Lock()
    tf_recv: dict[int, float] = {}
    statuses = []
    diag: dict = {}

    def on_tf(m):
        now = time.monotonic()
        with lock:
            for t in m.transforms:
                tf_recv.setdefault(stamp_to_ns(t.header.stamp), now)

    def on_status(m):
        with lock:
            statuses.append(m)

    def on_diag(m):
        for st in m.status:
            if st.name.startswith("selfi_node"):
                with lock:
                    diag.clear()
                    diag.update({kv.key: kv.value for kv in st.values})

    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(TFMessage, "/tf", on_tf, reliable)
    node.create_subscription(SelfiStatus, "/selfi_node/status", on_status, 10)
    from diagnostic_msgs.msg import DiagnosticArray

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    pub_img = node.create_publisher(CompressedImage, IMAGE_TOPIC + "/compressed", reliable)
    pub_info = node.create_publisher(CameraInfo, INFO_TOPIC, reliable)
    stop = threading.Event()

    def spin():
        while not stop.is_set() and ctx.ok():
            ex.spin_once(timeout_sec=0.02)

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    try:
        t_start = time.monotonic()
        while pub_img.get_subscription_count() < 1 or pub_info.get_subscription_count() < 1:
            if proc.poll() is not None or time.monotonic() - t_start > 120:
                raise RuntimeError(f"node did not come up:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        startup_s = time.monotonic() - t_start
        time.sleep(0.5)
        msgs = _load_bag()
        pub_wall: dict[int, float] = {}
        wall0, bag0 = time.monotonic(), msgs[0][0]
        for log_ns, topic, msg, stamp in msgs:
            target = wall0 + (log_ns - bag0) * 1e-9 / rate
            while (d := target - time.monotonic()) > 0:
                time.sleep(min(d, 0.01))
            if topic == INFO_TOPIC:
                pub_info.publish(msg)
            else:
                pub_wall[stamp] = time.monotonic()
                pub_img.publish(msg)
        t_played = time.monotonic()
        # drain: until the node's queue is empty and no pose arrived for 3 s (at most 120 s)
        last_n, last_change = -1, time.monotonic()
        while time.monotonic() - t_played < 120:
            with lock:
                n = len(tf_recv)
                st = statuses[-1] if statuses else None
            if n != last_n:
                last_n, last_change = n, time.monotonic()
            if st is not None and st.queue_depth == 0 and time.monotonic() - last_change > 3.0:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"node died:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        time.sleep(1.0)
        with lock:
            st = statuses[-1]
            recv = dict(tf_recv)
            counts = {k[len("count_"):]: int(v) for k, v in diag.items() if k.startswith("count_")}
    finally:
        stop.set()
        th.join(2)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        fh.close()
    lat = {s: 1e3 * (recv[s] - pub_wall[s]) for s in pub_wall if s in recv}
    first_pose = min(recv.values()) if recv else float("inf")
    after = [lat[s] for s in lat if pub_wall[s] >= first_pose]
    allv = list(lat.values())
    lat_all, lat_after = latency_stats(allv), latency_stats(after)
    span = (max(recv.values()) - wall0) if recv else float("nan")
    return {
        "name": name, "rate": rate, "startup_s": startup_s, "played": len(pub_wall), "frames_in": int(st.frames_in),
        "dropped": int(st.frames_dropped), "rejected": int(st.frames_rejected), "keyframes": int(st.keyframes),
        "windows": int(st.windows), "poses": len(lat), "loc_failures": int(st.localization_failures),
        "random_weights": bool(st.random_weights), "p50": lat_all["p50_ms"], "p95": lat_all["p95_ms"],
        "p50_after": lat_after["p50_ms"], "p95_after": lat_after["p95_ms"], "n_after": lat_after["count"],
        "throughput": len(lat) / span if span > 0 else float("nan"), "input_fps": 5.0 * rate,
        "play_s": t_played - wall0, "rss_mb": int(st.memory_bytes) / 2**20,
        "last_window_ms": float(st.last_window_ms), "last_localize_ms": float(st.last_localize_ms),
        "counts": counts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default=",".join(BACKENDS), help=f"comma list of {', '.join(BACKENDS)}")
    ap.add_argument("--rates", default="0.5,1.0", help="playback rates (x real time of the 5 Hz bag)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "node_cpu.md"))
    args = ap.parse_args()
    log_dir = ROOT / "build" / "bench_node"
    log_dir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    rows = []
    for name in args.backends.split(","):
        for rate in [float(r) for r in args.rates.split(",")]:
            r = run_one(name, rate, log_dir)
            rows.append(r)
            print(r, flush=True)
    cmd = "AMENT_PREFIX_PATH=$PWD/.venv .venv/bin/python benchmarks/bench_node.py"
    if args.backends != ",".join(BACKENDS) or args.rates != "0.5,1.0":
        cmd += f" --backends {args.backends} --rates {args.rates}"
    L = [f"## selfi_node end to end on the sample bag (CPU, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
         "",
         f"Command: `{cmd}`. Machine: {os.cpu_count()} cores shared with other work (load average "
         f"{load0:.1f} at start), no GPU. Node and replay client in separate processes over Fast DDS on "
         "loopback (LOCALHOST discovery, private domain). Bag: 48 CompressedImage frames 480x360 at 5 Hz, "
         f"played at `rate` x real time. Node counts = the node's /diagnostics `count_*` (reasons for drops: `skipped_under_load` = a non-keyframe not localized because newer frames waited, `queue_full` = dropped by the bounded queue). Same engine windowing for both backends: {', '.join(f'{k} {v}' for k, v in COMMON_PARAMS.items() if k in ('window_size', 'keyframe_min_flow_px', 'queue_size'))}. "
         "`vggt-tiny-random` = VGGT/SAIL-Recon backend with the TINY RANDOM-WEIGHT model at 168 px width: "
         "plumbing timing only, its poses are meaningless; `torch_threads` 1 (benchmarks/results/query_cpu.md).",
         "",
         "| backend | rate (input fps) | played / in / dropped / lost / rejected | node counts | keyframes / windows | poses on /tf | latency p50 / p95 (ms) | after first pose: p50 / p95 (ms, n) | throughput (poses/s) | last window / localize (ms) | node RSS (MB) | start-up (s) |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lost = r["played"] - r["frames_in"]
        L.append(f"| {r['name']}{' (RANDOM WEIGHTS)' if r['random_weights'] else ''} | {r['rate']} ({r['input_fps']:.1f}) | "
                 f"{r['played']} / {r['frames_in']} / {r['dropped']} / {lost} / {r['rejected']} | "
                 f"{', '.join(f'{k} {v}' for k, v in sorted(r['counts'].items())) or '-'} | "
                 f"{r['keyframes']} / {r['windows']} | {r['poses']} | {r['p50']:.0f} / {r['p95']:.0f} | "
                 f"{r['p50_after']:.0f} / {r['p95_after']:.0f} ({r['n_after']}) | {r['throughput']:.2f} | "
                 f"{r['last_window_ms']:.0f} / {r['last_localize_ms']:.0f} | {r['rss_mb']:.0f} | {r['startup_s']:.1f} |")
    out = Path(args.out)
    emit(L, out)


if __name__ == "__main__":
    main()

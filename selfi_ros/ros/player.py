"""``selfi-ros play BAG``: publish the messages of an MCAP ROS 2 bag through rclpy at the recorded rate.

A small stand-in for ``ros2 bag play`` where rosbag2 is not installed. Messages are read with
:mod:`selfi_ros.ros.bag` (``mcap``) and published as their stored CDR bytes (no re-serialisation), in
log-time order, at ``--rate`` times the recorded speed; ``--clock`` also publishes ``/clock``
(rosgraph_msgs/Clock, the bag's log time) for nodes with ``use_sim_time:=true``. ``/tf_static`` is
published latched (transient local), everything else reliable keep-last.

Ctrl-C (SIGINT) or SIGTERM stops playback cleanly, as ``ros2 bag play`` does: ``selfi-ros play: interrupted
after N messages`` is printed, the node is destroyed, the context shut down, and ``selfi-ros play`` exits
with status 0 and no traceback. The player's own context is initialised without rclpy's signal handlers
(``SignalHandlerOptions.NO``), so that the signal arrives as a Python ``KeyboardInterrupt`` in the playing
loop instead of invalidating the context under a ``publish``; with a caller's ``node``, a context shut down
from outside ends playback the same way (the count so far is returned).

Usage::

    selfi-ros play data/sample.mcap --rate 0.5 --topics /camera/image_raw /camera/camera_info --clock
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Optional, Sequence

from selfi_ros.ros.bag import bag_topics, message_class, read_messages

CLOCK_PERIOD_S = 0.01  # /clock publish period while waiting (s of wall time)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``selfi-ros play`` (see module docstring)."""
    parser.add_argument("bag", help="MCAP ROS 2 bag (.mcap file or a rosbag2 folder holding one)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--topics", nargs="+", default=None, help="only these topics (default: all)")
    parser.add_argument("--loop", action="store_true", help="play again from the start when done")
    parser.add_argument("--start-delay", type=float, default=0.0, help="seconds to wait before the first message")
    parser.add_argument("--clock", action="store_true", help="publish /clock with the bag's log time")
    parser.add_argument("--wait-subscribers", type=float, default=3.0,
                        help="wait up to this many seconds for every topic to have a subscriber (default 3)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def play(bag: str, rate: float = 1.0, topics: Optional[Sequence[str]] = None, loop: bool = False,
         start_delay: float = 0.0, clock: bool = False, wait_subscribers: float = 3.0, quiet: bool = False,
         node=None, max_loops: Optional[int] = None) -> int:
    """Publish the bag's messages (see module docstring); returns the number of messages published.

    Args:
        bag: bag path. rate: speed factor (> 0). topics: topic filter. loop: repeat (until interrupted or
        ``max_loops``). start_delay: seconds before the first message. clock: publish /clock.
        wait_subscribers: seconds to wait for subscribers before starting. node: an existing rclpy node
        to publish from (else one is created; rclpy must then not be initialised yet).

    Raises:
        FileNotFoundError: missing bag. ValueError: rate <= 0 or none of ``topics`` in the bag.
    """
    if rate <= 0:
        raise ValueError(f"--rate must be > 0, got {rate}")
    path = bag
    if os.path.isdir(bag):
        files = sorted(f for f in os.listdir(bag) if f.endswith(".mcap"))
        if len(files) != 1:
            raise FileNotFoundError(f"{bag}: expected one .mcap file, found {files}")
        path = os.path.join(bag, files[0])
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    types = bag_topics(path)
    if topics:
        missing = [t for t in topics if t not in types]
        if missing:
            print(f"selfi-ros play: topics not in the bag (ignored): {missing}; bag has {sorted(types)}")
        types = {t: ty for t, ty in types.items() if t in topics}
    if not types:
        raise ValueError(f"no topics to play from {path}")

    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    own = node is None
    if own:
        from rclpy.signals import SignalHandlerOptions

        from selfi_ros.ros.node import ensure_localhost_discovery

        ensure_localhost_discovery()
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)  # SIGINT -> KeyboardInterrupt in the loop
        node = rclpy.create_node("selfi_player")
    progress = [0]  # messages published so far (read when interrupted)
    try:
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pubs = {t: node.create_publisher(message_class(ty), t, latched if t == "/tf_static" else reliable)
                for t, ty in types.items()}
        clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock

            clock_pub = node.create_publisher(Clock, "/clock", 10)
        try:
            t_wait = time.monotonic() + max(0.0, wait_subscribers)
            while time.monotonic() < t_wait and any(p.get_subscription_count() == 0 for t, p in pubs.items()
                                                    if t != "/tf_static"):
                time.sleep(0.05)
            if start_delay > 0:
                time.sleep(start_delay)
            _play_passes(node, path, types, pubs, clock_pub, rate, loop, max_loops, quiet, progress)
        except KeyboardInterrupt:
            if not quiet:
                print(f"selfi-ros play: interrupted after {progress[0]} messages", flush=True)
            return progress[0]
        if not quiet:
            print(f"selfi-ros play: published {progress[0]} messages on {len(pubs)} topics", flush=True)
        time.sleep(0.2)  # let reliable writers flush the last samples
        return progress[0]
    finally:
        if own:
            node.destroy_node()
            rclpy.try_shutdown()


def _play_passes(node, path: str, types: dict, pubs: dict, clock_pub, rate: float, loop: bool,
                 max_loops: Optional[int], quiet: bool, progress: list) -> None:
    """The timed publishing loop of :func:`play`; ``progress[0]`` counts the messages published. A context
    shut down from outside ends it with ``KeyboardInterrupt`` (as a Ctrl-C does)."""
    loops = 0
    while True:
        wall0, bag0 = None, None
        last_clock, clock_ns = 0.0, -1  # /clock never goes backwards within one pass
        for m in read_messages(path, topics=list(types), deserialize=False):
            if wall0 is None:
                wall0, bag0 = time.monotonic(), m.log_time_ns
            target = wall0 + (m.log_time_ns - bag0) * 1e-9 / rate
            while True:
                if not node.context.ok():  # shut down from outside (a caller's node, rclpy's handler)
                    raise KeyboardInterrupt
                now = time.monotonic()
                if clock_pub is not None and now - last_clock >= CLOCK_PERIOD_S:
                    clock_ns = _publish_clock(clock_pub, min(m.log_time_ns, bag0 + int((now - wall0) * rate * 1e9)),
                                              clock_ns)
                    last_clock = now
                if now >= target:
                    break
                time.sleep(min(target - now, CLOCK_PERIOD_S))
            if clock_pub is not None:
                clock_ns = _publish_clock(clock_pub, m.log_time_ns, clock_ns)
            try:
                pubs[m.topic].publish(m.data)  # stored CDR bytes, published as they are
            except Exception:  # noqa: BLE001 - a context shut down under the publish: playback ends
                if not node.context.ok():
                    raise KeyboardInterrupt from None
                raise
            progress[0] += 1
            if not quiet and progress[0] % 100 == 0:
                print(f"selfi-ros play: {progress[0]} messages", flush=True)
        loops += 1
        if not loop or (max_loops is not None and loops >= max_loops):
            return


def _publish_clock(pub, ns: int, last_ns: int) -> int:
    """Publish /clock = ``ns`` unless that would not advance past ``last_ns``; returns the clock now."""
    from rosgraph_msgs.msg import Clock

    from selfi_ros.ros.conversions import ns_to_stamp

    if ns <= last_ns:
        return last_ns
    pub.publish(Clock(clock=ns_to_stamp(ns)))
    return ns


def run(args: argparse.Namespace) -> int:
    """``selfi-ros play`` entry (see :func:`add_arguments`): exit status 0 also after Ctrl-C / SIGTERM."""
    import signal

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C (ros2 launch sends SIGINT, then SIGTERM)
    try:
        play(args.bag, rate=args.rate, topics=args.topics, loop=args.loop, start_delay=args.start_delay,
             clock=args.clock, wait_subscribers=args.wait_subscribers, quiet=args.quiet)
    except KeyboardInterrupt:  # before or after playback proper (rclpy start-up, shut-down)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("selfi-ros play: interrupted", flush=True)
    return 0

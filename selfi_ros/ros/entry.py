"""Start-up of ``selfi_node``: :func:`main` (the console script, ``ros2 run``, ``python -m
selfi_ros.ros.node``), its signal handling and exit codes, and :func:`node_command` (the argv that starts the
node in a subprocess). Re-exported by :mod:`selfi_ros.ros.node`.

Shutdown (SIGINT, SIGTERM): rclpy's signal handlers are not installed (``SignalHandlerOptions.NO``), so the
signal reaches :func:`main` as ``KeyboardInterrupt``; the engine worker is stopped and joined (it may finish
the frame it is on) BEFORE the node and the context are destroyed, so that nothing publishes on an invalid
context ("RCLError: publisher's context is invalid"); exit status 0, no traceback. Further signals during
the shutdown are ignored (it is bounded; SIGKILL still ends the process).
"""
from __future__ import annotations

import os
import sys
from typing import Optional


def ensure_localhost_discovery() -> None:
    """Default ``ROS_AUTOMATIC_DISCOVERY_RANGE`` to ``LOCALHOST`` when unset (call before ``rclpy.init``);
    set it to ``SUBNET`` explicitly to talk to other machines."""
    if not os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE"):
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        print("selfi_ros: ROS_AUTOMATIC_DISCOVERY_RANGE unset -> LOCALHOST (set SUBNET for other machines)",
              file=sys.stderr)


def _interrupt(signum, frame) -> None:
    """SIGINT / SIGTERM while running: stop spinning (``main`` shuts down in order); from now on further
    signals go to :func:`_interrupt_again` (set here, so that a signal right behind this one cannot raise
    inside the shutdown)."""
    import signal

    signal.signal(signal.SIGINT, _interrupt_again)
    signal.signal(signal.SIGTERM, _interrupt_again)
    raise KeyboardInterrupt


def _interrupt_again(signum, frame) -> None:
    """A further SIGINT / SIGTERM while shutting down: ignored (the shutdown is bounded: the worker join, the
    optional save). ``ros2 launch`` forwards Ctrl-C to a node that the terminal already signalled, then
    escalates to SIGTERM and SIGKILL; exiting at the second signal would skip ``save_on_shutdown``."""
    print("selfi_node: already shutting down (the engine worker stops, then the node)", file=sys.stderr, flush=True)


def node_command(params: Optional[dict] = None, params_file: Optional[str] = None,
                 python: Optional[str] = None, node_name: Optional[str] = None) -> list[str]:
    """argv that starts ``selfi_node`` in a subprocess (for the demo, tests, scripts)::

        subprocess.Popen(node_command({"backend": "colmap", "use_sim_time": True}, "config/selfi.yaml"),
                         env={**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": "42"})

    Args:
        params: ``name -> value`` overrides (bool, int, float, str), passed as ``-p name:=value``.
        params_file: a YAML like config/selfi.yaml (loaded first; ``params`` override it).
        python: interpreter (default: this one). node_name: rename the node (``-r __node:=...``).
    """
    argv = [python or sys.executable, "-m", "selfi_ros.ros.node", "--ros-args"]
    if node_name:
        argv += ["-r", f"__node:={node_name}"]
    if params_file:
        argv += ["--params-file", str(params_file)]
    for k, v in (params or {}).items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, str) and (v == "" or v.strip() != v or v.lower() in ("true", "false", "null")
                                     or _looks_numeric(v)):
            v = f"'{v}'"  # keep strings strings (YAML parsing of -p values)
        argv += ["-p", f"{k}:={v}"]
    return argv


def _looks_numeric(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def main(args: Optional[list[str]] = None) -> int:
    """Entry point of ``selfi_node`` (console script, ``ros2 run``, ``python -m selfi_ros.ros.node``).

    Returns the exit code: 0 after a normal shutdown (SIGINT / SIGTERM: the worker stops first, then the
    node and the context; with ``save_on_shutdown`` the map is saved to ``save_dir`` in between), 2 when the
    node cannot start because of an invalid parameter value or name, a checkpoint that is missing or unusable
    (:class:`selfi_ros.model.errors.CheckpointError` is a ``ValueError``) or a ``map_path`` that cannot be
    loaded - after printing one line ``selfi_node: <message>`` to stderr, without a traceback.
    """
    import signal

    ensure_localhost_discovery()
    import rclpy
    from rclpy.exceptions import NameValidationException
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from selfi_ros.ros.node import SelfiNode

    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    node, interrupted, code = None, False, 0
    try:
        node = SelfiNode()
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node.node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        interrupted = True
    except (ValueError, NameValidationException) as e:  # bad parameter, checkpoint, map: one line, no traceback
        print("selfi_node: " + " | ".join(ln.strip() for ln in str(e).splitlines() if ln.strip()),
              file=sys.stderr)
        code = 2
    finally:
        signal.signal(signal.SIGINT, _interrupt_again)
        signal.signal(signal.SIGTERM, _interrupt_again)
        if node is not None:
            node.destroy(save=interrupted and node.cfg.save_on_shutdown)
        if rclpy.ok():
            rclpy.try_shutdown()
    return code

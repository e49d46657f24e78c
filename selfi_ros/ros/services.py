"""``selfi_node`` services and the command channel into its engine worker.

``~/reset`` (``std_srvs/Trigger``): drop the queued frames, reset the engine (keyframes, windows, map,
trajectory, scale, backend memory), clear ``~/path``, forget the stamp order. ``~/save_map``: write the
engine's outputs (``map.ply``, ``trajectory.tum``, ``cameras.json``, ``metadata.json``) into ``save_dir``
(default ``$ROS_HOME/selfi_map``, ``~/.ros/selfi_map``); a failed save (an exception of the engine's save,
e.g. an unwritable folder, or the worker not answering in time) answers ``success=False`` with
``save to <dir> failed: <ExceptionType>: <reason>`` and logs that at ERROR. Both run in the worker thread, between frames,
so that the engine is only ever touched by one thread.
"""
from __future__ import annotations

import collections
import os
import threading
from typing import Any, Callable, Union


class WorkerCommands:
    """Functions queued by service callbacks, run by the worker thread between frames."""

    def __init__(self) -> None:
        self._commands: collections.deque = collections.deque()

    def call(self, fn: Callable[[], Any], timeout: float = 120.0) -> dict:
        """Queue ``fn`` and wait for the worker: ``{"value": result}`` or ``{"error": text}`` (an exception
        of ``fn``, or ``timed out after ... s``)."""
        done, result = threading.Event(), {}
        self._commands.append((fn, done, result))
        if not done.wait(timeout):
            result["error"] = f"timed out after {timeout} s"
        return result

    def run_pending(self) -> None:
        """Run every queued function (worker thread)."""
        while self._commands:
            fn, done, result = self._commands.popleft()
            try:
                result["value"] = fn()
            except Exception as e:  # noqa: BLE001 - reported to the service caller
                result["error"] = f"{type(e).__name__}: {e}"
            done.set()


def default_save_dir(save_dir: str) -> str:
    """``save_dir``, or ``$ROS_HOME/selfi_map`` (``~/.ros/selfi_map``) when empty."""
    return save_dir or os.path.join(os.environ.get("ROS_HOME", os.path.join(os.path.expanduser("~"), ".ros")),
                                    "selfi_map")


def create_services(node, commands: WorkerCommands, reset: Callable[[], int], save: Callable[[str], Any],
                    save_dir: Union[str, Callable[[], str]], log, callback_group) -> tuple:
    """Create ``~/reset`` and ``~/save_map`` on an rclpy ``node``.

    Args:
        commands: the worker's command channel. reset: drops everything, returns the queued frames dropped.
        save: ``Engine.save(out_dir)``. save_dir: the ``save_dir`` parameter, or a function returning its
            current value (read at each call: the parameter is dynamic). log: the node's logger
            (``info``/``error`` methods: successes at INFO, failures at ERROR).
        callback_group: a group of their own, so that they may wait for the worker while the executor runs
            the input callbacks.
    """
    from std_srvs.srv import Trigger

    def on_reset(request, response):
        r = commands.call(reset)
        response.success = "error" not in r
        response.message = r.get("error", f"reset (dropped {r.get('value', 0)} queued frames)")
        log.info(f"~/reset: {response.message}")
        return response

    def on_save(request, response):
        out_dir = default_save_dir(save_dir() if callable(save_dir) else save_dir)
        r = commands.call(lambda: save(out_dir))
        response.success = "error" not in r
        if response.success:
            response.message = f"saved to {out_dir}: {r.get('value')}"
            log.info(f"~/save_map: {response.message}")
        else:
            response.message = f"save to {out_dir} failed: {r['error']}"
            log.error(f"~/save_map: {response.message}")
        return response

    return (node.create_service(Trigger, "~/reset", on_reset, callback_group=callback_group),
            node.create_service(Trigger, "~/save_map", on_save, callback_group=callback_group))

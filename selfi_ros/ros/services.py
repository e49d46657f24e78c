"""``selfi_node`` services and the command channel into its engine worker.

``~/reset`` (``std_srvs/Trigger``): drop the queued frames, reset the engine (keyframes, windows, map,
trajectory, scale, backend memory), clear ``~/path``, forget the stamp order, zero the node's counters.

``~/save_map`` (``selfi_ros/srv/SaveMap``: ``string path`` -> ``bool success, string message, string path``):
write the map into ``path`` (empty: the ``save_dir`` parameter, read at each call; empty too:
``$ROS_HOME/selfi_map``, ``~/.ros/selfi_map``): the engine's outputs (``map.ply``, ``trajectory.tum``,
``cameras.json``, ``metadata.json``), the reusable map in ``map/`` where the engine provides one, and the
ROS map anchor. A failed save (an exception of the save, e.g. an unwritable folder, or the worker not
answering in time) answers ``success=False`` with ``save to <dir> failed: <ExceptionType>: <reason>`` and
logs that at ERROR; the answer's ``path`` is the folder written (absolute). Where ``selfi_ros.srv`` is not
built, ``~/save_map`` falls back to ``std_srvs/Trigger`` (always ``save_dir``) and ``~/load_map`` is absent.

``~/load_map`` (``selfi_ros/srv/LoadMap``: ``string path`` -> ``bool success, string message``): replace the
engine's map by a saved one (``Engine.load_map``); where the engine cannot load maps it answers
``success=False``, ``map loading not available``; a refused map answers the reason (logged at ERROR) and the
current map is kept.

All run in the worker thread, between frames, so that the engine is only ever touched by one thread.
"""
from __future__ import annotations

import collections
import json
import os
import threading
from typing import Any, Callable, Optional, Union

from selfi_ros.atomic import atomic_write_text


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

    def fail_pending(self, reason: str) -> None:
        """Answer every queued function with ``{"error": reason}`` without running it (shutdown)."""
        while self._commands:
            _, done, result = self._commands.popleft()
            result["error"] = reason
            done.set()

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


def service_types() -> tuple:
    """``(SaveMap, LoadMap)`` service classes: ``selfi_ros.srv`` where built, else ``(std_srvs/Trigger, None)``."""
    try:
        from selfi_ros.srv import LoadMap, SaveMap

        return SaveMap, LoadMap
    except ImportError:
        from std_srvs.srv import Trigger

        return Trigger, None


def resolve_folder(path: str, save_dir: str) -> str:
    """The absolute folder of a save / load request: ``path`` (``~`` expanded), else :func:`default_save_dir`."""
    return os.path.abspath(os.path.expanduser(path.strip() if path and path.strip() else default_save_dir(save_dir)))


def create_services(node, commands: WorkerCommands, reset: Callable[[], int], save: Callable[[str], Any],
                    save_dir: Union[str, Callable[[], str]], log, callback_group,
                    load: Optional[Callable[[str], Any]] = None, types: Optional[tuple] = None) -> tuple:
    """Create ``~/reset``, ``~/save_map`` and ``~/load_map`` on an rclpy ``node`` (module docstring).

    Args:
        commands: the worker's command channel. reset: drops everything, returns the queued frames dropped.
        save: ``out_dir -> summary`` (the node's save: ``Engine.save`` and the reusable map). save_dir: the
            ``save_dir`` parameter, or a function returning its current value (read at each call: the
            parameter is dynamic). log: the node's logger (``info``/``error`` methods: successes at INFO,
            failures at ERROR).
        callback_group: a group of their own, so that they may wait for the worker while the executor runs
            the input callbacks.
        load: ``folder -> summary`` (``Engine.load_map`` through the node), or None where the engine cannot
            load maps (``~/load_map`` then answers ``map loading not available``).
        types: ``(SaveMap, LoadMap)`` service classes (default :func:`service_types`).

    Returns:
        ``(reset service, save service, load service or None)``.
    """
    from std_srvs.srv import Trigger

    save_type, load_type = types or service_types()

    def on_reset(request, response):
        r = commands.call(reset)
        response.success = "error" not in r
        response.message = r.get("error", f"reset (dropped {r.get('value', 0)} queued frames)")
        log.info(f"~/reset: {response.message}")
        return response

    def on_save(request, response):
        out_dir = resolve_folder(getattr(request, "path", ""), save_dir() if callable(save_dir) else save_dir)
        r = commands.call(lambda: save(out_dir))
        response.success = "error" not in r
        if response.success:
            response.message = f"saved to {out_dir}: {r.get('value')}"
            log.info(f"~/save_map: {response.message}")
        else:
            response.message = f"save to {out_dir} failed: {r['error']}"
            log.error(f"~/save_map: {response.message}")
        if hasattr(response, "path"):
            response.path = out_dir if response.success else ""
        return response

    def on_load(request, response):
        folder = resolve_folder(request.path, save_dir() if callable(save_dir) else save_dir)
        if load is None:
            response.success, response.message = False, "map loading not available"
            log.error(f"~/load_map {folder}: {response.message}")
            return response
        r = commands.call(lambda: load(folder))
        response.success = "error" not in r
        if response.success:
            response.message = str(r.get("value"))
            log.info(f"~/load_map: {response.message}")
        else:
            response.message = f"load of {folder} failed: {r['error']}"
            log.error(f"~/load_map: {response.message}")
        return response

    srv_load = None
    if load_type is not None:
        srv_load = node.create_service(load_type, "~/load_map", on_load, callback_group=callback_group)
    return (node.create_service(Trigger, "~/reset", on_reset, callback_group=callback_group),
            node.create_service(save_type, "~/save_map", on_save, callback_group=callback_group), srv_load)


#: file written beside a saved map: the anchor of the ROS map frame (outputs.TfPlan) for ~/load_map
MAP_FRAME_FILE = "ros_map_frame.json"


def save_map_folder(sn, out_dir: str) -> str:
    """``~/save_map`` of a :class:`~selfi_ros.ros.node.SelfiNode` ``sn`` (its worker thread, or after the
    worker stopped): ``Engine.save`` into ``out_dir``, which also writes the engine's reusable map into
    ``out_dir/map`` (a backend without window memories, or no window yet, is noted in the summary, not an
    error; a reusable map that could not be written is: RuntimeError with the engine's reason), and
    :data:`MAP_FRAME_FILE` (the ROS map anchor, ``T_map_engine`` 4x4, of
    :class:`~selfi_ros.ros.outputs.TfPlan`). Returns a one-line summary; raises what the saves raise
    (OSError...)."""
    saved = sn.engine.save(out_dir)  # Engine.save also writes the reusable map into out_dir/map (map_dir)
    plan = sn.outputs.plan
    atomic_write_text(os.path.join(out_dir, MAP_FRAME_FILE), json.dumps({
        "map_frame": sn.cfg.map_frame, "anchor_frame": plan.anchor_frame or "",
        "camera_frame": sn.camera_frame,
        "T_map_engine": [[float(v) for v in row] for row in plan.T_map_engine]}, indent=1) + "\n")
    notes = []
    if isinstance(saved, dict) and saved.get("map_error"):
        raise RuntimeError(f"outputs written, reusable map not: {saved['map_error']}")
    if isinstance(saved, dict) and saved.get("map_dir"):
        notes.append("reusable map in map/")
    else:  # Engine.save wrote no map: nothing a second attempt could write
        notes.append("no reusable map (the backend keeps no window memories, or no window yet)")
    files = sorted(os.path.basename(str(v)) for v in saved.values()) if isinstance(saved, dict) else saved
    return f"{files}" + (f"; {'; '.join(notes)}" if notes else "")


def load_map_folder(sn, path: str) -> str:
    """``~/load_map`` of a :class:`~selfi_ros.ros.node.SelfiNode` ``sn`` (its worker thread): ``Engine.load_map``
    of ``path/map`` (a ``~/save_map`` folder) or of ``path`` itself (empty: ``save_dir``); the queue, the stamp order and ``~/path`` are cleared, ``~/map_cloud`` re-published,
    the saved ROS map anchor restored. Raises ``MapLoadError`` (a ValueError) with the reason, or
    ``FileNotFoundError``; the engine keeps its map then."""
    path = os.path.abspath(os.path.expanduser(path or default_save_dir(sn.cfg.save_dir)))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no such folder: {path}")
    target = os.path.join(path, "map") if os.path.isdir(os.path.join(path, "map")) else path
    sn.engine.load_map(target)
    sn._queue.clear()
    sn.restarts.reset(sn.input)
    sn.outputs.path.clear()
    sn.outputs.map.mark_changed()
    frame_file = os.path.join(path, MAP_FRAME_FILE)
    if os.path.isfile(frame_file):
        with open(frame_file) as fh:
            saved = json.load(fh)
        sn.outputs.plan.set_anchor(saved["T_map_engine"], saved.get("anchor_frame"))
    sn._refresh_status()
    return f"loaded {target}"

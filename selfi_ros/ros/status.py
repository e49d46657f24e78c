"""The one place where the ``selfi_ros/SelfiStatus`` fields and the ``/diagnostics`` keys are derived.

Sources, read by attribute: :class:`~selfi_ros.engine.status.EngineStatus` (``Engine.status()``),
:class:`~selfi_ros.engine.status.BackendStatus` (``Engine.backend_status()``) and the node's own
:class:`NodeCounters`. :data:`STATUS_FIELDS` lists every message field with its ROS type;
``test/test_ros_status.py`` fails when ``msg/SelfiStatus.msg`` and this derivation drift apart, or when a
BackendStatus / EngineStatus field is missing from ``/diagnostics``. Importing this module needs no ROS.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from selfi_ros.engine.status import BackendStatus, EngineStatus

#: SelfiStatus field -> ROS type (as ``get_fields_and_field_types()`` spells it), header excluded
STATUS_FIELDS: dict[str, str] = {
    "state": "string", "backend": "string", "random_weights": "boolean",
    "frames_in": "uint64", "frames_dropped": "uint64", "frames_skipped": "uint64", "frames_rejected": "uint64",
    "keyframes": "uint64", "windows": "uint64", "poses": "uint64", "localization_failures": "uint64",
    "window_failures": "uint64", "window_recoveries": "uint64", "map_segments": "uint64",
    "loop_closures": "uint64", "loop_candidates": "uint64", "loop_rejections": "uint64",
    "relocalizations": "uint64", "relocalization_failures": "uint64",
    "pose_check_flagged": "uint64", "pose_check_rejected": "uint64", "adapter_swaps": "uint64",
    "queue_depth": "uint32", "map_points": "uint64",
    "scale": "double", "scale_std": "double", "metric": "boolean", "chain_residual": "double",
    "last_window_ms": "double", "last_localize_ms": "double", "latency_ms": "double", "memory_bytes": "uint64",
}

#: ROS type -> the Python type a message field of that type takes
PY_TYPES = {"string": str, "boolean": bool, "uint64": int, "uint32": int, "double": float}

#: /diagnostics key of a BackendStatus field whose name would clash with a SelfiStatus field of other meaning
BACKEND_KEY_RENAMES = {"memory_bytes": "backend_memory_bytes"}
#: /diagnostics key of an EngineStatus field whose name would clash with a SelfiStatus field of other meaning
ENGINE_KEY_RENAMES = {"frames_in": "engine_frames_in", "frames_rejected": "engine_frames_rejected",
                      "last_error": "engine_last_error"}


@dataclass
class NodeCounters:
    """The node's own counters and figures (since start; a ``~/reset`` keeps them).

    Attributes:
        frames_in: image messages received.
        frames_dropped: frames dropped by the node (queue full, stamp order, CameraInfo wait overflow) plus
            the engine's load-shedding skips (``frames_skipped``).
        frames_rejected: frames the node rejected for bad content (the engine's rejections are added on top).
        queue_depth: frames waiting for the engine worker.
        latency_ms: image arrival -> pose published, last pose (ms; NaN before the first).
        memory_bytes: resident memory of the node process (bytes, :func:`rss_bytes`).
        counts: ``reason -> count`` of every rejection, drop and note (``count_<reason>`` in /diagnostics).
    """

    frames_in: int = 0
    frames_dropped: int = 0
    frames_rejected: int = 0
    queue_depth: int = 0
    latency_ms: float = float("nan")
    memory_bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def status_values(es: EngineStatus, bs: BackendStatus, nc: NodeCounters) -> dict[str, Any]:
    """Every ``SelfiStatus`` field (keys of :data:`STATUS_FIELDS`) -> its value (Python type per :data:`PY_TYPES`).

    ``frames_rejected`` adds the node's and the engine's rejections; the pose-check and adapter-swap
    counters are the backend's; ``memory_bytes`` is the node process's resident memory.
    """
    return dict(
        state=str(es.state), backend=str(es.backend), random_weights=bool(es.random_weights),
        frames_in=int(nc.frames_in), frames_dropped=int(nc.frames_dropped), frames_skipped=int(es.frames_skipped),
        frames_rejected=int(nc.frames_rejected + es.frames_rejected),
        keyframes=int(es.keyframes), windows=int(es.windows), poses=int(es.poses),
        localization_failures=int(es.localization_failures), window_failures=int(es.window_failures),
        window_recoveries=int(es.window_recoveries), map_segments=int(es.map_segments),
        loop_closures=int(es.loop_closures), loop_candidates=int(es.loop_candidates),
        loop_rejections=int(es.loop_rejections), relocalizations=int(es.relocalizations),
        relocalization_failures=int(es.relocalization_failures),
        pose_check_flagged=int(bs.pose_check_flagged), pose_check_rejected=int(bs.pose_check_rejected),
        adapter_swaps=int(bs.adapter_swaps), queue_depth=int(nc.queue_depth), map_points=int(es.map_points),
        scale=float(es.scale), scale_std=float(es.scale_std), metric=bool(es.metric),
        chain_residual=float(es.chain_residual), last_window_ms=float(es.last_window_ms),
        last_localize_ms=float(es.last_localize_ms), latency_ms=float(nc.latency_ms),
        memory_bytes=int(nc.memory_bytes),
    )


def diagnostic_values(es: EngineStatus, bs: BackendStatus, nc: NodeCounters) -> dict[str, Any]:
    """``/diagnostics`` key -> value: the status fields, ``count_<reason>`` of every node counter, every
    BackendStatus field and every EngineStatus field not already a status field (renamed per
    :data:`BACKEND_KEY_RENAMES` / :data:`ENGINE_KEY_RENAMES` where the name would clash;
    ``engine_last_error`` only when there is one)."""
    v = status_values(es, bs, nc)
    v.update({f"count_{k}": n for k, n in sorted(nc.counts.items())})
    for name, val in dataclasses.asdict(bs).items():
        v[BACKEND_KEY_RENAMES.get(name, name)] = val
    for name, val in dataclasses.asdict(es).items():
        key = ENGINE_KEY_RENAMES.get(name, name)
        if key in STATUS_FIELDS or (name == "last_error" and not val):
            continue
        v[key] = val
    return v


def diagnostic_problems(values: dict[str, Any], random_weights: bool, seconds_since_image: float,
                        no_image_warn_s: float, image_topic: str) -> list[str]:
    """Why ``/diagnostics`` warns (empty list: OK): random weights, no image for more than
    ``no_image_warn_s`` seconds, tracking lost."""
    problems = []
    if random_weights:
        problems.append("RANDOM WEIGHTS: outputs are meaningless (plumbing only)")
    if seconds_since_image > no_image_warn_s:
        problems.append(f"no image since {seconds_since_image:.1f} s on {image_topic}")
    if values["state"] == "lost":
        problems.append("tracking lost")
    return problems


def rss_bytes() -> int:
    """Resident memory of this process (bytes) from ``/proc/self/statm``; 0 where unavailable."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def fill_message(msg: Any, values: dict[str, Any]) -> Any:
    """Set every field of a ``SelfiStatus`` message from :func:`status_values` (returns ``msg``)."""
    for k, val in values.items():
        setattr(msg, k, val)
    return msg

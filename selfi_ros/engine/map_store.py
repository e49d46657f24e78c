"""Saving the whole reusable map to a folder and loading it again (map reuse, localization-only mode).

Layout of a map folder (written into a temporary sibling folder, then renamed into place, so a reader or
a crash never sees half a map; an existing map folder is replaced only once the new one is complete)::

    metadata.json      format, backend map signature (Backend.map_signature), camera (K, width, height),
                       frames, windows, segments, metric scale, the engine status at save time
    windows.json       per window: id, segment, memory folder, anchor stamps
    windows.npz        per window: anchor descriptors and subsampled window-frame cloud (+ colours)
    memories/window_<id>/   each WindowMemory.save
    graph.json         the pose graph (window Sim(3)s, chain and loop edges, priors)
    trajectory.tum     the poses of the run that made the map (map frame, map units)
    map.ply            the voxelised map cloud (map units)

Loading checks every file and compares the backend signature key by key and the camera (when one is
given or the engine already saw one); any problem raises :class:`MapLoadError` with a one-line reason
and leaves the engine as it was. Memories are read back lazily from the map folder (``Backend.load_window``),
each once at load to check it is readable.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
from typing import Optional

import numpy as np

from selfi_ros.atomic import atomic_write_bytes, atomic_write_text
from selfi_ros.engine import io as eio
from selfi_ros.engine.pose_graph import PoseGraph

FORMAT = "selfi_ros.map/1"


class MapLoadError(ValueError):
    """A map folder cannot be used: missing or corrupt files, another backend signature or camera."""


def _camera_json(camera) -> Optional[dict]:
    if camera is None:
        return None
    K, w, h = camera
    return {"K": np.asarray(K, np.float64).tolist(), "width": int(w), "height": int(h)}


def camera_mismatch(saved: Optional[dict], camera) -> str:
    """Why ``camera`` ``(K, width, height)`` differs from a saved one ("" when it matches or either is
    unknown): size, or intrinsics beyond 0.1 % relative (of fx for the principal point)."""
    if saved is None or camera is None:
        return ""
    K, w, h = camera
    if (int(w), int(h)) != (int(saved["width"]), int(saved["height"])):
        return f"camera size {int(w)}x{int(h)} differs from the map's {saved['width']}x{saved['height']}"
    Ks, K = np.asarray(saved["K"], np.float64), np.asarray(K, np.float64)
    if np.abs(K - Ks).max() > 1e-3 * abs(Ks[0, 0]):
        return (f"camera intrinsics differ from the map's (fx {K[0, 0]:.6g} vs {Ks[0, 0]:.6g}, cx {K[0, 2]:.6g} vs "
                f"{Ks[0, 2]:.6g})")
    return ""


def save_map(engine, directory: str) -> dict:
    """Write ``engine``'s map into ``directory`` (layout in the module docstring). Returns ``{"directory",
    "metadata", "windows", "graph", "trajectory", "map"}`` paths.

    Raises:
        MapLoadError: the backend keeps no window memories, or no window exists yet.
        OSError: on I/O failure (nothing is left half-written at ``directory``).
    """
    db = engine.db
    if db is None:
        raise MapLoadError(f"backend {engine.backend.name!r} keeps no window memories: no reusable map")
    if not len(db):
        raise MapLoadError("no window yet: nothing to save as a map")
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(directory)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(os.path.join(tmp, "memories"))
    try:
        folders = db.save_memories(os.path.join(tmp, "memories"))
        ids = db.ids()
        ents = [db.entries[w] for w in ids]
        atomic_write_text(os.path.join(tmp, "windows.json"), json.dumps({"windows": [
            {"id": e.window_id, "segment": e.segment, "memory": "memories/" + folders[e.window_id],
             "stamps_ns": [int(x) for x in e.stamps_ns]} for e in ents]}, indent=1))
        buf = io.BytesIO()
        arrays = {}
        for e in ents:
            arrays[f"desc_{e.window_id}"] = e.descriptors
            arrays[f"cloud_{e.window_id}"] = e.cloud
            arrays[f"colors_{e.window_id}"] = e.colors
        np.savez(buf, **arrays)
        atomic_write_bytes(os.path.join(tmp, "windows.npz"), buf.getvalue())
        atomic_write_text(os.path.join(tmp, "graph.json"), json.dumps(engine.graph.to_json()))
        poses = engine.traj.poses()
        eio.write_tum(os.path.join(tmp, "trajectory.tum"), poses, ["map frame, map units (not scaled)"])
        eio.write_ply(os.path.join(tmp, "map.ply"), engine.map.points.astype(np.float32), engine.map.colors)
        st = engine.status()
        meta = {"format": FORMAT, "signature": {str(k): str(v) for k, v in engine.backend.map_signature().items()},
                "camera": _camera_json(engine._camera), "frames": int(st.poses), "windows": len(ids),
                "segments": int(st.map_segments) + 1, "metric_scale": float(st.scale) if st.metric else None,
                "loop_closures": int(st.loop_closures),
                "saved_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        eio.write_json(os.path.join(tmp, "metadata.json"), meta)
        old = None
        if os.path.exists(directory):
            old = os.path.join(parent, f".{os.path.basename(directory)}.old-{uuid.uuid4().hex[:8]}")
            os.rename(directory, old)
        os.rename(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"directory": directory, "metadata": os.path.join(directory, "metadata.json"),
            "windows": os.path.join(directory, "windows.json"), "graph": os.path.join(directory, "graph.json"),
            "trajectory": os.path.join(directory, "trajectory.tum"), "map": os.path.join(directory, "map.ply")}


def _read_json(directory: str, name: str) -> dict:
    path = os.path.join(directory, name)
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise MapLoadError(f"map {directory}: {name} is missing") from None
    except (OSError, ValueError) as e:
        raise MapLoadError(f"map {directory}: {name} is unreadable ({type(e).__name__}: {e})") from None


def load_map(engine, directory: str, camera=None) -> dict:
    """Load a map written by :func:`save_map` into ``engine`` (reset first). Returns its metadata.

    Raises:
        MapLoadError: one-line reason (missing/corrupt file, other backend signature or camera, a memory
            the backend cannot read, a backend without window memories); the engine is unchanged then.
    """
    directory = os.path.abspath(os.fspath(directory))
    if engine.db is None:
        raise MapLoadError(f"backend {engine.backend.name!r} keeps no window memories: cannot load map {directory}")
    if not os.path.isdir(directory):
        raise MapLoadError(f"map {directory}: no such folder")
    meta = _read_json(directory, "metadata.json")
    if meta.get("format") != FORMAT:
        raise MapLoadError(f"map {directory}: format {meta.get('format')!r}, expected {FORMAT!r}")
    saved = {str(k): str(v) for k, v in dict(meta.get("signature") or {}).items()}
    mine = {str(k): str(v) for k, v in engine.backend.map_signature().items()}
    for k in sorted(set(saved) | set(mine), key=lambda k: (k != "backend", k)):  # the backend name first
        if saved.get(k) != mine.get(k):
            raise MapLoadError(f"map {directory} was made with {k}={saved.get(k)!r}, this backend has "
                               f"{k}={mine.get(k)!r}")
    why = camera_mismatch(meta.get("camera"), camera if camera is not None else engine._camera)
    if why:
        raise MapLoadError(f"map {directory}: {why}")
    wins = _read_json(directory, "windows.json")
    graph = PoseGraph()
    try:
        graph.load_json(_read_json(directory, "graph.json"))
        rows = [(int(w["id"]), int(w["segment"]), os.path.join(directory, str(w["memory"])),
                 [int(x) for x in w["stamps_ns"]]) for w in wins["windows"]]
        with np.load(os.path.join(directory, "windows.npz")) as z:
            arrays = {k: np.array(z[k]) for k in z.files}
        for wid, _, folder, _ in rows:
            if wid not in graph.nodes:
                raise ValueError(f"window {wid} has no pose-graph node")
            for k in (f"desc_{wid}", f"cloud_{wid}", f"colors_{wid}"):
                if k not in arrays:
                    raise ValueError(f"windows.npz lacks {k}")
            engine.backend.load_window(folder)  # readable? (then dropped: read again on demand)
    except MapLoadError:
        raise
    except FileNotFoundError as e:
        raise MapLoadError(f"map {directory}: {os.path.basename(str(e.filename or e))} is missing") from None
    except Exception as e:  # noqa: BLE001 - corrupt content of any kind -> one clear reason
        raise MapLoadError(f"map {directory}: corrupt ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                           ) from None
    if not rows:
        raise MapLoadError(f"map {directory}: no window")
    engine.reset()
    for wid, seg, folder, stamps in rows:
        engine.db.add(wid, seg, None, arrays[f"desc_{wid}"], stamps, arrays[f"cloud_{wid}"], arrays[f"colors_{wid}"],
                      folder=folder)
    engine.graph = graph
    engine._next_window_id = max(graph.nodes) + 1
    engine._rebuild_map()
    cam = meta.get("camera")
    if cam is not None:
        engine._camera = (np.asarray(cam["K"], np.float64), int(cam["width"]), int(cam["height"]))
    engine._status.state = "localizing"
    engine.map_info = dict(meta, directory=directory)
    return dict(meta)

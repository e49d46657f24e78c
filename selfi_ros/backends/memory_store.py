"""Scene memories on disk: one SAIL-Recon scene memory as a safetensors file, and the vggt backend's
bounded store of evicted windows.

:func:`save_scene_memory` / :func:`load_scene_memory` write / read one
:class:`~selfi_ros.model.scene_memory.SceneMemory` (the anchors' cached K/V, SAIL-Recon, Deng et al., arXiv
2508.17972, Sec. 3): tensors ``k.<layer>``, ``v.<layer>`` (1, heads, M, head_dim), ``p.<j>`` (M, 2) int64
RoPE positions (stored once when layers share them; metadata ``positions_index`` maps layer -> j),
``camera_tokens`` (S_a, 2C); the scalar fields in the safetensors metadata; atomic (temporary file + rename).
A window memory (:mod:`selfi_ros.backends.vggt_memory`) holds one such file.

:class:`SceneMemoryStore` (option ``memory_store_dir``) is the backend's own spill of evicted windows: the
vggt backend keeps only the current window in RAM; with a store, a window replaced by a new one is first
saved as a window memory folder ``<directory>/window_<id>/`` (the format of ``Backend.export_window`` /
``load_window``, so a stored window and a window of a saved map read the same way), for
``VGGTBackend.localize_in_window``. At most ``max_windows`` windows are kept, the oldest deleted first: disk
use is bounded by ``max_windows`` x the memory size (16 anchors of the full model at 294x518 with 300
tokens under bf16 autocast: ~43 MB per anchor, ~0.7 GB a window). The engine's window database (issue 10:
relocalization, loop closure, map save) holds its own exported memories and does not need this store.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Optional

from selfi_ros.atomic import save_safetensors
from selfi_ros.model.scene_memory import SceneMemory

_NAME = re.compile(r"^window_(\d+)$")
_TMP = re.compile(r"^\.window_\d+\..*\.tmp$")
_LEGACY = re.compile(r"^window_\d+\.safetensors$")


def save_scene_memory(memory: SceneMemory, path: str, extra: Optional[dict] = None) -> int:
    """Write ``memory`` to ``path`` (safetensors, atomic); returns the file size in bytes.

    Args:
        extra: JSON-serialisable values stored with it (e.g. the window id, anchor stamps).
    """
    tensors, pos_index, seen = {}, [], {}
    for i, (k, v, p) in enumerate(zip(memory.keys, memory.values, memory.positions)):
        tensors[f"k.{i}"] = k.detach().cpu().contiguous()
        tensors[f"v.{i}"] = v.detach().cpu().contiguous()
        key = (p.data_ptr(), tuple(p.shape))  # layers may share one positions tensor ("all" tokens mode)
        if key not in seen:
            seen[key] = len(seen)
            tensors[f"p.{seen[key]}"] = p.detach().cpu().clone()
        pos_index.append(seen[key])
    tensors["camera_tokens"] = memory.anchor_camera_tokens.detach().cpu().contiguous()
    meta = {"num_anchors": memory.num_anchors, "tokens_per_anchor": memory.tokens_per_anchor,
            "num_patch_tokens": memory.num_patch_tokens, "image_size_hw": list(memory.image_size_hw),
            "kv_source": memory.kv_source, "query_special": memory.query_special,
            "random_weights": bool(memory.random_weights), "layers": len(memory.keys),
            "positions_index": pos_index, "extra": extra or {}}
    save_safetensors(path, tensors, {"selfi_ros_scene_memory": json.dumps(meta)})
    return os.path.getsize(path)


def load_scene_memory(path: str, device: Optional[str] = None) -> tuple[SceneMemory, dict]:
    """Read a file written by :func:`save_scene_memory` -> (memory, extra).

    Raises:
        FileNotFoundError: no such file. ValueError: not a scene-memory file.
    """
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        md = (f.metadata() or {}).get("selfi_ros_scene_memory")
        if md is None:
            raise ValueError(f"{path} is not a selfi_ros scene-memory file (no selfi_ros_scene_memory metadata)")
        meta = json.loads(md)
        n = int(meta["layers"])
        get = (lambda name: f.get_tensor(name).to(device) if device else f.get_tensor(name))
        keys = [get(f"k.{i}") for i in range(n)]
        values = [get(f"v.{i}") for i in range(n)]
        uniq = {j: get(f"p.{j}") for j in sorted(set(meta["positions_index"]))}
        positions = [uniq[j] for j in meta["positions_index"]]
        cam = get("camera_tokens")
    mem = SceneMemory(keys, values, positions, cam, int(meta["num_anchors"]), int(meta["tokens_per_anchor"]),
                      int(meta["num_patch_tokens"]), tuple(meta["image_size_hw"]), meta["kv_source"],
                      meta["query_special"], bool(meta["random_weights"]))
    return mem, meta.get("extra", {})


class SceneMemoryStore:
    """At most ``max_windows`` evicted window memories in ``directory``, oldest window deleted first.

    Each window is a folder ``window_<id>`` written by the memory's ``save`` (for the vggt backend a
    :class:`~selfi_ros.backends.vggt_memory.VGGTWindowMemory`: the same format as the engine's saved maps),
    written into a temporary folder and renamed into place, so a reader never sees half a window.

    Args:
        directory: folder of the windows (created; windows already there count towards the bound until
            :meth:`clear`).
        max_windows: bound on the number of stored windows (>= 1).

    Raises:
        ValueError: empty directory or ``max_windows`` < 1.
    """

    def __init__(self, directory: str, max_windows: int) -> None:
        if not directory:
            raise ValueError("SceneMemoryStore needs a directory")
        if int(max_windows) < 1:
            raise ValueError(f"max_windows must be >= 1, got {max_windows}")
        self.directory = str(directory)
        self.max_windows = int(max_windows)
        os.makedirs(self.directory, exist_ok=True)

    def path(self, window_id: int) -> str:
        """The folder of window ``window_id`` (whether or not it is stored)."""
        return os.path.join(self.directory, f"window_{int(window_id)}")

    def window_ids(self) -> list[int]:
        """Stored window ids, ascending."""
        ids = []
        for name in os.listdir(self.directory):
            m = _NAME.match(name)
            if m and os.path.isdir(os.path.join(self.directory, name)):
                ids.append(int(m.group(1)))
        return sorted(ids)

    @property
    def nbytes(self) -> int:
        """Bytes on disk used by the stored windows."""
        total = 0
        for i in self.window_ids():
            for root, _, files in os.walk(self.path(i)):
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        return total

    def put(self, window_id: int, memory) -> list[int]:
        """Store ``memory`` (anything with ``save(directory)``) as window ``window_id``, replacing an older
        copy, and delete the oldest windows beyond the bound; returns the deleted ids.

        Raises:
            OSError: the write failed (nothing of it is left behind).
        """
        tmp = tempfile.mkdtemp(prefix=f".window_{int(window_id)}.", suffix=".tmp", dir=self.directory)
        try:
            memory.save(tmp)
            final = self.path(window_id)
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        evicted = []
        ids = self.window_ids()
        while len(ids) > self.max_windows:
            old = ids.pop(0)
            shutil.rmtree(self.path(old), ignore_errors=True)
            evicted.append(old)
        return evicted

    def clear(self) -> int:
        """Delete every stored window (e.g. when the map they belong to is dropped), left-over temporary
        folders and files of the older one-file format; returns how many windows."""
        n = 0
        for name in os.listdir(self.directory):
            p = os.path.join(self.directory, name)
            if _NAME.match(name) or _TMP.match(name) or _LEGACY.match(name):
                n += bool(_NAME.match(name) or _LEGACY.match(name))
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    try:
                        os.unlink(p)
                    except FileNotFoundError:
                        pass
        return n

    def require(self, window_id: int) -> str:
        """The folder of stored window ``window_id``.

        Raises:
            KeyError: the window is not (or no longer) stored.
        """
        p = self.path(window_id)
        if not os.path.isdir(p):
            raise KeyError(f"window {window_id} is not in the scene-memory store {self.directory} "
                           f"(stored: {self.window_ids()})")
        return p

"""Bounded on-disk store of evicted SAIL-Recon scene memories (one safetensors file per window).

The vggt backend keeps only the current window's :class:`~selfi_ros.model.scene_memory.SceneMemory` in
RAM; when a new window replaces it, the old one is freed. With a store, the evicted memory is first
written to ``<directory>/window_<id>.safetensors`` so that frames can later be relocalized against an
older window (SAIL-Recon query pass against that window's anchors, Deng et al., arXiv 2508.17972),
e.g. when the camera returns to a place mapped earlier. At most ``max_windows`` files are kept: the
oldest window is deleted first, so disk use is bounded by ``max_windows`` x the memory size (16 anchors
of the full model at 294x518 with 300 tokens under bf16 autocast: ~43 MB per anchor, ~0.7 GB a window).

File layout: tensors ``k.<layer>``, ``v.<layer>`` (1, heads, M, head_dim), ``p.<j>`` (M, 2) int64 RoPE
positions (stored once when layers share them; metadata ``positions_index`` maps layer -> j),
``camera_tokens`` (S_a, 2C); the scalar fields in the safetensors metadata. Writes are
atomic (temporary file + rename).
"""
from __future__ import annotations

import json
import os
import re
from typing import Optional

from selfi_ros.atomic import save_safetensors
from selfi_ros.model.scene_memory import SceneMemory

_NAME = re.compile(r"^window_(\d+)\.safetensors$")


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
    """At most ``max_windows`` evicted scene memories in ``directory``, oldest window deleted first.

    Args:
        directory: folder of the ``window_<id>.safetensors`` files (created; files already there that
            match the pattern count towards the bound until :meth:`clear`).
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
        return os.path.join(self.directory, f"window_{int(window_id)}.safetensors")

    def window_ids(self) -> list[int]:
        """Stored window ids, ascending."""
        ids = []
        for name in os.listdir(self.directory):
            m = _NAME.match(name)
            if m:
                ids.append(int(m.group(1)))
        return sorted(ids)

    @property
    def nbytes(self) -> int:
        """Bytes on disk used by the stored windows."""
        return sum(os.path.getsize(self.path(i)) for i in self.window_ids() if os.path.exists(self.path(i)))

    def put(self, window_id: int, memory: SceneMemory, extra: Optional[dict] = None) -> list[int]:
        """Store ``memory`` as window ``window_id`` and evict the oldest windows beyond the bound;
        returns the evicted ids."""
        save_scene_memory(memory, self.path(window_id), {"window_id": int(window_id), **(extra or {})})
        evicted = []
        ids = self.window_ids()
        while len(ids) > self.max_windows:
            old = ids.pop(0)
            try:
                os.unlink(self.path(old))
            except FileNotFoundError:
                pass
            evicted.append(old)
        return evicted

    def clear(self) -> int:
        """Delete every stored window (e.g. when the map they belong to is dropped); returns how many."""
        ids = self.window_ids()
        for i in ids:
            try:
                os.unlink(self.path(i))
            except FileNotFoundError:
                pass
        return len(ids)

    def get(self, window_id: int, device: Optional[str] = None) -> tuple[SceneMemory, dict]:
        """Load window ``window_id`` -> (memory, extra).

        Raises:
            KeyError: the window is not (or no longer) stored.
        """
        p = self.path(window_id)
        if not os.path.exists(p):
            raise KeyError(f"window {window_id} is not in the scene-memory store {self.directory} "
                           f"(stored: {self.window_ids()})")
        return load_scene_memory(p, device)

"""The window database: what the engine keeps of every window for relocalization, loop closure and map reuse.

Per window (:class:`WindowEntry`): the backend's :class:`~selfi_ros.engine.backend.WindowMemory` (the scene
representation later frames are localized against, SAIL-Recon's anchors: official repository
HKUST-SAIL/SAIL-Recon), the anchors' global descriptors and stamps, its map segment, and a subsampled cloud
in the window frame (to rebuild the map after a pose-graph correction). The window's Sim(3) into the map is
a node of :class:`~selfi_ros.engine.pose_graph.PoseGraph`, not stored here.

Bounds: memories held in RAM are kept within ``ram_budget_bytes`` (the least recently used are spilled to
disk with ``memory.save`` into a folder of the spill directory and read back with ``backend.load_window``
when needed); at most ``max_windows`` windows are kept at all and the spill folder holds at most
``disk_budget_bytes`` (the oldest window is dropped, spill folder and all). Every eviction is counted by
reason in :attr:`WindowDatabase.evictions`: ``spilled`` (RAM -> disk), ``max_windows`` and ``disk_budget``
(dropped), ``spill_failed`` (could not be written: dropped), ``load_failed`` (a spilled memory could not be
read back: dropped).

Place recognition: :meth:`WindowDatabase.retrieve` ranks windows by the best cosine similarity between a
query descriptor and any of their anchors' descriptors (rows are L2-normalised, so the dot product is the
cosine), top-k, excluding given windows: the usual global-descriptor retrieval of loop detection (e.g.
NetVLAD, Arandjelović et al., CVPR 2016, section 5; here with whatever descriptor the backend gives).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from selfi_ros.engine.backend import Backend, WindowMemory

log = logging.getLogger("selfi_ros.engine")


@dataclass
class WindowEntry:
    """One window of the database.

    Attributes:
        window_id: the window id.
        segment: the map segment it was created in (segments merged later keep their ids).
        stamps_ns: (S,) int64 anchor stamps.
        descriptors: (S, D) float32 L2-normalised anchor descriptors ((0, 0) when the backend has none).
        cloud: (N, 3) float32 subsampled window-frame points (window units).
        colors: (N, 3) uint8 RGB of those points.
        memory: the backend memory while in RAM, else None.
        folder: where the memory lies on disk ("" when never written).
        owned: True when ``folder`` is this database's spill folder (deleted with the entry).
        last_used: counter value of the last use (least recently used spill first).
    """

    window_id: int
    segment: int
    stamps_ns: np.ndarray
    descriptors: np.ndarray
    cloud: np.ndarray
    colors: np.ndarray
    memory: Optional[WindowMemory] = None
    folder: str = ""
    owned: bool = False
    last_used: int = 0
    memory_nbytes: int = field(default=0)
    disk_nbytes: int = 0  # bytes of its spill folder (owned folders only)

    @property
    def arrays_nbytes(self) -> int:
        """Bytes of the arrays kept in RAM whatever happens to the memory."""
        return int(self.stamps_ns.nbytes + self.descriptors.nbytes + self.cloud.nbytes + self.colors.nbytes)


class WindowDatabase:
    """Bounded store of :class:`WindowEntry` (see module docstring).

    Args:
        backend: the backend whose ``load_window`` reads spilled memories back.
        ram_budget_bytes: bytes of memories kept in RAM (>= 0; 0 spills every memory but the pinned one).
        max_windows: windows kept at all (>= 1).
        disk_budget_bytes: bytes the spill folder may hold (0: no bound beyond ``max_windows``).
        spill_dir: parent folder of the spill folder ("" -> the system temporary folder); the database
            creates its own folder inside on first spill and removes it in :meth:`clear` (or when the
            database is garbage-collected, or at interpreter exit).
    """

    def __init__(self, backend: Backend, ram_budget_bytes: int, max_windows: int, spill_dir: str = "",
                 disk_budget_bytes: int = 0) -> None:
        self.backend = backend
        self.ram_budget_bytes = max(0, int(ram_budget_bytes))
        self.max_windows = max(1, int(max_windows))
        self.disk_budget_bytes = max(0, int(disk_budget_bytes))
        self.spill_parent = spill_dir
        self._spill: Optional[str] = None
        self.entries: dict[int, WindowEntry] = {}
        self.evictions: dict[str, int] = {}
        self.loads = 0
        self._clock = 0
        self.pinned: Optional[int] = None  # never spilled (the window frames are localized against)

    # ------------------------------------------------------------------ state
    def clear(self) -> None:
        """Drop every entry and remove the spill folder (counters are kept)."""
        self.entries.clear()
        self.pinned = None
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)
            self._spill = None

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, window_id: int) -> bool:
        return int(window_id) in self.entries

    def ids(self) -> list[int]:
        """Window ids in increasing order."""
        return sorted(self.entries)

    @property
    def ram_bytes(self) -> int:
        """Bytes in RAM: memories held plus every entry's arrays."""
        return int(sum(e.memory_nbytes + e.arrays_nbytes for e in self.entries.values()))

    @property
    def disk_bytes(self) -> int:
        """Bytes in this database's spill folder."""
        return int(sum(e.disk_nbytes for e in self.entries.values()))

    @property
    def spilled(self) -> int:
        """Entries whose memory is on disk only."""
        return sum(1 for e in self.entries.values() if e.memory is None)

    def _count(self, reason: str) -> None:
        self.evictions[reason] = self.evictions.get(reason, 0) + 1

    # ------------------------------------------------------------------ add / get
    def add(self, window_id: int, segment: int, memory: Optional[WindowMemory], descriptors: Optional[np.ndarray],
            stamps_ns: Iterable[int], cloud: Optional[np.ndarray] = None, colors: Optional[np.ndarray] = None,
            folder: str = "") -> WindowEntry:
        """Add a window (replacing one of the same id), then enforce the bounds. ``memory`` None with a
        ``folder``: the memory lies there (not owned: e.g. a loaded map) and is read on demand.

        Raises ValueError for descriptors that are not (S, D) finite."""
        D = np.zeros((0, 0), np.float32) if descriptors is None else np.asarray(descriptors, np.float32)
        if D.size and (D.ndim != 2 or not np.all(np.isfinite(D))):
            raise ValueError(f"window {window_id}: descriptors must be a finite (S, D) array, got {D.shape}")
        if D.size:
            n = np.linalg.norm(D, axis=1, keepdims=True)
            D = np.where(n > 1e-12, D / np.maximum(n, 1e-12), 0.0).astype(np.float32)
        P = np.zeros((0, 3), np.float32) if cloud is None else np.asarray(cloud, np.float32).reshape(-1, 3)
        C = (np.full((len(P), 3), 128, np.uint8) if colors is None else np.asarray(colors, np.uint8).reshape(-1, 3))
        self._clock += 1
        e = WindowEntry(int(window_id), int(segment), np.asarray(list(stamps_ns), np.int64), D, P, C, memory,
                        folder, False, self._clock, 0 if memory is None else int(memory.nbytes()))
        self.entries[int(window_id)] = e
        self._enforce()
        return e

    def memory(self, window_id: int) -> Optional[WindowMemory]:
        """The memory of a window (read back from disk if spilled; counted in ``loads``), or None when the
        window is unknown or its memory cannot be read (the entry is then dropped, counted ``load_failed``)."""
        e = self.entries.get(int(window_id))
        if e is None:
            return None
        self._clock += 1
        e.last_used = self._clock
        if e.memory is None:
            try:
                e.memory = self.backend.load_window(e.folder)
            except Exception as ex:  # noqa: BLE001 - BackendError or I/O: drop the entry, never crash
                log.warning("window %d: cannot read its memory back from %s: %s", e.window_id, e.folder, ex)
                self._drop(e.window_id, "load_failed")
                return None
            e.memory_nbytes = int(e.memory.nbytes())
            self.loads += 1
            self._enforce(keep=e.window_id)
        return e.memory

    # ------------------------------------------------------------------ bounds
    def _spill_root(self) -> str:
        if self._spill is None:
            parent = self.spill_parent or None
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._spill = tempfile.mkdtemp(prefix="selfi_windows_", dir=parent)
            # removed with the database (clear, garbage collection or interpreter exit): disk stays bounded
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._spill, True)
        return self._spill

    def _drop(self, window_id: int, reason: str) -> None:
        e = self.entries.pop(int(window_id), None)
        if e is None:
            return
        if e.owned and e.folder:
            shutil.rmtree(e.folder, ignore_errors=True)
        self._count(reason)

    def _enforce(self, keep: Optional[int] = None) -> None:
        """Drop the oldest windows beyond ``max_windows``; spill least recently used memories beyond the
        RAM budget (never the pinned window nor ``keep``)."""
        while len(self.entries) > self.max_windows:
            self._drop(min(self.entries), "max_windows")
        self._enforce_disk(keep)
        protect = {keep, self.pinned}
        while self.ram_bytes > self.ram_budget_bytes:
            held = [e for e in self.entries.values() if e.memory is not None and e.window_id not in protect]
            if not held:
                break
            e = min(held, key=lambda x: x.last_used)
            if not e.folder:  # first spill: write it; a memory read from disk is just dropped from RAM
                folder = os.path.join(self._spill_root(), f"window_{e.window_id:06d}")
                tmp = folder + ".tmp"
                try:
                    shutil.rmtree(tmp, ignore_errors=True)
                    os.makedirs(tmp)
                    e.memory.save(tmp)
                    os.replace(tmp, folder)
                except Exception as ex:  # noqa: BLE001 - OSError or a backend failure: drop, counted
                    shutil.rmtree(tmp, ignore_errors=True)
                    log.warning("window %d: cannot spill its memory to %s: %s", e.window_id, folder, ex)
                    self._drop(e.window_id, "spill_failed")
                    continue
                e.folder, e.owned = folder, True
                e.disk_nbytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)
            e.memory, e.memory_nbytes = None, 0
            self._count("spilled")
        self._enforce_disk(keep)

    def _enforce_disk(self, keep: Optional[int]) -> None:
        """Drop the oldest spilled windows while the spill folder exceeds ``disk_budget_bytes``."""
        while self.disk_budget_bytes and self.disk_bytes > self.disk_budget_bytes:
            on_disk = [w for w, e in self.entries.items() if e.disk_nbytes and w not in (keep, self.pinned)]
            if not on_disk:
                return
            self._drop(min(on_disk), "disk_budget")

    # ------------------------------------------------------------------ retrieval
    def retrieve(self, descriptor: np.ndarray, k: int, exclude: Iterable[int] = (), min_similarity: float = -1.0
                 ) -> list[tuple[int, float]]:
        """Top-``k`` windows for a (D,) L2-normalised query descriptor: ``[(window_id, similarity)]``,
        best first, similarity = max over the window's anchors of the cosine (windows without descriptors,
        of another length, in ``exclude`` or below ``min_similarity`` are left out)."""
        q = np.asarray(descriptor, np.float32).reshape(-1)
        ex = {int(x) for x in exclude}
        scored = []
        for wid, e in self.entries.items():
            if wid in ex or e.descriptors.size == 0 or e.descriptors.shape[1] != len(q):
                continue
            sim = float(np.max(e.descriptors @ q))
            if sim >= min_similarity:
                scored.append((wid, sim))
        scored.sort(key=lambda x: (-x[1], -x[0]))
        return scored[:max(0, int(k))]

    def save_memories(self, directory: str) -> dict[int, str]:
        """Write every entry's memory into ``directory/window_<id>/`` (``memory.save``, or a copy of its
        folder when not in RAM). Returns window id -> folder name. Raises OSError / BackendError."""
        out = {}
        for wid in self.ids():
            e = self.entries[wid]
            name = f"window_{wid:06d}"
            dst = os.path.join(directory, name)
            if e.memory is not None:
                os.makedirs(dst)
                e.memory.save(dst)
            else:
                shutil.copytree(e.folder, dst)
            out[wid] = name
        return out

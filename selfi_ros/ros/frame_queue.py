"""The node's frame queue between the input callbacks and the engine worker (no ROS imports).

:class:`ThinningQueue` is the bounded queue of frames (:class:`~selfi_ros.engine.types.Frame`) that keeps its
time coverage when full; :class:`MapRestarts` marks in it where a new map begins after a ``restart`` event of
:class:`~selfi_ros.ros.input.FrameInput` (a time jump, a resolution change).
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Iterator, Optional, Sequence

from selfi_ros.ros.input import FrameInput, InputEvent


class MapRestarts:
    """Which queued frames start a new map, between the node's input callbacks and its engine worker.

    The input emits a ``restart`` event (a time jump, a resolution change) just before the frame that
    starts the new map; frames queued before it belong to the old map and are processed first. Each
    :meth:`request` opens a new generation; :meth:`queued` tags a frame with the current one;
    :meth:`segments` (worker) splits a batch where a newer generation begins and resets the engine
    there, so that no engine call ever mixes frames of two maps. A tagged frame the queue thins away
    loses nothing: the frames after it carry the same generation. Thread-safe (one lock).

    Args:
        warn_s: :meth:`warnings` reports the last new map for this long (s).
    """

    def __init__(self, warn_s: float = 30.0) -> None:
        self.warn_s = float(warn_s)
        self._lock = threading.Lock()
        self._gen = 0  # generations requested by the input
        self._engine_gen = 0  # the generation the engine is in (worker)
        self._tags: dict[int, int] = {}  # id(queued frame) -> its generation (removed when processed/dropped)
        self._reasons: dict[int, str] = {}  # generation -> the reason that opened it (time_jump, resolution_change)
        self._last: Optional[tuple[float, str]] = None  # (clock s, "reason: detail") of the last request

    def request(self, event: InputEvent, now_s: float) -> None:
        """A ``restart`` event at clock ``now_s`` (s): the frames queued from now on start a new map."""
        with self._lock:
            self._gen += 1
            self._reasons[self._gen] = str(event.reason)
            while len(self._reasons) > 64:  # bounded: only generations still queued matter
                self._reasons.pop(next(iter(self._reasons)))
            self._last = (now_s, f"{event.reason}: {event.detail}")

    def queued(self, frame: Any) -> None:
        """Tag ``frame`` (about to be queued) with the current generation."""
        with self._lock:
            self._tags[id(frame)] = self._gen

    def forget(self, frame: Any) -> None:
        """``frame`` left the queue without being processed (thinned away)."""
        with self._lock:
            self._tags.pop(id(frame), None)

    def segments(self, batch: Sequence[Any], new_map: Callable[[str], Any]) -> Iterator[list]:
        """Yield ``batch`` in consecutive parts of one generation each, in order, calling ``new_map(reason)``
        (reset the engine, or keep its map after a time jump: ``time_jump_action``) before the first part of
        a newer generation than the engine's (worker thread); ``reason`` is that generation's restart reason
        (``time_jump`` / ``resolution_change``). Frames never tagged count as the engine's generation."""
        start = 0
        for i, frame in enumerate(batch):
            with self._lock:
                gen = self._tags.pop(id(frame), self._engine_gen)
            if gen > self._engine_gen:
                if i > start:
                    yield list(batch[start:i])
                start = i
                self._engine_gen = gen
                with self._lock:
                    reason = self._reasons.get(gen, "time_jump")
                new_map(reason)
        if start < len(batch):
            yield list(batch[start:])

    def reset(self, frame_input: Optional["FrameInput"] = None) -> None:
        """``~/reset`` (worker, after the queue was cleared): pending new maps are absorbed by the reset;
        also resets ``frame_input`` (:meth:`FrameInput.reset`) when given."""
        if frame_input is not None:
            frame_input.reset()
        with self._lock:
            self._tags.clear()
            self._engine_gen = self._gen

    def warnings(self, now_s: float) -> list[str]:
        """The /diagnostics problem while the last new map is younger than ``warn_s`` (else [])."""
        last = self._last
        if last is None or now_s - last[0] >= self.warn_s:
            return []
        return [f"new map {now_s - last[0]:.0f} s ago after {last[1]}"]


class ThinningQueue:
    """Bounded FIFO of frames (items with ``stamp_ns``) that keeps its time coverage when full.

    ``put`` never blocks. When full, it drops the waiting frame whose removal leaves the smallest time gap
    between its neighbours (absolute: across a time jump back the gap is large; the newest frame is always
    kept; with ``maxsize`` < 3 the oldest is dropped)
    and returns it. During a long stall of the worker (a window reconstruction) the queue thus holds frames
    spread over the whole stall instead of only the last few: keyframe selection still sees intermediate
    views, so the map is not left with a gap that nothing can be localized across.
    """

    def __init__(self, maxsize: int) -> None:
        self._d: collections.deque = collections.deque()
        self._max = maxsize
        self._cv = threading.Condition()

    def put(self, item) -> Any:
        """Append ``item``; returns the item dropped to stay within ``maxsize`` (or None)."""
        with self._cv:
            self._d.append(item)
            dropped = None
            if len(self._d) > self._max:
                if len(self._d) < 4:
                    dropped = self._d.popleft()
                else:  # interior item with the smallest gap between its neighbours (ties: the oldest)
                    st = [x.stamp_ns for x in self._d]
                    k = min(range(1, len(st) - 1), key=lambda i: abs(st[i + 1] - st[i - 1]))
                    dropped = self._d[k]
                    del self._d[k]
            self._cv.notify()
            return dropped

    def get(self, timeout: float):
        """The oldest item, waiting up to ``timeout`` s; None when still empty."""
        with self._cv:
            if not self._d:
                self._cv.wait(timeout)
            return self._d.popleft() if self._d else None

    def get_all(self, timeout: float) -> list:
        """Every waiting item, oldest first, waiting up to ``timeout`` s for the first; [] when empty."""
        with self._cv:
            if not self._d:
                self._cv.wait(timeout)
            out = list(self._d)
            self._d.clear()
            return out

    def clear(self) -> int:
        """Drop everything; returns how many items were dropped."""
        with self._cv:
            n = len(self._d)
            self._d.clear()
            return n

    def __len__(self) -> int:
        return len(self._d)

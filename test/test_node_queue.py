"""The node's frame queue: bounded, never blocks, and when full keeps its time coverage (so a long worker
stall leaves intermediate frames for keyframe selection instead of a gap)."""
from types import SimpleNamespace

import numpy as np

from selfi_ros.ros.frame_queue import ThinningQueue as _ThinningQueue


def items(n, dt=100):
    return [SimpleNamespace(stamp_ns=i * dt) for i in range(n)]


def test_queue_keeps_time_coverage_and_the_newest_frame():
    q = _ThinningQueue(4)
    dropped = [q.put(x) for x in items(25)]  # a stall: 25 frames arrive, the worker takes none
    assert len(q) == 4 and sum(d is not None for d in dropped) == 21
    kept = [x.stamp_ns for x in q._d]
    assert kept == sorted(kept) and kept[0] == 0 and kept[-1] == 2400  # time order, oldest and newest kept
    gaps = np.diff(kept)
    assert gaps.max() <= 2 * 2400 / 3  # spread over the stall (drop-oldest would keep only 2100..2400)
    got = [q.get(0.01).stamp_ns for _ in range(4)]
    assert got == kept and q.get(0.01) is None  # FIFO; empty -> None after the timeout


def test_small_queue_drops_the_oldest():
    q = _ThinningQueue(2)
    assert [q.put(x) for x in items(3)][:2] == [None, None]
    assert [x.stamp_ns for x in q._d] == [100, 200]
    q1 = _ThinningQueue(1)
    q1.put(items(1)[0])
    assert q1.put(SimpleNamespace(stamp_ns=5)).stamp_ns == 0 and len(q1) == 1

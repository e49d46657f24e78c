"""Basics shared by the message conversions: :class:`ConversionError`, ``builtin_interfaces/Time`` <->
integer nanoseconds, and a uint8 view of a message's ``uint8[]`` field."""
from __future__ import annotations

import numpy as np


class ConversionError(ValueError):
    """A message cannot be converted (unknown encoding, inconsistent sizes, bad intrinsics, ...)."""


# --------------------------------------------------------------------------------------------- time

def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int):
    """Integer nanoseconds (>= 0) -> ``builtin_interfaces/Time``."""
    from builtin_interfaces.msg import Time

    ns = int(ns)
    if ns < 0:
        raise ConversionError(f"negative stamp {ns} ns")
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def bytes_view(data) -> np.ndarray:
    """uint8 view of a message's ``uint8[]`` field (array.array, bytes, memoryview or list)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)

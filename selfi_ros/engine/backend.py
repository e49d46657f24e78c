"""The interface every reconstruction backend implements (colmap, vggt, oracle: :mod:`selfi_ros.backends`).

A backend knows nothing about streams, window policy, chaining or ROS: the engine hands it a list of
anchor frames to reconstruct jointly, then query frames to localize against the last reconstructed
window. All geometry it returns is in the *window frame* (up to scale); the engine chains windows into
the map frame. :class:`BackendBase` gives the optional members their defaults.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from selfi_ros.engine.status import BackendStatus
from selfi_ros.engine.types import Frame, LocalizationResult, WindowReconstruction


class BackendError(RuntimeError):
    """A backend could not do what was asked (e.g. too few matches); the engine logs and counts it."""


@runtime_checkable
class Backend(Protocol):
    """Reconstruction backend.

    Attributes:
        name: short name ("colmap", "vggt", "oracle").
        random_weights: True when outputs come from a randomly initialised model (plumbing only);
            every output must then say so.
    """

    name: str
    random_weights: bool

    def reconstruct_window(self, window_id: int, anchors: Sequence[Frame]) -> WindowReconstruction:
        """Jointly reconstruct ``anchors`` (>= 2 frames, time order) and make them the current scene memory.

        Returns a :class:`WindowReconstruction` in the window frame with ``T_map_window`` = identity.
        Raises :class:`BackendError` when reconstruction fails (the previous memory stays valid).
        """
        ...

    def localize(self, frames: Sequence[Frame]) -> list[LocalizationResult]:
        """Localize ``frames`` independently against the current scene memory (window frame).

        Returns one result per frame, in order; a failed frame has ``extrinsics=None`` and a reason.
        Raises :class:`BackendError` if no window has been reconstructed yet.
        """
        ...

    def reset(self) -> None:
        """Drop all scene memory."""
        ...

    def status(self) -> BackendStatus:
        """Counters and figures of this backend (a fresh object; cheap: called at the status rate)."""
        ...

    def set_idle(self, idle: bool) -> None:
        """Tell the backend whether its caller is idle (no frames waiting): background work such as
        online adapter training runs only while idle."""
        ...

    def close(self) -> None:
        """Stop background work and release resources; the backend is not used afterwards."""
        ...


class BackendBase:
    """Defaults for the optional members of :class:`Backend`: no counters, no background work."""

    name: str = ""
    random_weights: bool = False

    def status(self) -> BackendStatus:
        """No counters: ``BackendStatus()``."""
        return BackendStatus()

    def set_idle(self, idle: bool) -> None:
        """No background work: ignored."""

    def close(self) -> None:
        """Nothing to release."""

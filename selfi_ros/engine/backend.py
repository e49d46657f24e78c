"""The interface every reconstruction backend implements (colmap, vggt, oracle: :mod:`selfi_ros.backends`).

A backend knows nothing about streams, window policy, chaining or ROS: the engine hands it a list of
anchor frames to reconstruct jointly, then query frames to localize against the last reconstructed
window. All geometry it returns is in the *window frame* (up to scale); the engine chains windows into
the map frame. :class:`BackendBase` gives the optional members their defaults.
"""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from selfi_ros.engine.status import BackendStatus
from selfi_ros.engine.types import Frame, LocalizationResult, WindowReconstruction


class BackendError(RuntimeError):
    """A backend could not do what was asked (e.g. too few matches); the engine logs and counts it."""


class MapNotSupported(BackendError):
    """The backend has no window memories (no relocalization, loop closure or map reuse)."""


@runtime_checkable
class WindowMemory(Protocol):
    """What a backend keeps of one reconstructed window so that frames can be localized against it later:
    the payload of one entry of the engine's window database (the scene representation of anchors that
    every later image is localized against, SAIL-Recon, official repository HKUST-SAIL/SAIL-Recon).

    The payload is backend specific (vggt: the window's ``SceneMemory`` of anchor tokens + subsampled point
    maps; colmap: the window's 3D points with their SIFT descriptors; oracle: the anchors' true poses). Its
    geometry is in its own *window frame*; the engine holds the window's Sim(3) into the map.

    Attributes:
        window_id: the id of the window it was exported from.
        backend: producing backend name (a memory is only used by a backend of the same name and
            :meth:`Backend.map_signature`).
    """

    window_id: int
    backend: str

    def nbytes(self) -> int:
        """Bytes held in RAM by this memory (for the database's RAM budget)."""
        ...

    def save(self, directory: str) -> None:
        """Write the memory as files into ``directory`` (exists, empty). The caller makes the write atomic
        (a temporary folder renamed into place). Raises OSError on I/O failure."""
        ...


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

    # -- window memories: relocalization, loop closure, map save/load (optional: BackendBase refuses) --

    supports_map: bool

    def map_signature(self) -> Mapping[str, str]:
        """What must match for a saved map to be reusable by this backend: at least ``backend``, plus
        e.g. ``model`` / ``checkpoint_sha256`` / ``descriptor``. Compared key by key on load."""
        ...

    def export_window(self) -> WindowMemory:
        """The memory of the current (last reconstructed) window, detached from the backend's state (later
        windows do not change it). Raises :class:`MapNotSupported` or :class:`BackendError` (no window)."""
        ...

    def load_window(self, directory: str) -> WindowMemory:
        """Read a memory written by :meth:`WindowMemory.save`. Raises :class:`BackendError` naming the folder
        and the problem when it is missing, corrupt or from another backend."""
        ...

    def localize_in(self, memory: WindowMemory, frames: Sequence[Frame]) -> list[LocalizationResult]:
        """Localize ``frames`` against ``memory`` (not the current window; the current window is left
        unchanged). Poses are camera-from-window of *that* window; ``LocalizationResult.inliers`` says how
        many 2D-3D correspondences support each pose (0 where the backend has no such notion).
        Raises :class:`MapNotSupported`."""
        ...

    def describe(self, frames: Sequence[Frame]) -> np.ndarray:
        """Global image descriptors for place recognition: (N, D) float32, rows L2-normalised, so that the
        dot product is the cosine similarity. Raises :class:`MapNotSupported`."""
        ...


class BackendBase:
    """Defaults for the optional members of :class:`Backend`: no counters, no background work."""

    name: str = ""
    random_weights: bool = False
    supports_map: bool = False

    def status(self) -> BackendStatus:
        """No counters: ``BackendStatus()``."""
        return BackendStatus()

    def set_idle(self, idle: bool) -> None:
        """No background work: ignored."""

    def close(self) -> None:
        """Nothing to release."""

    def map_signature(self) -> Mapping[str, str]:
        """``{"backend": name}``."""
        return {"backend": self.name}

    def export_window(self) -> WindowMemory:
        """Refused: :class:`MapNotSupported`."""
        raise MapNotSupported(f"backend {self.name!r} keeps no window memories")

    def load_window(self, directory: str) -> WindowMemory:
        """Refused: :class:`MapNotSupported`."""
        raise MapNotSupported(f"backend {self.name!r} keeps no window memories")

    def localize_in(self, memory: WindowMemory, frames: Sequence[Frame]) -> list[LocalizationResult]:
        """Refused: :class:`MapNotSupported`."""
        raise MapNotSupported(f"backend {self.name!r} keeps no window memories")

    def describe(self, frames: Sequence[Frame]) -> np.ndarray:
        """Refused: :class:`MapNotSupported`."""
        raise MapNotSupported(f"backend {self.name!r} has no place-recognition descriptors")

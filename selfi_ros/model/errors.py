"""Errors of the model layer that carry what a user needs to act on them."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

#: what to do when a forward does not fit, shown in every out-of-memory error
LOWER_MEMORY_HINT = (
    "Lower the load: fewer frames per call (node/engine parameter window_size; query batch "
    "query_batch_size), a smaller input width (image_width, a multiple of 14, e.g. 392 or 294), fewer "
    "scene-memory tokens per anchor (tokens_per_anchor, e.g. 300), or a smaller DPT frames_chunk_size; "
    "bf16/fp16 autocast is used automatically on CUDA."
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, empty, truncated, corrupt, not a weights file, or (as
    :class:`~selfi_ros.model.loading.CheckpointMismatchError`) not matching the model.

    The message names the file and says what is wrong and what to do; built with :meth:`about` it is
    one line. Subclasses: ``WeightsNotFoundError`` (also a ``FileNotFoundError``) and
    ``CheckpointMismatchError`` (also a ``RuntimeError``) in :mod:`selfi_ros.model.loading`.

    Attributes:
        path: the file or directory concerned ("" when there is none).
    """

    path: str = ""

    @classmethod
    def about(cls, path, problem: str, todo: str, cause: Optional[BaseException] = None) -> "CheckpointError":
        """``cls("checkpoint <path>: <problem> (<cause type>: <its first sentence>); <todo>")``, one line.

        Args:
            path: the checkpoint file or directory (str or Path).
            problem: what is wrong, e.g. ``"is empty (0 bytes)"``.
            todo: what to do about it.
            cause: the library error, if any: its type and first sentence are appended to ``problem``.
        """
        detail = ""
        if cause is not None:
            first = next((ln.strip() for ln in str(cause).splitlines() if ln.strip()), "").split(". ")[0]
            detail = f" ({type(cause).__name__}{': ' + first if first else ''})"
        err = cls(one_line(f"checkpoint {path}: {problem}{detail}; {todo}"))
        err.path = str(path)
        return err


def one_line(text: str) -> str:
    """``text`` with its lines joined by ``" | "`` (blank lines dropped), for one-line error output."""
    return " | ".join(ln.strip() for ln in str(text).splitlines() if ln.strip())


class ModelOutOfMemoryError(RuntimeError):
    """The GPU ran out of memory; the message names the frame count and the resolution.

    Attributes:
        frames: number of frames in the failing call.
        height, width: input resolution in pixels (network input, after preprocessing).
    """

    def __init__(self, what: str, frames: int, height: int, width: int, cause: BaseException):
        self.frames, self.height, self.width = int(frames), int(height), int(width)
        super().__init__(f"out of GPU memory {what} {self.frames} frame(s) at {self.height}x{self.width} px "
                         f"({cause}). {LOWER_MEMORY_HINT}")


@contextlib.contextmanager
def oom_guard(what: str, images: torch.Tensor) -> Iterator[None]:
    """Turn ``torch.cuda.OutOfMemoryError`` raised inside the block into :class:`ModelOutOfMemoryError`.

    Args:
        what: the operation, e.g. ``"running VGGT on"``.
        images: the call's input ([S, 3, H, W] or [B, S, 3, H, W]); frames = all but the last 3 axes.
    """
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        shape = tuple(images.shape)
        frames = 1
        for n in shape[:-3]:
            frames *= int(n)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise ModelOutOfMemoryError(what, frames, shape[-2], shape[-1], e) from e

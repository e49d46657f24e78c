"""Atomic file writes shared by every layer (engine outputs, checkpoints, adapters, scene memories, training
state): the data goes to a temporary file in the same folder, is flushed to disk, then ``os.replace``d, so a
reader (or a crash) never sees a half-written file. torch and safetensors are imported only by the functions
that need them.

File mode: ``tempfile.mkstemp`` creates its file with mode 0600; before the rename the file gets the mode that
``open(path, "w")`` would give a new file, ``0o666 & ~umask`` (0644 under the usual umask 022), whether or not
``path`` already exists (an existing file's own mode is not kept: the umask mode is applied, as for a file
written anew)."""
from __future__ import annotations

import io
import os
import tempfile
import threading
from typing import Mapping, Optional


_UMASK_LOCK = threading.Lock()


def _current_umask() -> int:
    """The process umask (``os.umask`` can only be read by setting it, so set-and-restore under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; creates the parent folder. Returns the path.

    The file ends with mode ``0o666 & ~umask`` (see the module docstring). Raises ``OSError`` from the file
    system (the temporary file is removed then)."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path: str, text: str) -> str:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_safetensors(path: str, tensors: Mapping, metadata: Optional[Mapping[str, str]] = None) -> str:
    """Write a dict of contiguous CPU tensors as a ``.safetensors`` file atomically (string metadata)."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save(dict(tensors), metadata=dict(metadata) if metadata else None))


def torch_save(path: str, obj) -> str:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())

"""Backend registry: ``make_backend(name, **options)`` imports the backend's module only when asked.

| name     | module                    | needs                                  |
|----------|---------------------------|----------------------------------------|
| colmap   | backends/colmap.py        | pycolmap (CPU, no weights)             |
| vggt     | backends/vggt.py          | torch + VGGT/SAIL-Recon weights        |
| oracle   | backends/oracle.py        | ground-truth depth and poses (tests)   |
"""
from __future__ import annotations

import importlib

from selfi_ros.engine.backend import Backend

_BACKENDS = {
    "colmap": ("selfi_ros.backends.colmap", "ColmapBackend"),
    "vggt": ("selfi_ros.backends.vggt", "VGGTBackend"),
    "oracle": ("selfi_ros.backends.oracle", "OracleBackend"),
}


def available_backends() -> list[str]:
    """Names accepted by :func:`make_backend`."""
    return sorted(_BACKENDS)


def make_backend(name: str, **options) -> Backend:
    """Construct backend ``name`` with keyword ``options`` (each backend documents its own).

    Raises:
        ValueError: unknown backend name.
    """
    try:
        module, cls = _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(available_backends())}") from None
    return getattr(importlib.import_module(module), cls)(**options)

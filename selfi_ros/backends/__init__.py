"""Backend registry: ``make_backend(name, config=None, **options)`` imports the backend's module only when
asked; ``backend_config_class(name)`` gives its options' dataclass (:mod:`selfi_ros.backends.config`).

| name     | module                    | options                | needs                                  |
|----------|---------------------------|------------------------|----------------------------------------|
| colmap   | backends/colmap.py        | ColmapBackendConfig    | pycolmap (CPU, no weights)             |
| vggt     | backends/vggt.py          | VGGTBackendConfig      | torch + VGGT/SAIL-Recon weights        |
| oracle   | backends/oracle.py        | its own arguments      | ground-truth depth and poses (tests)   |
"""
from __future__ import annotations

import importlib
from typing import Optional

from selfi_ros.backends.config import NODE_BACKEND_CONFIGS
from selfi_ros.engine.backend import Backend

_BACKENDS = {
    "colmap": ("selfi_ros.backends.colmap", "ColmapBackend"),
    "vggt": ("selfi_ros.backends.vggt", "VGGTBackend"),
    "oracle": ("selfi_ros.backends.oracle", "OracleBackend"),
}


def available_backends() -> list[str]:
    """Names accepted by :func:`make_backend`."""
    return sorted(_BACKENDS)


def _check(name: str) -> tuple[str, str]:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(available_backends())}") from None


def backend_config_class(name: str) -> Optional[type]:
    """The config dataclass of backend ``name`` (``ColmapBackendConfig``, ``VGGTBackendConfig``), or None
    for a backend that takes its own arguments (``oracle``: test code, its ground truth is an object).

    Raises:
        ValueError: unknown backend name.
    """
    _check(name)
    return NODE_BACKEND_CONFIGS.get(name)


def make_backend(name: str, config=None, **options) -> Backend:
    """Construct backend ``name`` from ``config`` (an instance of :func:`backend_config_class`) and/or
    keyword ``options`` (fields of that config, overriding it; the oracle's own arguments for ``oracle``).

    Raises:
        ValueError: unknown backend name; :class:`~selfi_ros.backends.config.BackendConfigError` (a
            ValueError) for an option the backend does not have or an invalid value.
    """
    module, cls = _check(name)
    ctor = getattr(importlib.import_module(module), cls)
    return ctor(**options) if config is None else ctor(config, **options)

"""Shared output step of the benchmark scripts: print a markdown report and store it under results/."""
from __future__ import annotations

from pathlib import Path

from selfi_ros.engine.io import atomic_write_text


def emit(lines: list[str], out: str | Path) -> Path:
    """Print ``lines`` (markdown) and write them to ``out`` atomically, replacing an earlier run's report
    (results of one run stay together; git history keeps the earlier ones). Returns the path."""
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(out)
    atomic_write_text(str(out), text)
    print(f"wrote {out}")
    return out

"""Saved points: one JSON record per finished point, keyed by the hash of its determinants (provenance), written
atomically and read back only when complete and of the same key; and the thread count every point runs with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lba_core.fileio import atomic_write_text

from .provenance import SHORT_HASH

#: Threads per training process. Fixed, not derived from the machine, because torch's float reductions
#: depend on the thread count: the same sweep gives the same bits on any machine with the same libraries.
POINT_THREADS = 1


def read_point(path: Path, key: str) -> dict[str, Any] | None:
    """A finished point whose key matches, or None (absent, half-written, or of other settings)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not record.get("complete") or record.get("key") != key:
        return None
    return record


def write_point(path: Path, record: dict[str, Any]) -> None:
    """Save ``record`` (which holds its ``key``) as finished, atomically."""
    atomic_write_text(path, json.dumps({**record, "complete": True}, indent=1, sort_keys=True))


def point_path(points: Path, kind: str, key: str, suffix: str = ".json") -> Path:
    """``<points>/<kind>-<short key><suffix>``."""
    return points / f"{kind}-{key[:SHORT_HASH]}{suffix}"


def limit_threads(threads: int) -> None:
    """torch's and (when installed) Numba's thread pools of this process, to ``threads``."""
    import torch

    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass

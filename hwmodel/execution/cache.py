"""A content-addressed cache of synthesis results on disk.

A result is keyed by the SHA-256 of everything that determines it (the Verilog text, the Yosys version and
the Yosys script). Each entry is written atomically (temporary file, then rename) inside an envelope that
carries the key, a schema version and a checksum of the result, so a truncated, edited or foreign file is
detected on read, dropped and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lba_core.fileio import atomic_write_text

CACHE_ENV_VAR = "LBA_HWMODEL_CACHE"
SCHEMA_VERSION = 2


def default_cache_dir() -> Path:
    """``$LBA_HWMODEL_CACHE`` if set, else ``~/.cache/lba-hwmodel``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured) if configured else Path.home() / ".cache" / "lba-hwmodel"


def content_key(*parts: str) -> str:
    """SHA-256 over the parts, each length-prefixed so that ("ab", "c") and ("a", "bc") differ."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _checksum(result: Any) -> str:
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()


class ResultCache:
    """JSON results under ``root/<key[:2]>/<key>.json``; ``root=None`` disables caching."""

    def __init__(self, root: Path | str | None):
        self.root = None if root is None else Path(root).expanduser()
        self.corrupt_entries = 0

    def path(self, key: str) -> Path:
        if self.root is None:
            raise ValueError("the cache is disabled")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        """The cached result, or None when absent; a damaged entry is deleted and reported as absent."""
        if self.root is None:
            return None
        path = self.path(key)
        try:
            envelope = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self._drop(path)
            return None
        if (
            not isinstance(envelope, dict)
            or envelope.get("schema") != SCHEMA_VERSION
            or envelope.get("key") != key
            or "result" not in envelope
            or envelope.get("checksum") != _checksum(envelope["result"])
        ):
            self._drop(path)
            return None
        return envelope["result"]

    def put(self, key: str, result: Any) -> None:
        if self.root is None:
            return
        envelope = {"schema": SCHEMA_VERSION, "key": key, "checksum": _checksum(result), "result": result}
        atomic_write_text(self.path(key), json.dumps(envelope, sort_keys=True))

    def _drop(self, path: Path) -> None:
        self.corrupt_entries += 1
        path.unlink(missing_ok=True)

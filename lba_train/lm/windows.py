"""Byte windows of documents: random training batches and fixed, evenly spread evaluation windows."""

from __future__ import annotations

import numpy as np
import torch

from lba_core import ConfigError


def byte_stream(documents: dict[str, bytes]) -> torch.Tensor:
    """The documents concatenated in name order, as int64 byte values."""
    if not documents:
        raise ConfigError("byte_stream: no documents")
    data = b"".join(documents[name] for name in sorted(documents))
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))


def random_windows(stream: torch.Tensor, length: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` windows of ``length`` consecutive bytes at uniformly random offsets (batch, length)."""
    if stream.numel() <= length:
        raise ConfigError(f"the training text has {stream.numel()} bytes, fewer than one window of {length + 1}")
    starts = torch.randint(0, stream.numel() - length, (batch,), generator=generator)
    return torch.stack([stream[start:start + length] for start in starts.tolist()])


def evaluation_windows(documents: dict[str, bytes], length: int, count: int | None = None) -> torch.Tensor:
    """Non-overlapping windows of ``length`` bytes cut from each document (a document's tail shorter than a
    window is dropped); with ``count``, that many of them, evenly spread over all documents (name order).
    Returns (windows, length) int64. Each window is scored on its own (its first byte has no context)."""
    if length < 2:
        raise ConfigError(f"an evaluation window needs at least 2 bytes, got {length}")
    cut = []
    for name in sorted(documents):
        data = np.frombuffer(documents[name], dtype=np.uint8)
        whole = len(data) // length
        cut.extend(data[index * length:(index + 1) * length] for index in range(whole))
    if not cut:
        raise ConfigError(f"no document has {length} bytes, the length of one evaluation window")
    if count is not None:
        if count < 1:
            raise ConfigError(f"the number of evaluation windows must be positive, got {count}")
        if count < len(cut):
            cut = [cut[index] for index in np.linspace(0, len(cut) - 1, count).round().astype(int)]
    return torch.from_numpy(np.stack(cut).astype(np.int64))

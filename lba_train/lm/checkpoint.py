"""Saving and loading a :class:`ByteLM` (float32 state dict and its :class:`LMConfig`, torch's safe loader)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from lba_core import ConfigError

from .model import ByteLM, LMConfig

#: The committed model, trained by scripts/train_lm.py (data/lm/train_log.json).
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "data" / "lm" / "byte_lm.pt"


def save_model(model: ByteLM, path: Path) -> None:
    torch.save({"config": asdict(model.cfg), "state": model.state_dict()}, path)


def load_model(path: Path = DEFAULT_WEIGHTS) -> ByteLM:
    """The model saved at ``path`` (default: the committed one), float32, eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no language model at {path}: train one with scripts/train_lm.py")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = ByteLM(LMConfig(**saved["config"]))
    model.load_state_dict(saved["state"])
    return model.eval()

"""Float training of the byte-level language model: deterministic (seeded batches and initialisation), AdamW
with linear warm-up and cosine decay, a validation bits-per-byte curve."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lba_core import ConfigError

from .model import ByteLM, LMConfig
from .windows import byte_stream, evaluation_windows, random_windows

LN2 = math.log(2.0)


@dataclass(frozen=True)
class LMTrainOptions:
    """Steps, batch (windows of ``context + 1`` bytes), learning rate schedule, seed, threads, logging."""

    steps: int = 300
    batch: int = 16
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.1
    clip: float = 1.0
    seed: int = 0
    threads: int = 2
    log_every: int = 25
    validation_windows: int = 32

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "threads", "log_every", "validation_windows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LMTrainOptions.{name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"LMTrainOptions.lr must be positive, got {self.lr}")


@dataclass
class LMTrainResult:
    """The trained model, its log (step, train and validation bits per byte, seconds) and the wall time."""

    model: ByteLM
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def bits_per_byte(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-byte cross-entropy in bits."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)) / LN2


@torch.no_grad()
def validation_bpb(model: ByteLM, windows: torch.Tensor, batch: int = 16) -> float:
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, windows.shape[0], batch):
        chunk = windows[start:start + batch]
        total += float(bits_per_byte(model(chunk[:, :-1]), chunk[:, 1:])) * chunk.shape[0]
    model.train(was_training)
    return total / windows.shape[0]


def learning_rate(options: LMTrainOptions, step: int) -> float:
    if step < options.warmup:
        return options.lr * (step + 1) / options.warmup
    progress = (step - options.warmup) / max(1, options.steps - options.warmup)
    return options.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_lm(train: dict[str, bytes], validation: dict[str, bytes], cfg: LMConfig = LMConfig(),
             options: LMTrainOptions = LMTrainOptions(), progress=None) -> LMTrainResult:
    """Train a :class:`ByteLM` from scratch in float32 on the ``train`` documents; ``progress(entry)`` is
    called with every log entry."""
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    model = ByteLM(cfg)
    stream = byte_stream(train)
    held_out = evaluation_windows(validation, cfg.context + 1, options.validation_windows)
    generator = torch.Generator().manual_seed(options.seed)
    decay = [p for name, p in model.named_parameters() if p.dim() >= 2 and "embed" not in name and "position" not in name]
    rest = [p for name, p in model.named_parameters() if not any(p is q for q in decay)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": options.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=options.lr, betas=(0.9, 0.95))
    result = LMTrainResult(model=model)
    started = time.perf_counter()
    running = 0.0
    for step in range(options.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(options, step)
        batch = random_windows(stream, cfg.context + 1, options.batch, generator)
        loss = bits_per_byte(model(batch[:, :-1]), batch[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.clip)
        optimizer.step()
        running += float(loss.detach())
        done = step + 1
        if done % options.log_every == 0 or done == options.steps:
            count = done % options.log_every or options.log_every
            entry = {"step": done, "train_bpb": running / count, "validation_bpb": validation_bpb(model, held_out),
                     "lr": learning_rate(options, step), "seconds": time.perf_counter() - started}
            running = 0.0
            result.log.append(entry)
            if progress is not None:
                progress(entry)
    result.seconds = time.perf_counter() - started
    model.eval()
    return result


def unigram_bits_per_byte(train: dict[str, bytes], test: dict[str, bytes]) -> float:
    """The baseline a language model must beat: test bits per byte under the training split's byte
    frequencies (add-one smoothed over the 256 byte values)."""
    counts = torch.bincount(byte_stream(train), minlength=256).to(torch.float64) + 1.0
    log_p = torch.log2(counts / counts.sum())
    return float(-log_p[byte_stream(test)].mean())

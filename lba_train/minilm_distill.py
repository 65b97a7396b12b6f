"""The two-stage distillation of an lbaified sentence encoder (:mod:`lba_train.minilm`) toward the FP32 model's
embeddings: stage 1 with ``underflow=False`` (small partial sums are not flushed and keep their gradient path),
stage 2 with the hardware's arithmetic, each with its own warm-up and cosine schedule and early stopping on
held-out sentences. Works on any module whose forward takes a batch of token tensors and returns embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from lba_core import ConfigError

from .convert import set_lba_config


@dataclass(frozen=True)
class DistillConfig:
    """The two-stage distillation toward FP32 embeddings: at most ``stage1_steps`` with ``underflow=False``
    (the simulation-only mode), then at most ``stage2_steps`` with the real, flushing accumulator. Loss: mean
    of 1 - cos(student, teacher) over a batch of fine-tuning sentences.

    Each stage has its own schedule: ``warmup_steps`` of linear warm-up to ``lr``, then cosine decay to zero
    at the stage's last step. With held-out batches, the held-out loss is measured at the start of a stage
    and every ``eval_every`` steps; a stage stops after ``patience`` measurements without an improvement of
    more than ``min_delta`` and keeps the weights of its best measurement (so a stage never ends worse on the
    held-out sentences than it began)."""

    stage1_steps: int = 150
    stage2_steps: int = 150
    lr: float = 1e-5
    seed: int = 0
    warmup_steps: int = 10
    eval_every: int = 25
    patience: int = 3
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.stage1_steps < 0 or self.stage2_steps < 0:
            raise ConfigError(f"stage steps must be >= 0, got {self.stage1_steps} and {self.stage2_steps}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.eval_every < 1 or self.patience < 1 or self.min_delta < 0:
            raise ConfigError(f"need warmup_steps >= 0, eval_every >= 1, patience >= 1 and min_delta >= 0, got "
                              f"{self.warmup_steps}, {self.eval_every}, {self.patience} and {self.min_delta}")

    def lr_at(self, step: int, stage_steps: int) -> float:
        """The learning rate of step ``step`` (0-based) of a stage of ``stage_steps`` steps."""
        warmup = min(self.warmup_steps, stage_steps)
        if step < warmup:
            return self.lr * (step + 1) / (warmup + 1)
        decay = max(stage_steps - warmup, 1)
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / decay))


@dataclass
class DistillResult:
    """What a distillation did: the training loss of every step taken, the held-out losses as
    ``(step, stage, loss)`` (global step count when measured), the steps each stage ran and the step whose
    weights each stage kept."""

    losses: list[float]
    held_out: list[tuple[int, int, float]]
    stage_steps: tuple[int, int]
    kept_step: tuple[int, int]

    @property
    def steps(self) -> int:
        return len(self.losses)


def distillation_loss(student: nn.Module, batch: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    return (1 - (student(**batch) * target).sum(dim=1)).mean()


def held_out_loss(student: nn.Module, batches: list[dict[str, torch.Tensor]], targets: list[torch.Tensor]) -> float:
    """Mean distillation loss per sentence over the held-out batches, without gradients."""
    with torch.no_grad():
        total = sum(float(distillation_loss(student, batch, target)) * len(target)
                    for batch, target in zip(batches, targets))
    return total / sum(len(target) for target in targets)


def distill(student: nn.Module, batches: list[dict[str, torch.Tensor]], targets: list[torch.Tensor],
            config: DistillConfig, progress: bool = True,
            held_out: tuple[list[dict[str, torch.Tensor]], list[torch.Tensor]] | None = None) -> DistillResult:
    """Fine-tune ``student`` (an lbaified encoder, in place) toward ``targets`` (one (B, D) tensor of FP32
    embeddings per batch); ``held_out`` = (batches, targets) of sentences not trained on enables early
    stopping (see :class:`DistillConfig`). Leaves the model with ``underflow=True``."""
    if len(batches) != len(targets) or not batches:
        raise ValueError(f"distill needs one target tensor per batch, got {len(batches)} batches and {len(targets)}")
    if held_out is not None and (len(held_out[0]) != len(held_out[1]) or not held_out[0]):
        raise ValueError("distill's held_out needs one target tensor per held-out batch, and at least one batch")
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.0)
    # Dropout stays off (eval mode): the teacher's targets were computed without it. Gradients flow all the same.
    student.eval()
    result = DistillResult([], [], (0, 0), (0, 0))
    ran, kept = [0, 0], [0, 0]
    bar = tqdm(total=config.stage1_steps + config.stage2_steps, desc="distill", disable=not progress)
    for stage, (steps, underflow) in enumerate(((config.stage1_steps, False), (config.stage2_steps, True))):
        set_lba_config(student, underflow=underflow)
        best, best_state, since_best = math.inf, None, 0

        def measure() -> bool:
            """Held-out loss now; True when the stage should stop."""
            nonlocal best, best_state, since_best
            loss = held_out_loss(student, *held_out)
            result.held_out.append((result.steps, stage + 1, loss))
            if loss < best - config.min_delta:
                best, since_best = loss, 0
                best_state = {name: value.detach().clone() for name, value in student.state_dict().items()}
                kept[stage] = result.steps
            else:
                since_best += 1
            return since_best >= config.patience

        if held_out is not None and steps:
            measure()
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step, steps)
            index = int(torch.randint(len(batches), (1,), generator=generator))
            loss = distillation_loss(student, batches[index], targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            result.losses.append(loss.item())
            ran[stage] += 1
            bar.update()
            last = step == steps - 1
            if held_out is not None and ((step + 1) % config.eval_every == 0 or last) and measure():
                break
        if held_out is None:
            kept[stage] = result.steps
        elif best_state is not None:
            student.load_state_dict(best_state)
    bar.close()
    set_lba_config(student, underflow=True)
    result.stage_steps, result.kept_step = tuple(ran), tuple(kept)
    return result

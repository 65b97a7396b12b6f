"""The paper's two-stage fine-tuning of the language model on an accumulator (the recipe of
:func:`lba_train.finetuning.finetune`, on next-byte prediction instead of classification).

One row: the float model is converted and fitted exactly as a zero-shot row is
(:func:`~lba_train.lm.evaluate.convert_for_evaluation`: lbaify, activation ranges frozen on calibration windows,
accumulator bias or per-layer operand margins chosen on them), scored zero-shot, then trained
``steps[0]`` steps with ``underflow=False`` (stage 1: small partial sums are not flushed, so they keep their
gradient path) and ``steps[1]`` steps with ``underflow=True`` (stage 2: the hardware's arithmetic), with AdamW,
linear warm-up and cosine decay per stage, gradient clipping, the straight-through estimator of the layers'
options; and scored again with the hardware's arithmetic. The operand ranges, the bias and the margins stay
as fitted before training (the model adapts to them). Every row trains on the same batches
(:func:`finetune_batches`), so rows differ only in the accumulator; the fp32-accumulator row fine-tuned the
same way is the control that the other rows are compared with.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from lba_core import ConfigError, MacConfig

from ..convert import set_collect_stats, set_lba_config
from .evaluate import (LMEvalOptions, LMPoint, ModelOutputs, convert_for_evaluation, model_context, model_outputs,
                       score_converted, test_windows)
from ..finetuning import stage_pair
from .train import LMTrainOptions, bits_per_byte, learning_rate
from .windows import byte_stream, random_windows


@dataclass(frozen=True)
class LMFinetuneOptions:
    """``steps`` and ``lr``: one value or a pair (stage 1 with underflow off, stage 2 with underflow on);
    ``batch`` windows of ``context + 1`` training bytes per step; ``warmup`` steps of linear warm-up at the
    start of each stage, then cosine decay to zero; gradient norm clipped at ``clip``; ``seed`` draws the
    training windows (the same for every row); ``threads``: torch threads (None: leave as is)."""

    steps: tuple[int, int] = (20, 20)
    lr: tuple[float, float] = (3e-4, 1e-4)
    batch: int = 4
    warmup: int = 3
    clip: float = 1.0
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        steps, lrs = stage_pair(self.steps, "LMFinetuneOptions.steps"), stage_pair(self.lr, "LMFinetuneOptions.lr")
        if any(not isinstance(count, int) or isinstance(count, bool) or count < 0 for count in steps):
            raise ConfigError(f"LMFinetuneOptions.steps must be non-negative integers, got {self.steps!r}")
        if any(isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0 for rate in lrs):
            raise ConfigError(f"LMFinetuneOptions.lr must be positive numbers, got {self.lr!r}")
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "lr", tuple(float(rate) for rate in lrs))
        if not isinstance(self.batch, int) or self.batch < 1:
            raise ConfigError(f"LMFinetuneOptions.batch must be a positive integer, got {self.batch!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"LMFinetuneOptions.warmup must be a non-negative integer, got {self.warmup!r}")
        if not self.clip > 0:
            raise ConfigError(f"LMFinetuneOptions.clip must be positive, got {self.clip!r}")


@dataclass
class LMFinetunePoint:
    """One accumulator's fine-tuning row: the zero-shot and the fine-tuned rows (both scored with the hardware's
    arithmetic on the same test windows; ``delta_bpb`` left to the caller, who pairs rows), the training
    bits per byte of every step (``history``: stage, step, bpb, lr), the steps whose loss was not finite (the
    update skipped) and the wall time of each phase."""

    name: str
    config: dict
    zero_shot: LMPoint
    finetuned: LMPoint
    history: list[dict] = field(default_factory=list)
    skipped_steps: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def finetune_batches(train: dict[str, bytes], context: int, options: LMFinetuneOptions = LMFinetuneOptions()
                     ) -> torch.Tensor:
    """The training windows of every step of both stages, (steps, batch, context + 1) bytes at random offsets
    of the ``train`` documents drawn with ``options.seed``: the same data for every row."""
    total = sum(options.steps)
    generator = torch.Generator().manual_seed(options.seed)
    stream = byte_stream(train)
    if total == 0:
        return torch.zeros((0, options.batch, context + 1), dtype=torch.int64)
    return torch.stack([random_windows(stream, context + 1, options.batch, generator) for _ in range(total)])


def train_stages(converted: nn.Module, batches: torch.Tensor, options: LMFinetuneOptions = LMFinetuneOptions(),
                 progress=None) -> tuple[list[dict], int, list[float]]:
    """The two stages on a converted, fitted model (in place): ``options.steps[0]`` steps with underflow off,
    then ``options.steps[1]`` with underflow on, each with its own AdamW and schedule, on ``batches`` (from
    :func:`finetune_batches`) in order. Leaves the model with underflow on, in eval mode, event counting off.
    Returns the per-step history, how many steps were skipped (non-finite loss), and each stage's seconds.
    ``progress(entry)`` is called after every step."""
    if batches.shape[0] < sum(options.steps):
        raise ConfigError(f"train_stages needs {sum(options.steps)} batches, got {batches.shape[0]}")
    torch.manual_seed(options.seed)
    set_collect_stats(converted, False)
    history, skipped, seconds, offset = [], 0, [], 0
    for stage, (steps, lr, underflow) in enumerate(zip(options.steps, options.lr, (False, True)), start=1):
        started = time.perf_counter()
        set_lba_config(converted, underflow=underflow)
        converted.train()
        optimizer = torch.optim.AdamW(converted.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
        schedule = LMTrainOptions(steps=max(steps, 1), lr=lr, warmup=options.warmup)
        for step in range(steps):
            rate = learning_rate(schedule, step)
            for group in optimizer.param_groups:
                group["lr"] = rate
            batch = batches[offset + step]
            loss = bits_per_byte(converted(batch[:, :-1]), batch[:, 1:])
            optimizer.zero_grad(set_to_none=True)
            if math.isfinite(float(loss.detach())):
                loss.backward()
                torch.nn.utils.clip_grad_norm_(converted.parameters(), options.clip)
                optimizer.step()
            else:
                skipped += 1
            entry = {"stage": stage, "step": step + 1, "bpb": float(loss.detach()), "lr": rate}
            history.append(entry)
            if progress is not None:
                progress(entry)
        offset += steps
        seconds.append(time.perf_counter() - started)
    set_lba_config(converted, underflow=True)
    converted.eval()
    return history, skipped, seconds


def finetune_point(model: nn.Module, cfg: MacConfig, windows: torch.Tensor, calibration: torch.Tensor,
                   reference: ModelOutputs, batches: torch.Tensor,
                   evaluation: LMEvalOptions = LMEvalOptions(),
                   options: LMFinetuneOptions = LMFinetuneOptions(), baseline: LMFinetunePoint | None = None,
                   progress=None) -> LMFinetunePoint:
    """One accumulator's row: ``model`` (a float ByteLM or any module with its ``forward(ids)``; untouched)
    converted onto ``cfg`` and fitted on the ``calibration`` windows as ``evaluation`` says (its ``bias``),
    scored zero-shot on the test ``windows`` against the float model's outputs ``reference``, fine-tuned in
    two stages on ``batches`` (:func:`finetune_batches`) and scored again. With ``baseline`` (the control
    row, fine-tuned the same way), each stage's ``delta_bpb`` is paired with the baseline's same stage."""
    if not isinstance(cfg, MacConfig):
        raise ConfigError(f"finetune_point needs a lba_core.MacConfig, got {type(cfg).__name__}")
    threads = options.threads if options.threads is not None else evaluation.threads
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    converted, fitted = convert_for_evaluation(model, cfg, calibration, evaluation)
    zero_shot = score_converted(converted, fitted, windows, reference, baseline and baseline.zero_shot, evaluation,
                                started)
    history, skipped, stage_seconds = train_stages(converted, batches, options, progress)
    scored = time.perf_counter()
    set_collect_stats(converted, True)  # fresh counters: the fine-tuned model's events only
    finetuned = score_converted(converted, fitted, windows, reference, baseline and baseline.finetuned, evaluation,
                                scored)
    set_collect_stats(converted, False)
    seconds = {"zero_shot": zero_shot.seconds, "stage1": stage_seconds[0], "stage2": stage_seconds[1],
               "finetuned_eval": finetuned.seconds, "total": time.perf_counter() - started}
    return LMFinetunePoint(name=fitted.name, config=fitted.to_dict(), zero_shot=zero_shot, finetuned=finetuned,
                           history=history, skipped_steps=skipped, seconds=seconds)


def finetune_accumulators(model: nn.Module, test: dict[str, bytes], train: dict[str, bytes], cfgs: list[MacConfig],
                          evaluation: LMEvalOptions = LMEvalOptions(), options: LMFinetuneOptions = LMFinetuneOptions(),
                          progress=None) -> list[LMFinetunePoint]:
    """Fine-tuning rows for ``cfgs`` (the first is the control: put the fp32 accumulator first): test windows
    from the ``test`` documents, calibration windows and the training batches (the same for every row) from
    the ``train`` documents. ``progress(point)`` is called after each row."""
    if not cfgs:
        raise ConfigError("finetune_accumulators: no accumulator configurations")
    threads = options.threads if options.threads is not None else evaluation.threads
    if threads is not None:
        torch.set_num_threads(threads)
    model = model.eval()
    windows = test_windows(model, test, evaluation.windows)
    calibration = test_windows(model, train, evaluation.calibration_windows)[:, :-1]
    reference = model_outputs(model, windows, evaluation.batch)
    batches = finetune_batches(train, model_context(model), options)
    points: list[LMFinetunePoint] = []
    for cfg in cfgs:
        points.append(finetune_point(model, cfg, windows, calibration, reference, batches, evaluation, options,
                                     points[0] if points else None))
        if progress is not None:
            progress(points[-1])
    return points

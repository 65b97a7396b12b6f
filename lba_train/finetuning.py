"""The paper's recipe: put a trained float model on the low-bit-width accumulator and fine-tune it in two stages.

Stage 1 trains with ``underflow=False`` (no flush to zero: small partial sums keep their gradient path),
stage 2 with ``underflow=True`` (the hardware's arithmetic). Every accuracy is measured with the hardware's
arithmetic unless its key says otherwise. Checkpoints after every epoch make a run resumable.
:func:`run_accuracy_point` is one sweep point: the float baseline (trained or reused), then :func:`finetune`,
as a JSON-ready dict.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lba_core import ConfigError, MacConfig
from lba_core.fileio import atomic_write, atomic_write_text

from .bias import BIAS_MODES, describe_scale_margins, resolve_bias, scale_margins, set_scale_margins
from .convert import event_stats_table, layer_dot_products, lba_layers, lbaify, set_collect_stats, set_lba_config
from .data import DataBundle, load_data
from .distributed import current_ranks, from_rank0, mean_over_ranks, rank_device, shard_loader, wrap_for_training
from .layers import LayerOptions
from .models import build_model
from .ptq import apply_a2q, integer_ptq
from .train import (
    TrainOptions, check_flag, check_loader, check_lr, evaluate, labelled_batches, predict, top1_accuracy, train_epoch,
    train_float,
)

CHECKPOINT_FILE = "finetune.pt"
RESULTS_FILE = "accuracy.json"


def stage_pair(value, name: str) -> tuple:
    """``value`` as (stage 1, stage 2): a pair as given, one value for both stages."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(f"{name} must be one value or a pair (stage 1, stage 2), got {value!r}")
        return tuple(value)
    return (value, value)


@dataclass(frozen=True)
class FinetuneOptions:
    """How :func:`finetune` adapts a float model to the accumulator (the paper's two-stage recipe).

    ``epochs`` and ``lr``: one value or a pair (stage 1 with underflow off, stage 2 with underflow on), Adam.
    ``bias``: how the accumulator's exponent bias is chosen (``lba_train.bias.BIAS_MODES``), from
    ``calibration_batches`` training batches when "calibrate". ``layers``, ``skip``, ``keep_first_last``: how
    the model is converted (see :func:`lbaify`). ``stage1_underflow=True`` is the one-stage ablation.
    Configurations with integer operands (``input="int8"``) get the standard INT8 PTQ first, from the same
    calibration batches (``lba_train.ptq.integer_ptq``); ``a2q=True`` bounds the weights so that an integer
    accumulator cannot overflow (``lba_train.ptq.apply_a2q``). ``checkpoint_dir`` keeps a checkpoint after every epoch and the accuracies after every phase; a run
    restarted with the same directory resumes. ``progress`` draws progress bars and ``log`` receives one line
    per phase (both off by default: the command line turns them on).
    """

    epochs: tuple[int, int] = (1, 1)
    lr: tuple[float, float] = (1e-3, 5e-4)
    bias: str = "calibrate"
    layers: LayerOptions = field(default_factory=LayerOptions)
    skip: object = None
    keep_first_last: bool = False
    stage1_underflow: bool = False
    a2q: bool = False
    calibration_batches: int = 4
    checkpoint_dir: str | Path | None = None
    seed: int = 0
    device: str = "cpu"
    progress: bool = False
    log: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        epochs, lrs = stage_pair(self.epochs, "FinetuneOptions.epochs"), stage_pair(self.lr, "FinetuneOptions.lr")
        if any(not isinstance(count, int) or isinstance(count, bool) or count < 0 for count in epochs):
            raise ConfigError(f"FinetuneOptions.epochs must be non-negative integers, got {self.epochs!r}")
        for value in lrs:
            check_lr(value, "FinetuneOptions.lr")
        object.__setattr__(self, "epochs", epochs)
        object.__setattr__(self, "lr", lrs)
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"unknown accumulator bias mode {self.bias!r}: choose one of {', '.join(BIAS_MODES)}")
        if not isinstance(self.layers, LayerOptions):
            raise ConfigError(f"FinetuneOptions.layers must be a LayerOptions, got {type(self.layers).__name__}")
        if not isinstance(self.calibration_batches, int) or self.calibration_batches < 1:
            raise ConfigError(f"FinetuneOptions.calibration_batches must be >= 1, got {self.calibration_batches!r}")
        for name in ("keep_first_last", "stage1_underflow", "a2q", "progress"):
            check_flag(getattr(self, name), f"FinetuneOptions.{name}")
        if self.log is not None and not callable(self.log):
            raise ConfigError(f"FinetuneOptions.log must be a callable or None, got {self.log!r}")

    def replace(self, **changes) -> FinetuneOptions:
        return dataclasses.replace(self, **changes)


ACCURACY_KEYS = ("baseline", "exact_acc", "zero_shot", "stage1", "stage1_nouf", "stage2")


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns. Accuracies are fractions in [0, 1], measured with the hardware's
    arithmetic (underflow on) except ``stage1_nouf``: ``baseline`` (the float model), ``exact_acc``
    (quantized operands, exact accumulation), ``zero_shot`` (converted, not trained), ``stage1``,
    ``stage1_nouf`` and ``stage2`` (after each stage). ``cfg`` has the chosen accumulator bias; ``events`` and
    ``zero_shot_events`` are the per-layer event tables of the final and the zero-shot evaluation;
    ``seconds`` includes earlier interrupted runs; ``model`` is the fine-tuned LBA model."""

    baseline: float
    exact_acc: float
    zero_shot: float
    stage1: float
    stage1_nouf: float
    stage2: float
    cfg: MacConfig
    events: list[dict]
    zero_shot_events: list[dict]
    history: list[dict]
    seconds: float
    model: nn.Module
    #: per phase (the keys of the accuracies), the class predicted for each validation example, in order
    predictions: dict[str, list[int]] = field(default_factory=dict)
    labels: list[int] = field(default_factory=list)  # of the validation examples, in the same order

    def accuracies(self) -> dict[str, float]:
        return {key: getattr(self, key) for key in ACCURACY_KEYS}


@dataclass
class _Progress:
    """Where a fine-tuning run stands: saved in every checkpoint, so that a restarted run resumes."""

    accuracies: dict[str, float] = field(default_factory=dict)
    zero_shot_events: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # of the final evaluation
    history: list[dict] = field(default_factory=list)
    stage: int = 0  # the stage in progress (len(stages) when done)
    epoch: int = 0  # epochs of that stage already trained
    chosen_cfg: dict | None = None  # the configuration with the chosen bias, once zero-shot is measured
    scale_margins: dict[str, int] = field(default_factory=dict)  # per LBA layer (bias mode "margin")
    seconds: float = 0.0  # spent by earlier, interrupted runs
    predictions: dict[str, list[int]] = field(default_factory=dict)  # per evaluated phase, per example
    labels: list[int] = field(default_factory=list)


@dataclass
class _Stage:
    key: str
    underflow: bool
    epochs: int
    lr: float


def _save_atomically(obj, path: Path) -> None:
    atomic_write(path, lambda stream: torch.save(obj, stream))


class _FinetuneRun:
    """One call of :func:`finetune`: the converted copy, its progress, and the checkpoint it resumes from."""

    def __init__(self, model: nn.Module, train_loader, val_loader, cfg: MacConfig, options: FinetuneOptions):
        self.ranks = current_ranks(options.device)
        options = options.replace(device=rank_device(options.device))
        self.float_model, self.train_loader, self.val_loader = model, train_loader, val_loader
        self.train_shard = shard_loader(train_loader, self.ranks, options.seed) if self.ranks.distributed else None
        self.cfg, self.options = cfg, options
        self.log = (options.log if self.ranks.writes else None) or (lambda _message: None)
        self.started = time.perf_counter()
        self.stages = [_Stage("stage1", options.stage1_underflow, options.epochs[0], options.lr[0]),
                       _Stage("stage2", True, options.epochs[1], options.lr[1])]
        self.checkpoint_path = self.results_path = None
        if options.checkpoint_dir is not None:
            folder = Path(options.checkpoint_dir)
            folder.mkdir(parents=True, exist_ok=True)
            self.checkpoint_path, self.results_path = folder / CHECKPOINT_FILE, folder / RESULTS_FILE
        self.model = lbaify(model, cfg, options.layers, skip=options.skip, keep_first_last=options.keep_first_last)
        self.model.to(options.device)
        if not lba_layers(self.model):
            raise ConfigError("finetune: the model has no Linear, Conv2d or MatMul layer to put on the accumulator")
        if options.a2q:
            apply_a2q(self.model, cfg)
        set_collect_stats(self.model, False)
        self.progress = _Progress()
        self.optimizer_state = None
        if self.checkpoint_path is not None:
            self._resume()

    def _resume(self) -> None:
        # Rank 0's checkpoint, sent to every rank: the others need not see rank 0's file system.
        found = self.ranks.writes and self.checkpoint_path.exists()
        saved = from_rank0(torch.load(self.checkpoint_path, weights_only=False, map_location="cpu") if found else None,
                           self.ranks)
        if saved is None:
            return
        if "progress" not in saved:
            raise ConfigError(f"{self.checkpoint_path} was written by an older lba_train; use another checkpoint_dir")
        if saved["requested_cfg"] != self.cfg.to_dict() or saved["bias_mode"] != self.options.bias:
            raise ConfigError(f"{self.checkpoint_path} belongs to another configuration; use another checkpoint_dir")
        self.model.load_state_dict(saved["model"])
        self.progress = _Progress(**saved["progress"])
        set_scale_margins(self.model, self.progress.scale_margins)
        self.optimizer_state = saved["optimizer"]
        self.log(f"resuming from {self.checkpoint_path}: stage {self.progress.stage + 1}, epoch {self.progress.epoch}")

    def elapsed(self) -> float:
        return self.progress.seconds + time.perf_counter() - self.started

    def evaluate(self, key: str) -> None:
        predicted, labels = predict(self.model, self.val_loader, self.options.device, self.options.progress, key)
        accuracy = top1_accuracy(predicted, labels)
        self.progress.accuracies[key] = accuracy
        self.progress.predictions[key], self.progress.labels = predicted.tolist(), labels.tolist()
        if self.results_path is not None and self.ranks.writes:
            atomic_write_text(self.results_path, json.dumps({**self.progress.accuracies,
                                                             "cfg": self.progress.chosen_cfg}, indent=2))
        self.log(f"[{self.cfg.name}] {key}: {100 * accuracy:.2f}%")

    def checkpoint(self, optimizer) -> None:
        if self.checkpoint_path is not None and self.ranks.writes:
            progress = {**dataclasses.asdict(self.progress), "seconds": self.elapsed()}
            _save_atomically({"progress": progress, "model": self.model.state_dict(),
                              "optimizer": optimizer and optimizer.state_dict(), "requested_cfg": self.cfg.to_dict(),
                              "bias_mode": self.options.bias}, self.checkpoint_path)

    def zero_shot(self) -> None:
        """The float baseline, the bias choice, and the accuracies before any fine-tuning."""
        options, device = self.options, self.options.device
        float_copy = copy.deepcopy(self.float_model).to(device)  # the caller's model stays where it is
        self.progress.accuracies["baseline"] = evaluate(float_copy, self.val_loader, device, options.progress,
                                                        "baseline")
        self.log(f"[{self.cfg.name}] baseline: {100 * self.progress.accuracies['baseline']:.2f}%")
        torch.manual_seed(options.seed)  # the calibration batches come from the shuffled training loader
        batches = labelled_batches(self.train_loader, device, "finetune", "train_loader")
        calibration = [inputs for (inputs, _), _ in zip(batches, range(options.calibration_batches))]
        # chosen once, on rank 0 (the same batches as a single process would take), and sent to every rank
        chosen = from_rank0(resolve_bias(self.cfg, options.bias, self.model, calibration) if self.ranks.writes
                            else None, self.ranks)
        set_lba_config(self.model, chosen)
        margins = from_rank0(scale_margins(self.model) if self.ranks.writes else None, self.ranks)
        set_scale_margins(self.model, margins)  # "margin" mode sets them on rank 0's model
        self.progress.scale_margins = margins
        integer_ptq(self.model, chosen, calibration)  # integer operands only: per-channel weights, frozen ranges
        self.progress.chosen_cfg = chosen.to_dict()
        self.log(f"accumulator {chosen.acc.name} (bias mode {options.bias!r}, bias {getattr(chosen.acc, 'bias', None)})")
        set_lba_config(self.model, underflow=True, exact_accumulation=True)
        self.evaluate("exact_acc")
        set_lba_config(self.model, exact_accumulation=False)
        set_collect_stats(self.model, True)
        self.evaluate("zero_shot")
        self.progress.zero_shot_events = event_stats_table(self.model)
        set_collect_stats(self.model, False)
        self.checkpoint(None)

    def train_stage(self, index: int) -> None:
        stage, options, progress = self.stages[index], self.options, self.progress
        set_lba_config(self.model, underflow=stage.underflow)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=stage.lr)
        if progress.epoch > 0 and self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
        trained = wrap_for_training(self.model, self.ranks)
        loader = self.train_loader if self.train_shard is None else self.train_shard
        for epoch in range(progress.epoch, stage.epochs):
            epoch_seed = options.seed * 1000 + 100 * (index + 1) + epoch
            if self.train_shard is not None:
                self.train_shard.sampler.set_epoch(epoch_seed)
            loss = train_epoch(trained, loader, optimizer, options.device, epoch_seed,
                               f"{stage.key} {epoch + 1}/{stage.epochs}", options.progress)
            loss = mean_over_ranks(loss, self.ranks, options.device)
            progress.history.append({"stage": index + 1, "epoch": epoch + 1, "loss": loss})
            progress.epoch = epoch + 1
            self.checkpoint(optimizer)
        if not stage.underflow:
            self.evaluate(f"{stage.key}_nouf")
        set_lba_config(self.model, underflow=True)
        final = index == len(self.stages) - 1
        set_collect_stats(self.model, final)
        self.evaluate(stage.key)
        if final:
            progress.events = event_stats_table(self.model)
        set_collect_stats(self.model, False)
        progress.stage, progress.epoch, self.optimizer_state = index + 1, 0, None
        self.checkpoint(None)

    def run(self) -> FinetuneResult:
        if self.progress.chosen_cfg is None:
            self.zero_shot()
        chosen = MacConfig.from_dict(self.progress.chosen_cfg)
        set_lba_config(self.model, chosen)
        for index in range(self.progress.stage, len(self.stages)):
            self.train_stage(index)
        set_lba_config(self.model, underflow=True)
        accuracies = self.progress.accuracies
        accuracies.setdefault("stage1_nouf", accuracies["stage1"])
        return FinetuneResult(**{key: accuracies[key] for key in ACCURACY_KEYS}, cfg=chosen, events=self.progress.events,
                              zero_shot_events=self.progress.zero_shot_events, history=self.progress.history,
                              seconds=self.elapsed(), model=self.model, predictions=self.progress.predictions,
                              labels=self.progress.labels)


def finetune(model: nn.Module, train_loader, val_loader, cfg: MacConfig, *,
             options: FinetuneOptions | None = None) -> FinetuneResult:
    """Fine-tune a trained float ``model`` on the accumulator of ``cfg``; ``model`` itself is not modified.

    A copy is converted with :func:`lbaify`, its accumulator bias chosen (lba_train.bias), then it is trained
    ``options.epochs[0]`` epochs with underflow off and ``options.epochs[1]`` epochs with underflow on (the
    paper's two stages; see :class:`FinetuneOptions`). Returns a :class:`FinetuneResult`.

    Under ``torchrun --nproc_per_node=N`` (or with torch.distributed initialised) it trains with
    DistributedDataParallel on a per-rank shard of ``train_loader`` (see :mod:`lba_train.distributed`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"finetune: model must be an nn.Module, got {type(model).__name__}")
    check_loader(train_loader, "train_loader", "finetune")
    check_loader(val_loader, "val_loader", "finetune")
    if not isinstance(cfg, MacConfig):
        raise ConfigError(f"finetune needs a lba_core.MacConfig, got {type(cfg).__name__}")
    options = FinetuneOptions() if options is None else options
    if not isinstance(options, FinetuneOptions):
        raise TypeError(f"finetune: options must be a FinetuneOptions, got {type(options).__name__}")
    return _FinetuneRun(model, train_loader, val_loader, cfg, options).run()


def run_accuracy_point(
    cfg: MacConfig,
    model_name: str,
    data,
    *,
    options: FinetuneOptions | None = None,
    baseline_state: dict | None = None,
    baseline: TrainOptions | None = None,
    width: int = 1,
) -> dict:
    """Every number for one accumulator format, as one independent job: (train or reuse) the float baseline,
    then :func:`finetune` with ``options``. ``data`` is a spec ("digits", "imagefolder:PATH", "mnist:PATH") or
    a DataBundle, split and the model initialised with ``options.seed``. ``baseline_state`` (a state dict)
    skips training the baseline, else it is trained with ``baseline`` (TrainOptions; its seed is
    ``options.seed``). Returns a JSON-ready dict: configuration, accuracies, event totals of the final
    evaluation, seconds, the per-layer event tables ("zero_shot_events", "layer_events"; each row also has the
    layer's ``k``, products per dot product, and ``macs_per_example``: see
    :func:`~lba_train.convert.layer_dot_products`), and the per-example
    "predictions" of the zero-shot and the fine-tuned ("stage2") model with the validation "labels", for
    paired comparisons of formats on the same examples. ``width`` widens the model (the long-accumulation
    knob of :func:`~lba_train.models.build_model`).
    """
    options = FinetuneOptions() if options is None else options
    bundle = data if isinstance(data, DataBundle) else load_data(data, seed=options.seed)
    model = build_model(model_name, bundle.input_shape, bundle.classes, options.seed, width)
    if baseline_state is None:
        baseline = TrainOptions(seed=options.seed, device=options.device) if baseline is None else baseline
        model = train_float(model, bundle.train, bundle.val, options=baseline).model
    else:
        model.load_state_dict(baseline_state)
    result = finetune(model, bundle.train, bundle.val, cfg, options=options)
    totals = {event: sum(row.get(event, 0) for row in result.events) for event in
              ("steps", "overflow", "underflow", "swamp")}
    example, _ = next(iter(bundle.val))
    shapes = layer_dot_products(result.model, example[:1].to(options.device))
    for row in (*result.events, *result.zero_shot_events):
        shape = shapes.get(row["layer"])
        row.update(k=shape and shape["k"], macs_per_example=shape and shape["macs"])
    return {
        "model": model_name,
        "data": bundle.name,
        "seed": options.seed,
        "cfg": result.cfg.name,
        "acc_format": result.cfg.acc.name,
        "acc_bias": getattr(result.cfg.acc, "bias", None),  # None: integer/fixed-point accumulators have none
        "scale_margin": describe_scale_margins(scale_margins(result.model)),  # per LBA layer, "0": none
        **result.accuracies(),
        **{f"events_{event}": count for event, count in totals.items()},
        "seconds": result.seconds,
        "zero_shot_events": result.zero_shot_events,
        "layer_events": result.events,
        "labels": result.labels,
        "predictions": {key: result.predictions[key] for key in ("zero_shot", "stage2")},
    }

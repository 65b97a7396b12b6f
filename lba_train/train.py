"""The paper's recipe: train a float model, put it on the low-bit-width accumulator, fine-tune in two stages.

Stage 1 trains with ``underflow=False`` (no flush to zero: small partial sums keep their gradient path),
stage 2 with ``underflow=True`` (the hardware's arithmetic). Every accuracy is measured with the hardware's
arithmetic unless its key says otherwise. Checkpoints after every epoch make a run resumable.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lba_core import ConfigError, MacConfig
from lba_core.fileio import atomic_write, atomic_write_text

from .bias import BIAS_MODES, resolve_bias
from .convert import event_stats_table, lba_layers, lbaify, set_collect_stats, set_lba_config
from .data import DataBundle, load_data
from .models import build_model

CHECKPOINT_FILE = "finetune.pt"
RESULTS_FILE = "accuracy.json"


def _batches(loader, device):
    for inputs, labels in loader:
        yield inputs.to(device), labels.to(device)


def evaluate(model: nn.Module, loader, device: str = "cpu", progress: bool = False, desc: str = "eval") -> float:
    """Top-1 accuracy of ``model`` on ``loader`` as a fraction in [0, 1] (the model is left in its mode)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, labels in tqdm(_batches(loader, device), total=len(loader), desc=desc, disable=not progress,
                                   leave=False):
            correct += int((model(inputs).argmax(dim=1) == labels).sum())
            total += len(labels)
    model.train(was_training)
    if total == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return correct / total


def _train_epoch(model: nn.Module, loader, optimizer, device: str, seed: int, desc: str, progress: bool) -> float:
    """One epoch; the shuffle order is fixed by ``seed`` so that a resumed run repeats it. Returns mean loss."""
    torch.manual_seed(seed)
    model.train()
    total_loss = count = 0.0
    bar = tqdm(_batches(loader, device), total=len(loader), desc=desc, disable=not progress, leave=False)
    for inputs, labels in bar:
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        count += len(labels)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return total_loss / max(count, 1)


def _split_loaders(loaders) -> tuple:
    if isinstance(loaders, DataBundle):
        return loaders.train, loaders.val
    if isinstance(loaders, (tuple, list)) and len(loaders) == 2:
        return tuple(loaders)
    raise TypeError("loaders must be a DataBundle or a (train_loader, val_loader) pair")


def train_float(
    model: nn.Module,
    loaders,
    epochs: int,
    lr: float = 3e-3,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Train ``model`` (in place) in ordinary floating point with Adam; the baseline that fine-tuning starts
    from. ``loaders`` is a DataBundle or (train, val). Returns {"model", "accuracy", "history"}."""
    if epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {epochs}")
    train_loader, val_loader = _split_loaders(loaders)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        loss = _train_epoch(model, train_loader, optimizer, device, seed * 1000 + epoch, f"float {epoch + 1}/{epochs}",
                            progress)
        history.append({"epoch": epoch + 1, "loss": loss})
    return {"model": model, "accuracy": evaluate(model, val_loader, device), "history": history}


@dataclass
class _Stage:
    key: str
    underflow: bool
    epochs: int
    lr: float


def _pair(value, name: str) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(f"{name} must be one value or a pair (stage 1, stage 2), got {value!r}")
        return tuple(value)
    return (value, value)


def _save_atomically(obj, path: Path) -> None:
    atomic_write(path, lambda stream: torch.save(obj, stream))


def finetune(
    model: nn.Module,
    train_loader,
    val_loader,
    cfg: MacConfig,
    epochs=(1, 1),
    lr=(1e-3, 5e-4),
    device: str = "cpu",
    *,
    bias: str = "calibrate",
    estimator: str = "ste",
    skip=None,
    keep_first_last: bool = False,
    stage1_underflow: bool = False,
    calibration_batches: int = 4,
    checkpoint_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    **layer_options,
) -> dict:
    """Fine-tune a trained float ``model`` on the accumulator of ``cfg``; ``model`` itself is not modified.

    A copy is converted with lbaify (``skip``, ``keep_first_last``, ``estimator``, ``layer_options``), its
    accumulator bias is chosen by ``bias`` (see lba_train.bias), then it is trained ``epochs[0]`` epochs
    with underflow off (``stage1_underflow=True`` gives the one-stage ablation: the same schedule with
    underflow on throughout) and ``epochs[1]`` epochs with underflow on, with Adam at ``lr`` (one value or
    one per stage). ``checkpoint_dir`` keeps a checkpoint after every epoch and the accuracies after every
    phase (accuracy.json); a run restarted with the same directory resumes where it stopped.

    Returns {"baseline", "exact_acc", "zero_shot", "stage1", "stage1_nouf", "stage2"} (accuracies in
    [0, 1], all but stage1_nouf on the hardware arithmetic; exact_acc: quantized operands with exact
    accumulation), "cfg" (with the chosen bias), "events" (per-layer event statistics of the final
    evaluation), "zero_shot_events", "history", "seconds" (including earlier interrupted runs) and "model"
    (the fine-tuned LBA model).
    """
    if not isinstance(cfg, MacConfig):
        raise ConfigError(f"finetune needs a lba_core.MacConfig, got {type(cfg).__name__}")
    if bias not in BIAS_MODES:
        raise ConfigError(f"unknown accumulator bias mode {bias!r}: choose one of {', '.join(BIAS_MODES)}")
    epochs, lrs = _pair(epochs, "epochs"), _pair(lr, "lr")
    if any(not isinstance(count, int) or count < 0 for count in epochs):
        raise ConfigError(f"epochs must be non-negative integers, got {epochs!r}")
    stages = [_Stage("stage1", stage1_underflow, epochs[0], lrs[0]), _Stage("stage2", True, epochs[1], lrs[1])]
    started = time.perf_counter()
    checkpoint_path = results_path = None
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        checkpoint_path, results_path = Path(checkpoint_dir) / CHECKPOINT_FILE, Path(checkpoint_dir) / RESULTS_FILE

    lba_model = lbaify(model, cfg, skip=skip, keep_first_last=keep_first_last, estimator=estimator, **layer_options)
    lba_model.to(device)
    if not lba_layers(lba_model):
        raise ConfigError("finetune: the model has no Linear, Conv2d or MatMul layer to put on the accumulator")
    set_collect_stats(lba_model, False)
    state = {"results": {}, "history": [], "stage": 0, "epoch": 0, "cfg": None}
    if checkpoint_path is not None and checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        if state["requested_cfg"] != cfg.to_dict() or state["bias_mode"] != bias:
            raise ConfigError(f"{checkpoint_path} belongs to another configuration; use another checkpoint_dir")
        lba_model.load_state_dict(state["model"])
        log(f"resuming from {checkpoint_path}: stage {state['stage'] + 1}, epoch {state['epoch']}")
    results = state["results"]
    seconds_before = state.get("seconds", 0.0)  # time spent by earlier, interrupted runs

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    def report(key: str, value: float) -> None:
        results[key] = value
        if results_path is not None:
            atomic_write_text(results_path, json.dumps({**results, "cfg": state["cfg"]}, indent=2))
        log(f"[{cfg.name}] {key}: {100 * value:.2f}%")

    def checkpoint(optimizer) -> None:
        if checkpoint_path is not None:
            _save_atomically({**state, "model": lba_model.state_dict(), "requested_cfg": cfg.to_dict(),
                              "bias_mode": bias, "optimizer": optimizer and optimizer.state_dict(),
                              "seconds": elapsed()}, checkpoint_path)

    if state["cfg"] is None:
        report("baseline", evaluate(model.to(device), val_loader, device, progress, "baseline"))
        torch.manual_seed(seed)  # the calibration batches come from the shuffled training loader
        calibration = [inputs for (inputs, _), _ in zip(_batches(train_loader, device), range(calibration_batches))]
        chosen = resolve_bias(cfg, bias, lba_model, calibration)
        set_lba_config(lba_model, chosen)
        state["cfg"] = chosen.to_dict()
        log(f"accumulator {chosen.acc.name} (bias mode {bias!r}, bias {chosen.acc.bias})")
        set_lba_config(lba_model, underflow=True)
        set_lba_config(lba_model, exact_accumulation=True)
        report("exact_acc", evaluate(lba_model, val_loader, device, progress, "exact accumulation"))
        set_lba_config(lba_model, exact_accumulation=False)
        set_collect_stats(lba_model, True)
        report("zero_shot", evaluate(lba_model, val_loader, device, progress, "zero-shot"))
        results["zero_shot_events"] = event_stats_table(lba_model)
        set_collect_stats(lba_model, False)
        checkpoint(None)
    chosen = MacConfig.from_dict(state["cfg"])
    set_lba_config(lba_model, chosen)

    for index, stage in enumerate(stages):
        if index < state["stage"]:
            continue
        set_lba_config(lba_model, underflow=stage.underflow)
        optimizer = torch.optim.Adam(lba_model.parameters(), lr=stage.lr)
        if index == state["stage"] and state["epoch"] > 0 and state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        for epoch in range(state["epoch"] if index == state["stage"] else 0, stage.epochs):
            loss = _train_epoch(lba_model, train_loader, optimizer, device, seed * 1000 + 100 * (index + 1) + epoch,
                                f"{stage.key} {epoch + 1}/{stage.epochs}", progress)
            state["history"].append({"stage": index + 1, "epoch": epoch + 1, "loss": loss})
            state.update(stage=index, epoch=epoch + 1)
            checkpoint(optimizer)
        if not stage.underflow:
            report(f"{stage.key}_nouf", evaluate(lba_model, val_loader, device, progress, f"{stage.key} (nouf)"))
        set_lba_config(lba_model, underflow=True)
        final = index == len(stages) - 1
        set_collect_stats(lba_model, final)
        report(stage.key, evaluate(lba_model, val_loader, device, progress, stage.key))
        if final:
            results["events"] = event_stats_table(lba_model)
        state.update(stage=index + 1, epoch=0)
        checkpoint(None)
    results.setdefault("stage1_nouf", results.get("stage1"))
    return {**results, "cfg": chosen, "history": state["history"], "model": lba_model,
            "seconds": elapsed()}


def train_baseline(model_name: str, data: DataBundle, epochs: int, seed: int = 0, lr: float = 3e-3,
                   progress: bool = True) -> dict:
    """A float model of ``model_name`` trained on ``data``: {"model", "accuracy", "history", "state"}; the
    state dict can be handed to :func:`run_accuracy_point` so that many formats share one baseline."""
    model = build_model(model_name, data.input_shape, data.classes, seed)
    trained = train_float(model, data, epochs, lr, seed, progress=progress)
    return {**trained, "state": copy.deepcopy(model.state_dict())}


def run_accuracy_point(
    cfg: MacConfig,
    model_name: str,
    data,
    epochs=(1, 1),
    seed: int = 0,
    baseline_state: dict | None = None,
    *,
    baseline_epochs: int = 10,
    baseline_lr: float = 3e-3,
    progress: bool = False,
    **finetune_options,
) -> dict:
    """Every number for one accumulator format, as one independent job: (train or reuse) the float baseline,
    then :func:`finetune`. ``data`` is a spec ("digits", "imagefolder:PATH", "mnist:PATH") or a DataBundle.
    Returns a JSON-ready dict: configuration, accuracies, event totals of the final evaluation, seconds, and
    the per-layer event tables ("zero_shot_events", "layer_events")."""
    bundle = data if isinstance(data, DataBundle) else load_data(data, seed=seed)
    model = build_model(model_name, bundle.input_shape, bundle.classes, seed)
    if baseline_state is None:
        train_float(model, bundle, baseline_epochs, baseline_lr, seed, progress=progress)
    else:
        model.load_state_dict(baseline_state)
    result = finetune(model, bundle.train, bundle.val, cfg, epochs, seed=seed, progress=progress,
                      log=finetune_options.pop("log", lambda _: None), **finetune_options)
    totals = {event: sum(row.get(event, 0) for row in result["events"]) for event in
              ("steps", "overflow", "underflow", "swamp")}
    return {
        "model": model_name,
        "data": bundle.name,
        "seed": seed,
        "cfg": result["cfg"].name,
        "acc_format": result["cfg"].acc.name,
        "acc_bias": result["cfg"].acc.bias,
        **{key: result[key] for key in ("baseline", "exact_acc", "zero_shot", "stage1", "stage1_nouf", "stage2")},
        **{f"events_{event}": count for event, count in totals.items()},
        "seconds": result["seconds"],
        "zero_shot_events": result["zero_shot_events"],
        "layer_events": result["events"],
    }

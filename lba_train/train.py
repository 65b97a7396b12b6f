"""Classification models in ordinary floating point: evaluation (:func:`predict`, :func:`evaluate`) and float
training (:func:`train_float`, :func:`train_baseline`), with the loops and checks that fine-tuning on the
accumulator (:mod:`lba_train.finetuning`) shares. Every epoch's shuffle order is fixed by a seed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lba_core import ConfigError

from .data import DataBundle
from .models import build_model


def check_loader(loader, name: str, caller: str) -> None:
    """A clear TypeError, before any work, for what cannot be a loader of (inputs, labels) batches."""
    if loader is None or isinstance(loader, (str, bytes, torch.Tensor, dict)) or not hasattr(loader, "__iter__"):
        raise TypeError(f"{caller}: {name} must be a DataLoader (an iterable of (inputs, labels) batches), "
                        f"got {type(loader).__name__}")


def labelled_batches(loader, device, caller: str = "evaluate", name: str = "loader"):
    """The (inputs, labels) batches of ``loader`` on ``device``; a batch of another shape is a TypeError that
    names ``caller`` and the loader's ``name``."""
    for batch in loader:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2
                and all(isinstance(part, torch.Tensor) for part in batch)):
            raise TypeError(f"{caller}: {name} must yield (inputs, labels) pairs of tensors, got a batch of type "
                            f"{type(batch).__name__}")
        inputs, labels = batch
        yield inputs.to(device), labels.to(device)


def predict(model: nn.Module, loader, device: str = "cpu", progress: bool = False,
            desc: str = "eval") -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class and label of every example of ``loader``, in its order (the model is left in its mode)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"evaluate: model must be an nn.Module, got {type(model).__name__}")
    check_loader(loader, "loader", "evaluate")
    was_training = model.training
    model.eval()
    predicted, labels = [], []
    with torch.no_grad():
        for inputs, targets in tqdm(labelled_batches(loader, device), total=len(loader), desc=desc,
                                    disable=not progress, leave=False):
            predicted.append(model(inputs).argmax(dim=1).cpu())
            labels.append(targets.cpu())
    model.train(was_training)
    if not labels:
        raise ValueError("evaluate: the loader yielded no samples")
    return torch.cat(predicted), torch.cat(labels)


def evaluate(model: nn.Module, loader, device: str = "cpu", progress: bool = False, desc: str = "eval") -> float:
    """Top-1 accuracy of ``model`` on ``loader`` as a fraction in [0, 1] (the model is left in its mode)."""
    return top1_accuracy(*predict(model, loader, device, progress, desc))


def top1_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``predicted`` classes equal to ``labels``."""
    return int((predicted == labels).sum()) / len(labels)


def train_epoch(model: nn.Module, loader, optimizer, device: str, seed: int, desc: str, progress: bool) -> float:
    """One epoch; the shuffle order is fixed by ``seed`` so that a resumed run repeats it. Returns mean loss."""
    torch.manual_seed(seed)
    model.train()
    total_loss = count = 0.0
    bar = tqdm(labelled_batches(loader, device), total=len(loader), desc=desc, disable=not progress, leave=False)
    for inputs, labels in bar:
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        count += len(labels)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return total_loss / max(count, 1)


@dataclass(frozen=True)
class TrainOptions:
    """How :func:`train_float` trains: ``epochs`` with Adam at ``lr``; ``seed`` fixes the shuffles;
    ``progress`` draws progress bars (the command line turns them on; the library is quiet)."""

    epochs: int = 10
    lr: float = 3e-3
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 0:
            raise ConfigError(f"TrainOptions.epochs must be an integer >= 0, got {self.epochs!r}")
        check_lr(self.lr, "TrainOptions.lr")
        check_flag(self.progress, "TrainOptions.progress")


@dataclass
class TrainResult:
    """What :func:`train_float` returns: the trained ``model``, its validation ``accuracy`` in [0, 1] and the
    per-epoch mean training loss in ``history``."""

    model: nn.Module
    accuracy: float
    history: list[dict]
    seconds: float

    @property
    def state(self) -> dict:
        """A copy of the trained model's state dict (what :func:`~lba_train.finetuning.run_accuracy_point` reuses
        as a baseline)."""
        return copy.deepcopy(self.model.state_dict())


def check_lr(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def check_flag(value, name: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")


def _fit(model: nn.Module, train_loader, val_loader, options: TrainOptions) -> TrainResult:
    started = time.perf_counter()
    model.to(options.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    history = []
    for epoch in range(options.epochs):
        loss = train_epoch(model, train_loader, optimizer, options.device, options.seed * 1000 + epoch,
                           f"float {epoch + 1}/{options.epochs}", options.progress)
        history.append({"epoch": epoch + 1, "loss": loss})
    accuracy = evaluate(model, val_loader, options.device)
    return TrainResult(model, accuracy, history, time.perf_counter() - started)


def train_float(model: nn.Module, train_loader, val_loader, *, options: TrainOptions | None = None) -> TrainResult:
    """Train a copy of ``model`` in ordinary floating point with Adam (the baseline that fine-tuning starts
    from) and return a :class:`TrainResult`; ``model`` itself is not modified."""
    options = TrainOptions() if options is None else options
    if not isinstance(options, TrainOptions):
        raise TypeError(f"train_float: options must be a TrainOptions, got {type(options).__name__}")
    return _fit(copy.deepcopy(model), train_loader, val_loader, options)


def train_baseline(model_name: str, data: DataBundle, epochs: int, seed: int = 0, lr: float = 3e-3,
                   progress: bool = False, width: int = 1, device: str = "cpu") -> TrainResult:
    """A float model of ``model_name`` (built with ``seed`` and the ``width`` multiplier of
    :func:`~lba_train.models.build_model`) trained on ``data`` on ``device``; its ``state`` can be handed to
    :func:`~lba_train.finetuning.run_accuracy_point` (with the same ``width``) so that many formats share one
    baseline."""
    model = build_model(model_name, data.input_shape, data.classes, seed, width)
    return train_float(model, data.train, data.val,
                       options=TrainOptions(epochs=epochs, lr=lr, seed=seed, device=device, progress=progress))

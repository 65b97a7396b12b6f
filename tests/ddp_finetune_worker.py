"""One fine-tuning run for tests/test_distributed.py: under torchrun (2 ranks, gloo) or as a single process.

Usage: ddp_finetune_worker.py OUT_DIR BATCH_SIZE [DDP_STATE]. Rank 0 writes OUT_DIR/result.json; every rank
writes the eval-mode logits of its fine-tuned model (OUT_DIR/logits_rank<R>.pt), rank 0 its weights
(OUT_DIR/state.pt). With DDP_STATE (a state.pt of another run) the single process also writes the logits of
those weights under its own model (OUT_DIR/logits_of_other_state.pt).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lba_core import MacConfig
from lba_train.finetuning import FinetuneOptions, finetune

FEATURES, CLASSES, TRAIN, VAL = 16, 4, 128, 64


def _data() -> tuple[TensorDataset, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(TRAIN + VAL, FEATURES, generator=generator)
    labels = (inputs @ torch.randn(FEATURES, CLASSES, generator=generator)).argmax(dim=1)
    return TensorDataset(inputs[:TRAIN], labels[:TRAIN]), TensorDataset(inputs[TRAIN:], labels[TRAIN:])


def main(out: Path, batch_size: int, other_state: Path | None) -> None:
    torch.set_num_threads(1)
    train, val = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, CLASSES))  # no BatchNorm
    # not shuffled: step k of one process with batch 2B sees exactly the samples of step k of 2 ranks with B
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=False)
    val_loader = DataLoader(val, batch_size=16)
    options = FinetuneOptions(epochs=(1, 1), lr=(1e-2, 5e-3), calibration_batches=TRAIN,  # the whole set
                              checkpoint_dir=out / "checkpoint")
    result = finetune(model, train_loader, val_loader, MacConfig("e4m3", "e4m7"), options=options)
    rank = dist.get_rank() if dist.is_initialized() else 0
    result.model.eval()
    if rank == 0:
        torch.save(result.model.state_dict(), out / "state.pt")
    with torch.no_grad():
        torch.save(result.model(val.tensors[0]), out / f"logits_rank{rank}.pt")
        if other_state is not None:
            result.model.load_state_dict(torch.load(other_state))
            torch.save(result.model(val.tensors[0]), out / "logits_of_other_state.pt")
    if rank == 0:
        (out / "result.json").write_text(json.dumps({"history": result.history, "cfg": result.cfg.to_dict(),
                                                     "predictions": result.predictions, "labels": result.labels}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)

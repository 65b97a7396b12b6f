"""finetune under torchrun: 2 gloo ranks on CPU against one process on the same data and seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_finetune_worker.py")
#: mean epoch losses (about 1.3 here) of the 2-rank and the 1-process run may differ by this much: activations are
#: quantized with a dynamic max-abs scale of their own batch, so a rank's half batch is quantized differently
#: from the whole batch (like BatchNorm's batch statistics); measured 9e-4 and 2.3e-3 on the two epochs
LOSS_TOLERANCE = 5e-3


def _run(arguments: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.cluster
def test_two_gloo_ranks_match_one_process(tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir(), single.mkdir()
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), str(ddp), "8"], tmp_path)
    _run([str(WORKER), str(single), "16", str(ddp / "state.pt")], tmp_path)
    got, want = (json.loads((folder / "result.json").read_text()) for folder in (ddp, single))

    assert got["cfg"] == want["cfg"]  # the calibrated bias, chosen on rank 0 and broadcast
    for phase in ("exact_acc", "zero_shot"):  # before any training the weights are the same
        assert got["predictions"][phase] == want["predictions"][phase], phase
    assert [row["epoch"] for row in got["history"]] == [row["epoch"] for row in want["history"]] == [1, 1]
    differences = [abs(a["loss"] - b["loss"]) for a, b in zip(got["history"], want["history"])]
    print(f"losses 2 ranks {got['history']}, 1 process {want['history']}: differences {differences}")
    assert max(differences) <= LOSS_TOLERANCE

    rank0, rank1 = torch.load(ddp / "logits_rank0.pt"), torch.load(ddp / "logits_rank1.pt")
    assert torch.equal(rank0, rank1)  # DDP kept the ranks' weights identical
    assert torch.equal(rank0, torch.load(single / "logits_of_other_state.pt"))  # eval forward: no rank dependence
    assert sorted(path.name for path in (ddp / "checkpoint").iterdir()) == ["accuracy.json", "finetune.pt"]


def _train(arguments: list[str], cwd: Path, ranks: int) -> str:
    """``hwmodel train`` in one process, or under torchrun with ``ranks`` gloo processes; its stdout."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, *launcher, "-m", "hwmodel.cli", "train", *arguments], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


#: ``hwmodel train``'s loaders shuffle, and 2 ranks take 2 x 64 samples per step (half the steps of one process
#: at batch 64), so its fine-tuning differs from one process's by more than finetune's test above allows; what
#: comes before any training step is the same bits. Measured here: see docs/scale-out.md.
TRAIN_LOSS_TOLERANCE = 0.1
TRAIN_ACCURACY_TOLERANCE = 0.05


@pytest.mark.cluster
def test_hwmodel_train_under_torchrun_matches_one_process_and_resumes(tmp_path):
    arguments = ["--model", "mlp", "--acc", "e4m7", "--epochs", "1,1", "--epochs-baseline", "1", "--threads", "1",
                 "--quiet", "--name", "t"]
    single = _train([*arguments, "--reports", str(tmp_path / "single")], tmp_path, 1)
    ddp = _train([*arguments, "--reports", str(tmp_path / "ddp")], tmp_path, 2)
    # rank 0 alone speaks and writes
    assert ddp.count("float baseline:") == ddp.count("== e4m3xe4m3-e4m7-rne") == 1, ddp
    assert "; 2 ranks" in ddp
    files = {name: sorted(str(path.relative_to(tmp_path / name)) for path in (tmp_path / name).rglob("*"))
             for name in ("single", "ddp")}
    assert files["ddp"] == files["single"]
    (baseline,) = (tmp_path / "ddp" / "t" / "points").glob("baseline-*.pt")
    want_state = torch.load(tmp_path / "single" / "t" / "points" / baseline.name, weights_only=False)["state"]
    got_state = torch.load(baseline, weights_only=False)["state"]
    assert all(torch.equal(got_state[key], want_state[key]) for key in want_state)  # one process's baseline
    got, want = (json.loads((tmp_path / name / "t" / "accuracy.json").read_text())[0] for name in ("ddp", "single"))
    assert got["cfg"] == want["cfg"]  # the calibrated bias, chosen once on rank 0 and broadcast
    for key in ("baseline", "exact_acc", "zero_shot"):
        assert got[key] == want[key], key
    assert got["predictions"]["zero_shot"] == want["predictions"]["zero_shot"]
    assert abs(got["stage2"] - want["stage2"]) <= TRAIN_ACCURACY_TOLERANCE
    (checkpoint,) = (tmp_path / "ddp" / "t" / "checkpoints").iterdir()
    history = torch.load(checkpoint / "finetune.pt", weights_only=False)["progress"]["history"]
    one = torch.load(tmp_path / "single" / "t" / "checkpoints" / checkpoint.name / "finetune.pt",
                     weights_only=False)["progress"]["history"]
    print(f"hwmodel train: 2 ranks {history}, 1 process {one}; stage2 {got['stage2']} vs {want['stage2']}")
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(history, one)) <= TRAIN_LOSS_TOLERANCE

    # a restart finds rank 0's saved point (hwmodel.execution.points; every rank reads it) and trains nothing,
    # not even the baseline; a point interrupted inside its epochs resumes from rank 0's checkpoints (lba_train)
    for report in ("accuracy.json", "accuracy.csv", "accuracy.md"):
        (tmp_path / "ddp" / "t" / report).unlink()
    again = _train([*arguments, "--reports", str(tmp_path / "ddp")], tmp_path, 2)
    assert "reusing 1 of 1 points" in again and "baseline" not in again and "== e4m3" not in again, again
    resumed = json.loads((tmp_path / "ddp" / "t" / "accuracy.json").read_text())[0]
    assert resumed == got

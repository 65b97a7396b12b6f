"""Train the committed byte-level language model (data/lm/byte_lm.pt) on the pinned corpus's train split.

    .venv/bin/python scripts/train_lm.py [--steps 1500] [--out data/lm]

Writes byte_lm.pt (float32 state dict + config), train_log.json (loss curves, options, time, machine load)
and prints one line per log entry. Deterministic for a given torch build and thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lba_train.lm.corpus import load_corpus, manifest  # noqa: E402
from lba_train.lm.model import LMConfig  # noqa: E402
from lba_train.lm.train import LMTrainOptions, train_lm  # noqa: E402
from lba_train.lm.checkpoint import save_model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=LMTrainOptions.steps)
    parser.add_argument("--threads", type=int, default=LMTrainOptions.threads)
    parser.add_argument("--out", type=Path, default=Path("data/lm"))
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        parser.error(f"--out {args.out}: not a folder")
    corpus = load_corpus()
    cfg, options = LMConfig(), LMTrainOptions(steps=args.steps, threads=args.threads)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_before = os.getloadavg()
    result = train_lm(corpus.train, corpus.validation, cfg, options,
                      progress=lambda entry: print(json.dumps(entry), flush=True))
    save_model(result.model, args.out / "byte_lm.pt")
    log = {"command": "python scripts/train_lm.py " + " ".join(argv or sys.argv[1:]), "started": started,
           "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
           "load_average_before": load_before, "load_average_after": os.getloadavg(), "seconds": result.seconds,
           "config": asdict(cfg), "options": asdict(options), "corpus": corpus.sizes(),
           "archive_sha256": manifest(corpus)["archive_sha256"], "log": result.log}
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

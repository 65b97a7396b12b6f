"""The fine-tuning demo: ``hwmodel train`` with the demo's settings (a ResNet on scikit-learn's digits, e4m3
inputs, accumulators e4m7, e5m2 and e4m3, the two-stage recipe and its one-stage ablation).

    .venv/bin/python experiments/finetune_digits.py                              # the demo
    .venv/bin/python experiments/finetune_digits.py --model mlp --acc e4m7,e4m3 --epochs 2,2

Any further arguments are ``hwmodel train`` options and override the demo's. Writes
reports/finetune_digits/accuracy.md, accuracy.csv and accuracy.json; an interrupted run resumes.
"""

from __future__ import annotations

import sys

from hwmodel.cli import main

DEMO_ARGUMENTS = ["train", "--model", "resnet", "--acc", "e4m7,e5m2,e4m3", "--one-stage", "--name", "finetune_digits"]

if __name__ == "__main__":
    sys.exit(main([*DEMO_ARGUMENTS, *sys.argv[1:]]))

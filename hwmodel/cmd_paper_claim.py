"""``hwmodel paper-claim``: the paper's area claim measured -> reports/paper_claim/.

FP8 inputs (e4m3, e5m2) with FP32, FP16, BF16 and 12-bit (e4m7, e5m6, e3m8) accumulators: MAC GE and the
reduction against the FP32 accumulator with the same inputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cmd_synth import synthesis_kwargs, synthesis_options, yosys_failure
from .synth import YosysError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "paper-claim",
        description="Synthesize e4m3 and e5m2 inputs with fp32, fp16, bf16, e4m7, e5m6 and e3m8 accumulators "
        "and write paper_claim.csv/.md (GE and reduction vs FP32 per input format) plus the full area.csv/.md.",
    )
    parser.add_argument("--out", default="reports/paper_claim", metavar="DIR",
                        help="output folder (default: reports/paper_claim)")
    synthesis_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .area import area_sweep
    from .paper_claim import paper_claim_configs, write_paper_claim

    try:
        df = area_sweep(paper_claim_configs(), args.target, jobs=args.jobs, **synthesis_kwargs(args))
    except YosysError as error:
        return yosys_failure("paper-claim", error)
    paths = write_paper_claim(df, Path(args.out))
    print(paths["claim_md"].read_text())
    print(f"paper claim: {paths['claim_md']} (full table: {paths['md']})")
    return 0

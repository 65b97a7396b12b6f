"""``hwmodel paper-claim``: the paper's area claim measured -> reports/paper_claim/.

FP8 inputs (e4m3, e5m2) with FP32, FP16, BF16 and 12-bit (e4m7, e5m6, e3m8) accumulators: MAC GE and the
reduction against the FP32 accumulator with the same inputs; then the MAC in standard cells (sky130 and
nangate45: µm², clock period, energy per MAC on real and random operands, each as a ratio to the FP32
accumulator) and, with ``--target ice40,ecp5``, FPGA place and route.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .synth import synthesis_kwargs, synthesis_options, yosys_failure
from ..synthesis.synth import YosysError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "paper-claim",
        description="Synthesize e4m3 and e5m2 inputs with fp32, fp16, bf16, e4m7, e5m6 and e3m8 accumulators "
        "and write paper_claim.csv/.md (GE and reduction vs FP32 per input format) plus the full area.csv/.md.",
    )
    parser.add_argument("-o", "--out", default="reports/paper_claim", metavar="DIR",
                        help="output folder (default: reports/paper_claim)")
    synthesis_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from rtl.yosys import ToolError

    from ..synthesis.area import area_sweep
    from ..synthesis.flows.targets import ASIC_TARGETS, silicon_reports
    from ..report.paper_claim import paper_claim_configs, write_paper_claim
    from ..synthesis.silicon import write_silicon_claim
    from ..synthesis.synth import TARGETS as YOSYS_TARGETS

    configs = paper_claim_configs()
    yosys_targets = [target for target in args.target if target in YOSYS_TARGETS]
    silicon_targets = [*ASIC_TARGETS, *(target for target in args.target if target in ("ice40", "ecp5"))]
    try:
        df = area_sweep(configs, yosys_targets, jobs=args.jobs, **synthesis_kwargs(args))
        paths = write_paper_claim(df, Path(args.out))
        options = synthesis_kwargs(args)
        options["blocks"] = False
        silicon = silicon_reports(configs, silicon_targets, workers=args.jobs, tops=("mac",), recipes=("area",),
                                  **options)
    except (YosysError, ToolError) as error:
        return yosys_failure("paper-claim", error)
    mac = silicon[0]["mac"]
    library = ASIC_TARGETS[0]
    provenance = (
        f"MAC (FMAq + accumulator register) mapped with the area recipe ({mac[library]['recipe_description']}); "
        f"timing: OpenSTA, {mac[library]['timing_environment']}; energy: {mac[library]['energy_operands']}; "
        f"{mac[library]['energy_assumptions']}. Energy at each MAC's own minimum period. "
        f"Ratios: value / value of the e8m23 (fp32) accumulator with the same inputs. "
        f"Written by `hwmodel paper-claim` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
    )
    paths.update(write_silicon_claim(configs, silicon, Path(args.out), ASIC_TARGETS, provenance))
    print(paths["claim_md"].read_text())
    print(paths["silicon_md"].read_text())
    print(f"paper claim: {paths['claim_md']}, {paths['silicon_md']} (full table: {paths['md']})")
    return 0

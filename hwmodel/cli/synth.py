"""``hwmodel synth``: synthesize one configuration's FMAq and MAC, report gates, GE, transistors, depth, FPGA.

``synthesis_options``, ``cache_from_args`` and ``targets_from_args`` are the options shared by every command
that synthesizes (``sweep``, ``paper-claim``, ``estimate``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lba_core import ConfigError
from lba_core.fileio import writable_folder

from ..execution.cache import CACHE_ENV_VAR, ResultCache, default_cache_dir
from .verilog import array_config, array_options, check_array_args, config_from_args, rtl_options
from rtl.yosys import ToolError
from ..synthesis.flows.targets import known_targets
from ..synthesis.limits import check_datapath_width
from ..synthesis.synth import TARGETS as YOSYS_TARGETS
from ..synthesis.synth import YosysError

TARGETS = known_targets()


def parse_targets(text: str) -> tuple[str, ...]:
    """``--target`` value: a comma-separated list of TARGETS, or ``all``."""
    if text.strip() == "all":
        return TARGETS
    targets = tuple(target.strip() for target in text.split(",") if target.strip())
    unknown = [target for target in targets if target not in TARGETS]
    if unknown or not targets:
        raise argparse.ArgumentTypeError(
            f"unknown target(s) {', '.join(unknown) or repr(text)}; known targets: {', '.join(TARGETS)} or all"
        )
    return targets


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def synthesis_options(parser: argparse.ArgumentParser, default_targets: str = "generic",
                      jobs_help: str = "parallel runs (default: all cores)") -> None:
    group = parser.add_argument_group("synthesis")
    group.add_argument(
        "--target",
        type=parse_targets,
        default=parse_targets(default_targets),
        metavar="LIST",
        help=f"comma-separated targets from {','.join(TARGETS)}, or 'all'; generic always runs "
        f"(default: {default_targets})",
    )
    group.add_argument("--jobs", "-j", type=positive_int, metavar="N", help=jobs_help)
    group.add_argument("--no-blocks", action="store_true", help="skip the per-block (hierarchical) synthesis")
    group.add_argument(
        "--cache-dir",
        metavar="DIR",
        help=f"result cache (default: ${CACHE_ENV_VAR} or ~/.cache/lba-hwmodel)",
    )
    group.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    group.add_argument("--timeout", type=positive_seconds, metavar="S", help="limit per Yosys run in seconds (default: none)")


def cache_from_args(args: argparse.Namespace) -> ResultCache:
    """The result cache the options ask for, its folder checked (created, writable) before any work."""
    if args.no_cache:
        if args.cache_dir is not None:
            raise ConfigError("--cache-dir would have no effect with --no-cache; drop one of them")
        return ResultCache(None)
    root = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    return ResultCache(writable_folder(root, "--cache-dir" if args.cache_dir else f"cache folder (${CACHE_ENV_VAR} or the default)"))


def synthesis_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of hwmodel.synthesis.mac_synth's and hwmodel.synthesis.area's synthesis functions, from :func:`synthesis_options`."""
    return {
        "blocks": not args.no_blocks,
        "cache": cache_from_args(args),
        "progress": True,
        "timeout_s": args.timeout,
    }


def yosys_failure(command: str, error: Exception) -> int:
    """Report a Yosys failure (its message names the kept log) without a traceback; exit status 1. An error
    without a kept log (a timeout, a missing tool) is its first line only: the log's tail is gone with it."""
    text = str(error) if getattr(error, "log_path", None) is not None else (str(error).splitlines() or [""])[0]
    print(f"hwmodel {command}: error: {text}", file=sys.stderr)
    return 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        description="Export the configuration's fmaq and mac Verilog and synthesize both with Yosys: generic "
        "gates and NAND2 gate equivalents (GE), CMOS transistors, logic depth, a per-block breakdown and, "
        "on request, standard-cell libraries (sky130, nangate45: µm², leakage, OpenSTA timing) and FPGA "
        "place and route (ice40, ecp5: nextpnr LUTs, FFs, Fmax). Results are cached by content.",
    )
    rtl_options(parser)
    array_options(parser)
    synthesis_options(parser)
    parser.add_argument("--operands", choices=OPERAND_MODELS, default="resnet",
                        help="whose layers' operands drive the energy per MAC of sky130/nangate45: the digits "
                        "ResNet (default) or the pretrained MiniLM sentence encoder (extra: transformers)")
    parser.add_argument("--fdpa-flow", choices=FDPA_FLOWS, default="auto",
                        help="a fused accumulator's FDPA unit: flat synthesis, or every block synthesized and mapped "
                        "alone then stitched (needed at L = 32); auto: flat up to L = 8 (default: auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress on stderr)")
    parser.set_defaults(func=run)


#: ``--fdpa-flow`` choices: hwmodel.synthesis.fdpa_synth.FLOWS.
FDPA_FLOWS = ("auto", "flat", "stitched")
#: ``--operands`` choices: hwmodel.synthesis.flows.operands.StreamSpec models.
OPERAND_MODELS = ("resnet", "minilm")


def stream_spec_from_args(args: argparse.Namespace):
    """The operand streams ``--operands`` names; a missing extra for MiniLM is one line, before any work."""
    from ..synthesis.flows.operands import MINILM, StreamSpec

    if args.operands != MINILM:
        return StreamSpec()
    from ..synthesis.flows.targets import ASIC_TARGETS

    if not set(args.target) & set(ASIC_TARGETS):
        raise ConfigError(f"--operands minilm has no effect without a standard-cell target ({', '.join(ASIC_TARGETS)}) "
                          "in --target")
    from lba_train.minilm import extra_missing

    missing = extra_missing()
    if missing:
        raise ConfigError(f"--operands minilm: {missing}")
    return StreamSpec(model=MINILM)


def format_report(result: dict[str, Any]) -> str:
    lines = [f"configuration {result['config']['name']}"]
    for top in ("fmaq", "mac"):
        report = result[top]
        lines.append(
            f"\n{top}: {report['gates']} generic cells ({report['flops']} flip-flops), {report['ge']:.1f} GE, "
            f"{report['transistors']} transistors, depth {report['depth']} gates"
        )
        lines.append("  cells: " + ", ".join(f"{cell} {count}" for cell, count in report["cells"].items()))
        for block, figures in report["blocks"].items():
            lines.append(f"  block {block:<16} {figures['gates']:>6} cells {figures['ge']:>9.1f} GE")
        for flow, resources in report["fpga"].items():
            counts = ", ".join(f"{name} {count}" for name, count in resources.items() if name != "cells")
            lines.append(f"  {flow:<13} {counts}")
        for target, figures in report.items():
            if isinstance(figures, dict) and "area_um2" in figures:
                lines.append(f"  {target}: {asic_line(figures)} [{figures['corner']}]")
                for recipe, by_recipe in figures["recipes"].items():
                    lines.append(f"    recipe {by_recipe['recipe_description']}: {asic_line(by_recipe)}")
            elif isinstance(figures, dict) and "luts" in figures:
                lines.append(f"  {target} ({figures['device']}, nextpnr): {figures['luts']} LUTs, "
                             f"{figures['ffs']} FFs, {figures['lcs']} LCs, {figures['dsps']} DSPs, "
                             f"{figures['ios']} IOs, Fmax {figures['fmax_mhz']} MHz (median of seeds "
                             f"{figures['fmax_mhz_seeds']})")
    return "\n".join(lines)


def asic_line(figures: dict[str, Any]) -> str:
    timing = (f"delay {figures['delay_ns']} ns" if "delay_ns" in figures else
              f"period {figures['period_ns']} ns ({figures['fmax_mhz']} MHz; reg-to-reg "
              f"{figures['reg_to_reg_ns']} ns, input-to-reg {figures['input_to_reg_ns']} ns)")
    energy = (f", {figures['energy_pj_per_mac']:.3f} pJ/MAC at {figures['energy_clock_mhz']} MHz (random operands "
              f"{figures['energy_pj_per_mac_random']:.3f})" if "energy_pj_per_mac" in figures else "")
    return (f"{figures['area_um2']:.1f} µm² ({figures['sequential_area_um2']:.1f} sequential), "
            f"{figures['cells']} cells, leakage {figures['leakage_nw']:.1f} nW, {timing}{energy}")


def run(args: argparse.Namespace) -> int:
    from ..synthesis.mac_synth import synthesize_configs  # imported here so that `hwmodel --help` does not load Amaranth

    check_array_args("synth", args)
    if args.array is not None:
        return run_array(args)

    from rtl import check_pipeline

    from ..synthesis.flows.targets import silicon_reports

    cfg = config_from_args(args)
    check_datapath_width(cfg)  # too wide for Yosys: one line with the limit, before any work
    if cfg.fused_acc:  # the fused dot-product-add unit (rtl.fdpa): one top, hwmodel.synthesis.fdpa_synth
        return run_fused(args, cfg)
    if args.fdpa_flow != "auto":
        raise ConfigError(f"--fdpa-flow {args.fdpa_flow} applies to a fused accumulator (--acc hopper-fp8, "
                          f"fdpa32f13-...), not to {cfg.acc.name}")
    check_pipeline(cfg, args.pipeline)  # a bad --pipeline fails here, before any work
    stream_spec = stream_spec_from_args(args)
    yosys_targets = [target for target in args.target if target in YOSYS_TARGETS]
    try:
        result = synthesize_configs([cfg], yosys_targets, workers=args.jobs, pipeline=args.pipeline,
                                    **synthesis_kwargs(args))[0]
        silicon = silicon_reports([cfg], args.target, workers=args.jobs, pipeline=args.pipeline,
                                  stream_spec=stream_spec, **synthesis_kwargs(args))[0]
    except ToolError as error:
        return yosys_failure("synth", error)
    for top, per_target in silicon.items():
        result[top].update(per_target)
    print(json.dumps(result, indent=1) if args.json else format_report(result))
    return 0


def run_array(args: argparse.Namespace) -> int:
    """``--array RxC``: area, timing and accumulator share of a PE array (hwmodel.synthesis.pe_array)."""
    from ..synthesis.flows.targets import ASIC_TARGETS

    others = [target for target in args.target if target != "generic" and target not in ASIC_TARGETS]
    if others or args.no_blocks:
        raise SystemExit(f"hwmodel synth: error: --array takes --target generic and {', '.join(ASIC_TARGETS)} "
                         "only, with the per-block breakdown (the accumulator share needs it); got "
                         f"{', '.join(others) or '--no-blocks'}")
    from ..synthesis.pe_array import format_array_report, synthesize_array

    rows, cols = args.array
    cfg = array_config(args)
    kwargs = synthesis_kwargs(args)
    try:
        result = synthesize_array(rows, cols, cfg, depth=args.depth, cache=kwargs["cache"],
                                  libraries=tuple(target for target in args.target if target in ASIC_TARGETS),
                                  workers=args.jobs or 1, progress=True, timeout_s=args.timeout)
    except ToolError as error:
        return yosys_failure("synth", error)
    print(json.dumps(result, indent=1) if args.json else format_array_report(result))
    return 0


def run_fused(args: argparse.Namespace, cfg) -> int:
    """``hwmodel synth --acc hopper-fp8`` (any fused accumulator): the FDPA unit's gates, GE, per-block area and,
    for sky130/nangate45, µm² and OpenSTA delay; no energy per MAC (its operand streams drive MAC ports)."""
    from ..synthesis.fdpa_synth import FDPA_TOP, synthesize_fdpa

    if args.operands != "resnet":
        raise ConfigError("--operands drives the energy per MAC, which is not measured for a fused accumulator")
    kwargs = synthesis_kwargs(args)
    try:
        result = synthesize_fdpa(cfg, args.target, blocks=kwargs["blocks"], cache=kwargs["cache"],
                                 workers=args.jobs or 1, progress=True, timeout_s=args.timeout, pipeline=args.pipeline,
                                 flow=args.fdpa_flow)
    except ToolError as error:
        return yosys_failure("synth", error)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    report = result[FDPA_TOP]
    lines = [f"configuration {result['config']['name']} (FDPA unit, L = {result['config']['group']}, "
             f"F = {result['config']['fraction_bits']}, pipeline {args.pipeline}, "
             f"{result['config']['synthesis_flow']} synthesis)",
             f"{FDPA_TOP}: {report['gates']} generic cells ({report['flops']} flip-flops), {report['ge']:.1f} GE, "
             f"{report['transistors']} transistors, depth {report['depth']} gates"]
    lines += [f"  block {block:<16} {figures['gates']:>6} cells {figures['ge']:>9.1f} GE"
              for block, figures in report["blocks"].items()]
    lines += [f"  {target}: {asic_line(figures)} [{figures['corner']}]"
              + (f", {figures['energy_pj_per_mac_random']:.3f} pJ/MAC on random operands at {figures['energy_clock_mhz']} MHz"
                 if "energy_pj_per_mac_random" in figures else "")
              for target, figures in report.items() if isinstance(figures, dict) and "area_um2" in figures]
    print("\n".join(lines))
    return 0

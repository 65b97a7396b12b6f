"""The silicon targets of ``hwmodel synth --target``: ASIC libraries (mapping, static timing, energy) and FPGA
place and route, run as cached parallel jobs over the designs that hwmodel.synthesis.mac_synth exports.

:func:`silicon_reports` returns, per configuration, ``{top: {target: report}}``: for an ASIC library the
headline figures of the area recipe (``area_um2``, ``cells``, ``leakage_nw``, ``delay_ns`` or ``period_ns``
and ``fmax_mhz``, ...) with every recipe under ``recipes``; for an FPGA the nextpnr figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...execution.cache import ResultCache
from ...execution.jobs import Executor, run_cached
from ..synth import TARGETS as YOSYS_TARGETS, Design, block_breakdown
from .libraries import LIBRARIES, library_data
from .liberty import RECIPES, MappingJob, area_report
from .opensta import UNIFORM_POWER_PERIOD_NS, TimingJob, timing_report

ASIC_TARGETS = tuple(LIBRARIES)
#: The recipe whose figures head each ASIC report (the others are under ``recipes``).
HEADLINE_RECIPE = "area"
SEQUENTIAL_TOPS = ("mac",)


def known_targets() -> tuple[str, ...]:
    from .nextpnr import PNR_TARGETS

    return tuple(dict.fromkeys((*YOSYS_TARGETS, *ASIC_TARGETS, *PNR_TARGETS)))


def asic_reports(
    designs: Sequence[dict[str, Design]],
    libraries: Sequence[str],
    *,
    recipes: Sequence[str] = RECIPES,
    blocks: bool = True,
    cache: ResultCache,
    workers: int,
    progress: bool,
    timeout_s: float | None = None,
    configs: Sequence[Any] | None = None,
    stream_spec: Any = None,
    executor: Executor | None = None,
) -> list[dict[str, dict[str, Any]]]:
    """Mapping, per-block area (headline recipe, tops with hierarchical Verilog) and timing of every design;
    with ``configs`` and a ``stream_spec`` (hwmodel.synthesis.flows.operands.StreamSpec) also the energy per MAC of
    the headline recipe on real and random operands."""
    if not libraries:
        return [{top: {} for top in per_config} for per_config in designs]
    mapping = []
    for per_config in designs:
        for top, design in per_config.items():
            for library in libraries:
                for recipe in recipes:
                    mapping.append(MappingJob(library, recipe, top, design.verilog, False, timeout_s))
                if blocks and design.hierarchical_verilog is not None:
                    mapping.append(MappingJob(library, HEADLINE_RECIPE, top, design.hierarchical_verilog, True,
                                              timeout_s))
    mapped = dict(zip([job.key for job in mapping],
                      run_cached(mapping, cache, workers, progress, desc="liberty", executor=executor)))
    timing_jobs = []
    for job in mapping:
        if not job.hierarchical:
            sequential = job.top in SEQUENTIAL_TOPS
            timing_jobs.append(TimingJob(job.library, job.top, mapped[job.key]["netlist"], sequential,
                                         UNIFORM_POWER_PERIOD_NS if sequential else None))
    timed = iter(run_cached(timing_jobs, cache, workers, progress, desc="opensta", executor=executor))
    timing_by_mapping = {job.key: next(timed) for job in mapping if not job.hierarchical}
    data = {library: library_data(library, cache) for library in libraries}
    reports = []
    for per_config in designs:
        per_top: dict[str, dict[str, Any]] = {}
        for top, design in per_config.items():
            sequential = top in SEQUENTIAL_TOPS
            for library in libraries:
                block_job = MappingJob(library, HEADLINE_RECIPE, top, design.hierarchical_verilog or "", True)
                hierarchical = mapped.get(block_job.key) if design.hierarchical_verilog else None
                block_raw = None  # per-module cells of the hierarchical mapping, filed by the design's block map
                if hierarchical is not None:
                    block_raw = block_breakdown(hierarchical["blocks"]["modules"], top, design.module_blocks)
                by_recipe = {}
                for recipe in recipes:
                    job = MappingJob(library, recipe, top, design.verilog)
                    report = area_report(mapped[job.key], library, recipe,
                                         block_raw if recipe == HEADLINE_RECIPE else None, data[library])
                    sta = timing_by_mapping[job.key]
                    report.update(timing_report(sta, library, sequential))
                    if "power" in sta:
                        report["sta_uniform_power"] = {**sta["power"], "period_ns": UNIFORM_POWER_PERIOD_NS}
                    by_recipe[recipe] = report
                headline = recipes[0] if HEADLINE_RECIPE not in by_recipe else HEADLINE_RECIPE
                per_top.setdefault(top, {})[library] = {**by_recipe[headline], "recipes": by_recipe}
        reports.append(per_top)
    if configs is not None and stream_spec is not None:
        add_energy(reports, designs, configs, mapped, libraries, stream_spec, cache, workers, progress, executor)
    return reports


def add_energy(reports, designs, configs, mapped, libraries, stream_spec, cache: ResultCache, workers: int,
               progress: bool, executor: Executor | None = None) -> None:
    """Energy per MAC (hwmodel.synthesis.flows.energy) of each headline mapping, at the clock of the same
    configuration's MAC, on the real operand streams of ``stream_spec`` and on random ones. Integer and
    fixed-point configurations are simulated like floating-point ones: the streams hold the codes of their
    input formats, and their MAC has the same ports."""
    import json

    from .energy import EnergyJob, energy_assumptions
    from .operands import cached_streams, random_streams

    jobs, slots = [], []
    for report, per_config, cfg in zip(reports, designs, configs):
        real = cached_streams(cfg, stream_spec, cache)
        streams_json = json.dumps({"real": real, "random": random_streams(cfg, real)}, sort_keys=True)
        config_json = json.dumps(cfg.to_dict(), sort_keys=True)
        for library in libraries:
            period = (report["mac"][library]["period_ns"] if "mac" in report
                      else report["fmaq"][library]["delay_ns"])
            for top, design in per_config.items():
                connectivity = mapped[MappingJob(library, HEADLINE_RECIPE, top, design.verilog).key]["connectivity"]
                jobs.append(EnergyJob(library, top, config_json, json.dumps(connectivity, sort_keys=True),
                                      streams_json, period, None if cache.root is None else str(cache.root)))
                slots.append((report[top][library], library, stream_spec))
    for (target, library, spec), result in zip(slots, run_cached(jobs, cache, workers, progress, desc="energy", executor=executor)):
        detail = {"real": result.pop("energy_real"), "random": result.pop("energy_random")}
        target.update(result)
        target["energy_detail"] = detail
        if "sta_uniform_power" in target:  # the validation: same uniform activity in OpenSTA and here
            sta = target["sta_uniform_power"]
            opensta_pj = sta["total_w"] * sta["period_ns"] * 1e3  # W·ns = 1e-9 J = 1e3 pJ
            target["energy_validation"] = {
                "estimator_pj_per_cycle": result["uniform_sta_accounting_pj_per_cycle"],
                "opensta_pj_per_cycle": round(opensta_pj, 6),
                "ratio": round(result["uniform_sta_accounting_pj_per_cycle"] / opensta_pj, 4),
            }
        target["energy_operands"] = spec.describe()
        target["energy_assumptions"] = energy_assumptions(library)


def pnr_reports(
    designs: Sequence[dict[str, Design]],
    devices: Sequence[str],
    *,
    cache: ResultCache,
    workers: int,
    progress: bool,
    timeout_s: float | None = None,
    executor: Executor | None = None,
) -> list[dict[str, dict[str, Any]]]:
    """nextpnr figures (median Fmax over the seeds) of every design on every device."""
    from .nextpnr import PlaceRouteJob

    jobs = [PlaceRouteJob(device, top, design.verilog, timeout_s=timeout_s)
            for per_config in designs for top, design in per_config.items() for device in devices]
    results = iter(run_cached(jobs, cache, workers, progress, desc="nextpnr", executor=executor))
    return [{top: {device: next(results) for device in devices} for top in per_config} for per_config in designs]


def silicon_reports(
    configs: Sequence[Any],
    targets: Sequence[str],
    *,
    blocks: bool = True,
    cache: ResultCache | None = None,
    workers: int | None = None,
    progress: bool = True,
    timeout_s: float | None = None,
    energy: bool = True,
    stream_spec: Any = None,
    tops: Sequence[str] | None = None,
    recipes: Sequence[str] = RECIPES,
    pipeline: int = 0,
    executor: Executor | None = None,
) -> list[dict[str, dict[str, Any]]]:
    """``{top: {target: report}}`` per configuration for the ASIC and place-and-route targets among
    ``targets`` (the others are hwmodel.synthesis.synth's Yosys flows); ``energy`` adds the energy per MAC (operands
    from ``stream_spec``, default: the digits ResNet); ``executor`` runs the flows that are not cached."""
    from ..mac_synth import TOPS, default_workers, export_designs
    from .nextpnr import PNR_TARGETS

    cache = cache if cache is not None else ResultCache(None)
    workers = workers or default_workers()
    libraries = [target for target in targets if target in ASIC_TARGETS]
    devices = [target for target in targets if target in PNR_TARGETS]
    if not libraries and not devices:
        return [{top: {} for top in (tops or TOPS)} for _ in configs]
    tops = tuple(tops or TOPS)
    designs = export_designs(configs, block_tops=tops if blocks else (), cache=cache, workers=workers,
                             progress=progress, pipeline=pipeline, executor=executor)
    designs = [{top: per_config[top] for top in tops} for per_config in designs]
    if energy and stream_spec is None:
        from .operands import StreamSpec

        stream_spec = StreamSpec()
    asic = asic_reports(designs, libraries, blocks=blocks, cache=cache, workers=workers, progress=progress,
                        timeout_s=timeout_s, configs=configs if energy else None, stream_spec=stream_spec,
                        recipes=recipes, executor=executor)
    fpga = pnr_reports(designs, devices, cache=cache, workers=workers, progress=progress, timeout_s=timeout_s,
                       executor=executor) \
        if devices else [{} for _ in configs]
    return [{top: {**asic_one.get(top, {}), **fpga_one.get(top, {})} for top in tops}
            for asic_one, fpga_one in zip(asic, fpga)]

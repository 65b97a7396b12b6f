"""The language-model workload of a sweep: the byte-level LM (lba_train.lm, data/lm/byte_lm.pt) zero-shot on each
floating-point accumulator of the grid: test bits per byte with its bootstrap interval over windows, the paired
difference from the fp32-accumulator row, KL divergence and top-1 agreement to the float model, event rates
(whole model and the worst layer), NaN/Inf counts and the time per point (docs/lm.md).

Each configuration is one point, ``points/lm-<hash>.json`` (with its per-window values and per-layer events),
keyed by everything that determines it: the configuration and how it is fitted (bias mode), the windows, the
weights' and corpus manifest's hashes, the sources of lba_core/lba_train and the library versions. How the
accumulator is fitted to the operands: formats without a fixed bias get the sweep's ``accuracy.bias`` (calibrated
on training windows); fixed-bias formats (fp32/fp16/bf16, a format with an explicit bias) get ``lm.standard_bias``:
"margin" (per-layer power-of-two operand margins, lba_train.bias) or "format" (plain max-abs scaling, the
ablation). The table ``lm.csv`` holds one row per configuration; torch is imported only where points run.
"""

from __future__ import annotations

import hashlib
import html
import io
import math
import sys
import time
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from lba_core import ConfigError, FloatFormat, MacConfig
from lba_core.fileio import markdown_table

from ..execution import provenance
from ..execution.points import POINT_THREADS, limit_threads, point_path, read_point, write_point
from ..synthesis import columns
from .base import Log, PointRun, ReportSection, RowPart, executor_of, task_metric, write_merged_table
from .comparison import acc_label, config_group, is_reference
from .settings import choice, count, flag, setting, unused

LM_FILE = "lm.csv"
#: Windows per batch (operand ranges are frozen: results do not depend on the batching).
EVAL_BATCH = 8
#: The ways a fixed-bias accumulator's operands are scaled: per-layer margins, or plain max-abs (the ablation).
STANDARD_BIAS_MODES = ("margin", "format")


@dataclass(frozen=True)
class LMSpec:
    """The language-model workload's settings (the ``[lm]`` table of a sweep file, the ``--lm-*`` options): the
    byte-level LM zero-shot beside the sweep's model (``enabled``; on in the embedded default sweep)."""

    options_group: ClassVar[str] = "language-model workload (docs/lm.md)"

    enabled: bool = setting(False, option="--lm", kind="flag", check=flag,
                            help="also measure the byte-level LM's bits per byte on every floating-point accumulator",
                            default_text="on for the embedded default sweep, off otherwise")
    #: Test windows of 257 bytes (the bootstrap's units) and training windows for the operand ranges, bias and margins.
    windows: int = setting(8, option="--lm-windows", kind="int", metavar="N", check=count(2),
                           help="test windows of 257 bytes")
    calibration_windows: int = setting(8, option="--lm-calibration-windows", kind="int", metavar="N", check=count(1),
                                       help="training windows for operand ranges, bias and margins")
    standard_bias: str = setting("margin", option="--lm-standard-bias", check=choice(lambda: STANDARD_BIAS_MODES),
                                 help="fp32/fp16/bf16 accumulators: margin (per-layer power-of-two operand margins) "
                                 "or format (plain max-abs scaling, an ablation)")
    resamples: int = setting(2000, option="--lm-resamples", kind="int", metavar="N", check=count(2),
                             help="bootstrap resamples of the test windows")


# ------------------------------------------------------------------------------------------- what runs
def uses_lm(spec) -> bool:
    return spec.accuracy.enabled and spec.lm.enabled


def lm_configs(configs: list[MacConfig]) -> list[MacConfig]:
    """The grid's floating-point configurations (the LM's operands are FP8 formats, not integers)."""
    return [cfg for cfg in configs if not cfg.fixed_acc]


def bias_mode(spec, cfg: MacConfig) -> str:
    """The sweep's bias rule (``spec.bias_mode``); a fixed-bias floating-point accumulator (the rule keeps its
    bias, "format" or "margin") gets ``lm.standard_bias``: operands scaled by per-layer margins, or plainly."""
    mode = spec.bias_mode(cfg)
    if mode in STANDARD_BIAS_MODES and isinstance(cfg.acc, FloatFormat) and not cfg.fused_acc:
        return spec.lm.standard_bias
    return mode


def _window_settings(spec) -> dict[str, Any]:
    return {"windows": spec.lm.windows, "calibration_windows": spec.lm.calibration_windows, "batch": EVAL_BATCH}


@cache
def _data_hashes() -> dict[str, str]:
    from lba_train.lm.checkpoint import DEFAULT_WEIGHTS
    from lba_train.lm.corpus import MANIFEST

    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"
            for path in (DEFAULT_WEIGHTS, MANIFEST)}


def point_determinants(spec, cfg: MacConfig) -> dict[str, Any]:
    return {"kind": "lm", "cfg": cfg.to_dict(), "bias_mode": bias_mode(spec, cfg), **_window_settings(spec),
            "seed": spec.accuracy.seed, "data": _data_hashes(), "threads": POINT_THREADS,
            "source": provenance.accuracy_source_hash(), "tools": provenance.accuracy_tools()}


# ------------------------------------------------------------------------------------------- one point
@cache
def _workload(windows: int, calibration_windows: int, batch: int):
    """The model, the test and calibration windows and the float model's outputs (once per worker)."""
    from lba_train.lm.checkpoint import load_model
    from lba_train.lm.corpus import load_corpus
    from lba_train.lm.evaluate import model_outputs, test_windows

    model, corpus = load_model(), load_corpus()
    test = test_windows(model, corpus.test, windows)
    calibration = test_windows(model, corpus.train, calibration_windows)[:, :-1]
    return model, test, calibration, model_outputs(model, test, batch)


def point_record(model, test, calibration, reference, cfg: MacConfig, mode: str, seed: int = 0,
                 batch: int = EVAL_BATCH) -> dict:
    """One point's record (JSON-ready): ``model`` (a float lba_train.lm ByteLM, untouched) on ``cfg`` with the
    accumulator fitted by bias ``mode`` on the ``calibration`` windows, evaluated on the ``test`` windows against
    the float model's outputs ``reference`` (lba_train.lm.evaluate.model_outputs); works on any model and text."""
    from lba_train.layers import LayerOptions
    from lba_train.lm.evaluate import LMEvalOptions, evaluate_point

    options = LMEvalOptions(windows=int(test.shape[0]), calibration_windows=int(calibration.shape[0]), batch=batch,
                            seed=seed, bias=mode, layer_options=LayerOptions())
    point = evaluate_point(model, cfg, test, calibration, reference, None, options)
    return {"mac_config": point.config, "bias_mode": point.bias_mode, "scale_margins": point.scale_margins,
            "per_window": point.per_window, "layers": point.layers, "nan": point.nan, "inf": point.inf,
            "windows": point.windows, "tokens": point.tokens, "point_seconds": round(point.seconds, 1)}


def _point_job(cfg_dict: dict, mode: str, settings: dict, seed: int) -> dict:
    """One point in a worker (the model, windows and float outputs loaded once per worker)."""
    limit_threads(POINT_THREADS)
    started = time.perf_counter()
    model, test, calibration, reference = _workload(**settings)
    record = point_record(model, test, calibration, reference, MacConfig.from_dict(cfg_dict), mode, seed,
                          settings["batch"])
    return {**record, "seconds": round(time.perf_counter() - started, 1)}


def run_points(spec, configs: list[MacConfig], points: Path, log: Log, run: PointRun, progress: bool = True) -> None:
    """Every configuration's point; matching saved points are reused, the rest run in parallel (records keyed
    by the requested configuration's name)."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from tqdm import tqdm

    from ..execution.jobs import progress_bars, worker_pool

    wanted = lm_configs(configs)
    run.total = len(wanted)
    missing = []
    for cfg in wanted:
        key = provenance.settings_hash(point_determinants(spec, cfg))
        record = read_point(point_path(points, "lm", key), key)
        if record is None:
            missing.append((cfg, key))
        else:
            run.records[cfg.name] = record
    run.saved = len(run.records)
    log(f"LM: reusing {run.saved} of {run.total} points ({spec.lm.windows} test windows)")
    if not missing:
        return
    from lba_train.lm.corpus import load_corpus

    load_corpus()  # fetched once here (pip, first use), not by several workers at once
    with worker_pool(max(1, min(spec.jobs, len(missing))), executor_of(spec)) as pool:
        pending = {pool.submit(_point_job, cfg.to_dict(), bias_mode(spec, cfg), _window_settings(spec),
                               spec.accuracy.seed): (cfg, key) for cfg, key in missing}
        with tqdm(total=len(missing), desc="LM points", unit="point", file=sys.stderr,
                  disable=not progress_bars(progress)) as bar:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    cfg, key = pending.pop(future)
                    record = {**future.result(), "key": key, "determinants": point_determinants(spec, cfg),
                              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                    write_point(point_path(points, "lm", key), record)
                    run.records[cfg.name] = record
                    run.saved += 1
                    bar.set_postfix_str(f"{cfg.acc.name}: {sum(record['per_window']['bpb']) / record['windows']:.3f} bpb")
                    bar.update()


# ------------------------------------------------------------------------------------------- the table
def _rates(layers: list[dict]) -> dict[str, Any]:
    """Whole-model event rates (events / MAC steps) and the layer with the highest overflow-or-swamp rate."""
    steps = sum(layer.get("steps", 0) for layer in layers)
    row: dict[str, Any] = {"mac_steps": steps}
    for event in ("overflow", "underflow", "swamp"):
        row[f"{event}_rate"] = sum(layer.get(event, 0) for layer in layers) / steps if steps else 0.0
    worst = max(layers, key=lambda layer: max(layer.get("overflow_rate", 0), layer.get("swamp_rate", 0)),
                default=None)
    row["worst_layer"] = "" if worst is None else worst["layer"]
    row["worst_layer_rate"] = 0.0 if worst is None else max(worst.get("overflow_rate", 0), worst.get("swamp_rate", 0))
    return row


def table(spec, configs: list[MacConfig], run: PointRun) -> pd.DataFrame:
    """One row per configuration: intervals over the test windows, and the paired difference from the
    fp32-accumulator row of the same inputs, rounding and chunking."""
    from lba_train.bias import describe_scale_margins
    from lba_train.lm.stats import bootstrap_mean, paired_difference

    chosen = [cfg for cfg in lm_configs(configs) if cfg.name in run.records]
    references = {}
    for cfg in chosen:
        if is_reference(cfg.acc.name):
            references.setdefault(config_group(cfg), cfg.name)
    boot = {"resamples": spec.lm.resamples, "seed": spec.accuracy.seed}
    rows = []
    for cfg in chosen:
        record = run.records[cfg.name]
        reference_name = references.get(config_group(cfg))
        baseline = None if reference_name in (None, cfg.name) else run.records[reference_name]
        fitted = MacConfig.from_dict(record["mac_config"])
        row = {"config": fitted.name, "requested": cfg.name, "acc": fitted.acc.name, "bias_mode": record["bias_mode"],
               "acc_bias": getattr(fitted.acc, "bias", ""), "scale_margins": describe_scale_margins(record["scale_margins"]),
               "windows": record["windows"], "tokens": record["tokens"]}
        for name in ("bpb", "kl_bits", "top1"):
            interval = bootstrap_mean(record["per_window"][name], **boot)
            row.update({name: interval.value, f"{name}_low": interval.low, f"{name}_high": interval.high})
        delta = None if baseline is None else paired_difference(record["per_window"]["bpb"],
                                                                baseline["per_window"]["bpb"], **boot)
        row["reference"] = "" if baseline is None else MacConfig.from_dict(baseline["mac_config"]).name
        row.update({"diff_bpb": math.nan if delta is None else delta.value,
                    "diff_bpb_low": math.nan if delta is None else delta.low,
                    "diff_bpb_high": math.nan if delta is None else delta.high})
        row["differs_from_fp32"] = None if delta is None else not delta.contains(0.0)
        row.update(_rates(record["layers"]))
        row.update({"nan": record["nan"], "inf": record["inf"], "seconds": record["seconds"],
                    "settings_hash": record["key"][:provenance.SHORT_HASH]})
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(out: Path, frame: pd.DataFrame, earlier: dict | None, settings: dict) -> None:
    """lm.csv, merged with the earlier run's rows (:func:`write_merged_table`)."""
    write_merged_table(out / LM_FILE, frame, earlier, settings)


def settings_of(spec) -> dict[str, Any]:
    """The LM settings that a report folder's rows share (sweep.json)."""
    return {**asdict(spec.lm), "batch": EVAL_BATCH, "data": _data_hashes()}


# ------------------------------------------------------------------------------------------- rendering
def read_table(out: Path) -> pd.DataFrame | None:
    """The folder's lm.csv, or None when the sweep had no LM workload (older folders too)."""
    path = Path(out) / LM_FILE
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(io.StringIO(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error}); rerun the sweep (its points are kept)") from None
    needed = {"acc", "bias_mode", "windows", "tokens", "diff_bpb", "seconds",
              *(f"{name}{end}" for name in ("bpb", "kl_bits", "top1") for end in ("", "_low", "_high"))}
    if frame.empty or not needed <= set(frame.columns):
        raise ConfigError(f"{path}: not an LM table of this version (columns missing); rerun the sweep")
    return frame


def _interval(row, name: str, signed: bool = False, digits: int = 3) -> str:
    if pd.isna(row[name]):
        return "—"
    form = f"{'+' if signed else ''}.{digits}f"
    return f"{row[name]:{form}} [{row[name + '_low']:{form}}, {row[name + '_high']:{form}}]"


def _rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["accumulator", "fitted by", "bits/byte", "Δ bits/byte vs fp32", "differs from fp32", "KL (bits/byte)",
              "top-1 agreement", "overflow rate", "swamp rate", "NaN/Inf", "s/point"]
    rows = []
    for _, row in frame.iterrows():
        verdict = "(reference)" if not isinstance(row.get("reference"), str) or not row["reference"] else (
            "yes" if str(row["differs_from_fp32"]).lower() == "true" else "no")
        fitted = row["bias_mode"] + (f" (margins {row['scale_margins']})" if row["bias_mode"] == "margin" else
                                     f" (bias {row['acc_bias']})" if row["bias_mode"] in ("calibrate", "paper") else "")
        rows.append([acc_label(row["acc"]), fitted, _interval(row, "bpb"), _interval(row, "diff_bpb", True), verdict,
                     _interval(row, "kl_bits"), _interval(row, "top1"), f"{row['overflow_rate']:.3g}",
                     f"{row['swamp_rate']:.3g}", f"{int(row['nan'])}/{int(row['inf'])}", f"{row['seconds']:.0f}"])
    return header, rows


def _caption(frame: pd.DataFrame) -> str:
    windows, tokens = int(frame["windows"].iloc[0]), int(frame["tokens"].iloc[0])
    return (f"The byte-level language model (docs/lm.md; every GEMM bit-true on the accumulator) zero-shot on "
            f"{windows} test windows ({tokens} scored bytes) of the held-out Shakespeare plays: test bits per byte, "
            "KL divergence and top-1 agreement to the float model's next-byte distribution. Brackets: 95% bootstrap "
            "intervals over windows; Δ: paired interval of the difference from the fp32-accumulator row (not adjusted "
            "for multiplicity); a row differs when it excludes 0. Fitted by: 'margin' = fixed bias, operands scaled "
            "down by the per-layer power-of-two margins shown (binades), 'calibrate' = the accumulator bias calibrated, "
            "'format' = plain max-abs scaling (an ablation for fixed-bias formats), all on training windows. "
            "Event rates: events per MAC step over the whole model; s/point: wall seconds under the run's load.")


def markdown_section(frame: pd.DataFrame) -> str:
    header, rows = _rows(frame)
    return "\n".join(["### Language model (bits per byte)", "",
                      markdown_table(header, rows, "ll" + "r" * (len(header) - 2)), "", _caption(frame), ""])


def html_section(frame: pd.DataFrame) -> str:
    header, rows = _rows(frame)
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    # <wbr> after each '/': a per-layer margin list (3/3/4/...) may wrap instead of widening the page
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell)).replace('/', '/<wbr>')}</td>" for cell in row)
                   + "</tr>" for row in rows)
    return (f'<h2 id="lm">Language model (bits per byte)</h2>\n<table><tr>{head}</tr>{body}</table>\n'
            f'<p class="caption">{html.escape(_caption(frame))}</p>\n')


class LMWorkload:
    """The byte-level language model, zero-shot (the Workload protocol, hwmodel.workloads.base)."""

    name = "lm"
    models: tuple[str, ...] = ()
    settings_table = LMSpec

    def selected(self, spec) -> bool:
        return uses_lm(spec)

    def check_settings(self, spec, given: dict[str, str], where: str) -> None:
        """``--lm-*`` options / ``lm.*`` keys without the workload on are errors, not silence."""
        if not uses_lm(spec):
            unused(given, self.name, "the LM workload (--lm / lm.enabled = true, with accuracy on)", where)

    def check(self, spec) -> None:
        from lba_train.lm.checkpoint import DEFAULT_WEIGHTS

        if uses_lm(spec) and not DEFAULT_WEIGHTS.is_file():
            raise ConfigError(f"the LM workload (lm.enabled) cannot run: no model at {DEFAULT_WEIGHTS}")

    def run(self, spec, configs: list[MacConfig], points: Path, log: Log, run: PointRun, progress: bool) -> None:
        run_points(spec, configs, points, log, run, progress)

    def circuit(self, spec, cfg: MacConfig, run: PointRun) -> MacConfig | None:
        return None  # never the sweep's model: its rows are in lm.csv

    def row(self, spec, cfg: MacConfig, run: PointRun) -> RowPart | None:
        return None

    def write_tables(self, out: Path, spec, configs: list[MacConfig], run: PointRun, earlier: dict | None,
                     settings: dict[str, Any]) -> None:
        write_table(out, table(spec, configs, run), earlier, settings)

    def settings(self, spec) -> dict[str, Any] | None:
        return settings_of(spec)

    def notes(self, spec, table: pd.DataFrame) -> str:
        return ""

    def report_section(self, out: Path) -> ReportSection | None:
        frame = read_table(out)
        if frame is None:
            return None
        metric = task_metric(frame, "bpb", table=columns.LM, title="Language model", stage="zero-shot",
                             higher_is_better=False, intervals="95% bootstrap intervals over the test windows")
        return ReportSection(markdown_section(frame), html_section(frame), "Language model", metric)

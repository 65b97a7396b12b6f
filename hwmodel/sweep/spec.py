"""What a sweep covers: the embedded default, a TOML file or command-line options, validated before any work.

Every setting has one validator, used for the TOML key and the CLI option alike; only the name in the message
differs (``key 'accuracy.lr'`` in a file, ``--lr`` on the command line). A setting that would have no effect
(an accuracy option of an area-only sweep) is an error, not silence.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lba_core import ROUNDING_MODES, ConfigError, FloatFormat, FormatError, MacConfig, parse_acc, parse_format

from ..synthesis.flows.targets import known_targets
from ..workloads import registry

#: Yosys flows (generic, FPGA resource counts) and silicon targets (standard cells; ice40/ecp5 also place
#: and route).
TARGETS = known_targets()
MODELS = registry.MODELS
DEFAULT_ACCUMULATORS = ("fp32", "fp16", "bf16", "e5m6", "e4m7", "e3m8", "e4m3", "e5m2")
#: Integer and fixed-point rows beside the floating-point grid (docs/arithmetic.md §8), as "INPUT:ACC": INT8 x INT8
#: into 32 bits (exact) and into 16 bits saturating, and e4m3 products into an exact Kulisch-style register
#: (F = 18 holds every e4m3 product; 30 integer bits hold 2^11 of the largest) and a narrower rounding one.
DEFAULT_FIXED_POINT = ("int8:int32", "int8:int16_sat", "e4m3:fx48.18", "e4m3:fx32.10_sat")
#: The IEEE-style accumulators keep their standard bias in a sweep unless ``standard_bias`` says otherwise.
STANDARD_ACCUMULATORS = tuple(FloatFormat.parse(name) for name in ("fp32", "fp16", "bf16"))
DEVICES = ("cpu", "cuda")
#: Report folder names: one path component, so a name from a file cannot escape the reports root.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class AccuracySpec:
    """The accuracy half: which model, data and training budget each accumulator configuration gets."""

    enabled: bool = True
    model: str = "resnet"
    data: str = "digits"
    epochs_baseline: int = 10
    epochs: tuple[int, int] = (1, 1)
    lr: tuple[float, float] = (1e-3, 5e-4)
    lr_baseline: float = 3e-3
    seed: int = 0
    #: Fine-tuning seeds per configuration: seed, seed + 1, ... (the split, baseline and bias use ``seed``).
    seeds: int = 3  # measured: the default sweep with 3 seeds is 213 s of CPU on 2 cores (issue #12 item 7)
    bias: str = "calibrate"
    #: Fixed-bias accumulators (fp32/fp16/bf16, explicit biases): "margin" (per-layer power-of-two operand
    #: margins, lba_train.bias) or "format" (plain max-abs scaling: the labelled ablation).
    standard_bias: str = "margin"
    estimator: str = "ste"
    #: Width multiplier of the model's hidden layers (lba_train.models.build_model): makes K, the products
    #: each dot product sums, ``width`` times longer, at about ``width``² the MACs (docs/sweep.md §7).
    width: int = 1
    #: Where each baseline and accuracy point trains: "cpu", or "cuda" (one GPU per point, which a Ray task
    #: declares as ``num_gpus=1``); part of the points' identity (float training differs between devices).
    device: str = "cpu"


@dataclass(frozen=True)
class MiniLMSpec:
    """The MiniLM workload (hwmodel.workloads.minilm): all-MiniLM-L6-v2 on every floating-point accumulator of
    the grid, beside the digits model (``enabled``) or as the sweep's model (``accuracy.model = "minilm"``)."""

    enabled: bool = False
    #: None: fine-tune when MiniLM is the sweep's model, zero-shot only beside the digits model.
    finetune: bool | None = None
    sentences: int = 0  # evaluation sentences, the first N of data/sentences/eval.txt; 0 = all 147
    steps: tuple[int, int] = (150, 150)  # distillation steps per stage, at most (early stopping)
    lr: float = 1e-5
    bias: str = "paper"
    held_out: int = 40
    resamples: int = 1000


@dataclass(frozen=True)
class LMSpec:
    """The language-model workload (hwmodel.workloads.lm): the byte-level LM zero-shot on every floating-point
    accumulator of the grid, beside the sweep's model (``enabled``; on in the embedded default sweep)."""

    enabled: bool = False
    #: Test windows of 257 bytes (the bootstrap's units) and training windows for the operand ranges, bias and margins.
    windows: int = 8
    calibration_windows: int = 8
    #: How fixed-bias accumulators (fp32/fp16/bf16, explicit biases) are fitted: "margin" (per-layer power-of-two
    #: operand margins) or "format" (plain max-abs scaling: the labelled ablation).
    standard_bias: str = "margin"
    resamples: int = 2000


@dataclass(frozen=True)
class SweepSpec:
    """A grid of MAC configurations (inputs x accumulators x rounding x chunk sizes) and how to measure them."""

    name: str = "default"
    inputs: tuple[str, ...] = ("e4m3",)
    accumulators: tuple[str, ...] = DEFAULT_ACCUMULATORS
    rounding: tuple[str, ...] = ("rne",)
    chunk_sizes: tuple[int, ...] = (0,)
    product: str | None = None
    targets: tuple[str, ...] = ("generic", "sky130")
    #: Energy per MAC (gate-level activity on the digits ResNet's operands) for the ASIC targets.
    energy: bool = False
    jobs: int = 2
    #: Where the accuracy and synthesis points run: "local" worker processes or "ray" tasks (hwmodel.execution.jobs.Executor);
    #: results are the same bits either way, so neither is part of a point's identity.
    executor: str = "local"
    ray_address: str | None = None
    baseline_acc: str = "fp32"
    accuracy: AccuracySpec = field(default_factory=AccuracySpec)
    minilm: MiniLMSpec = field(default_factory=MiniLMSpec)
    lm: LMSpec = field(default_factory=LMSpec)
    #: ``"RxC"``: also cost each configuration as an R x C PE array (docs/pe_array.md); chunk size = R.
    array: str | None = None
    #: "INPUT:ACC" integer/fixed-point configurations added after the grid (rne, one chunk); an array sweep
    #: leaves them out (the PE array is built from floating-point FMAq PEs).
    fixed_point: tuple[str, ...] = DEFAULT_FIXED_POINT

    def array_shape(self) -> tuple[int, int] | None:
        if self.array is None:
            return None
        parts = self.array.lower().split("x")
        if len(parts) != 2 or not all(part.isdigit() and int(part) >= 1 for part in parts):
            raise ConfigError(f"array must be ROWSxCOLS with positive integers (e.g. 8x8), got {self.array!r}")
        return int(parts[0]), int(parts[1])

    def configs(self) -> list[MacConfig]:
        """Every point of the grid, in a stable order (inputs, then accumulators as listed); with an array,
        the chunk size is its rows (the array's chunked accumulation)."""
        shape = self.array_shape()
        if shape and set(self.chunk_sizes) - {0, shape[0]}:
            raise ConfigError(f"a {self.array} array accumulates chunks of {shape[0]} products; chunk sizes "
                              f"{', '.join(map(str, self.chunk_sizes))} do not fit it (leave them out)")
        chunks = (shape[0],) if shape else self.chunk_sizes
        grid = [
            MacConfig(inp, acc, product=self.product, rounding=rounding, chunk_size=chunk or None)
            for inp, acc, rounding, chunk in itertools.product(self.inputs, self.accumulators, self.rounding, chunks)
        ]
        return grid if shape else grid + [fixed_point_config(pair) for pair in self.fixed_point]

    def bias_mode(self, cfg: MacConfig) -> str:
        """How the accumulator bias of ``cfg`` is chosen: fp32/fp16/bf16 keep their standard bias (unless
        ``standard_bias`` says otherwise), a format written with an explicit ``_b<N>`` keeps that bias, every
        other format gets the sweep's ``bias`` mode."""
        if cfg.acc in STANDARD_ACCUMULATORS:
            return self.accuracy.standard_bias
        if not isinstance(cfg.acc, FloatFormat):
            return "format"  # fixed-point accumulators have no bias
        if cfg.acc.bias != cfg.acc.default_bias:  # the explicit bias is kept; "margin" scales the operands
            return "margin" if self.accuracy.standard_bias == "margin" else "format"
        return self.accuracy.bias

    @property
    def area_only(self) -> bool:
        return not self.accuracy.enabled


def fixed_point_config(pair: str) -> MacConfig:
    """The MacConfig of an "INPUT:ACC" pair such as "int8:int16_sat" (ConfigError naming the pair)."""
    parts = pair.split(":") if isinstance(pair, str) else []
    if len(parts) != 2:
        raise ConfigError(f"fixed_point entries are INPUT:ACC pairs such as int8:int32, got {pair!r}")
    cfg = MacConfig(*parts)
    if not cfg.fixed_acc:
        raise ConfigError(f"fixed_point entry {pair!r}: {cfg.acc.name} is not an integer/fixed-point accumulator")
    return cfg


# ------------------------------------------------------------------------------------------- validators
# Each takes the raw value and returns it normalised, or raises ValueError with what was expected.


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"expected a non-empty list of strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _formats(value: Any) -> tuple[str, ...]:
    names = _string_list(value)
    for name in names:
        try:
            parse_format(name)
        except FormatError as error:
            raise ValueError(str(error)) from None
    return names


def _accumulators(value: Any) -> tuple[str, ...]:
    """Accumulator spellings: number formats or fused accumulators (``hopper-fp8``), one parse (lba_core.parse_acc)."""
    names = _string_list(value)
    for name in names:
        try:
            parse_acc(name)
        except FormatError as error:
            raise ValueError(str(error)) from None
    return names


def _format(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a format string such as 'e4m3', got {value!r}")
    return _formats([value])[0]


def _choices(allowed: tuple[str, ...]) -> Callable[[Any], tuple[str, ...]]:
    def check(value: Any) -> tuple[str, ...]:
        items = _string_list(value)
        for item in items:
            if item not in allowed:
                raise ValueError(f"expected entries among {', '.join(allowed)}, got {item!r}")
        return items

    return check


def _choice(allowed_of: Callable[[], tuple[str, ...]]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        allowed = allowed_of()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    return check


def _chunk_sizes(value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(_is_int(v) and v >= 0 for v in values):
        raise ValueError(f"expected integers >= 0 (0 = one chunk), got {value!r}")
    return tuple(values)


def _count(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not _is_int(value) or value < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
        return value

    return check


def _positive_number(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive number, got {value!r}")
    return float(value)


def _pair(check: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    """One value (used for both stages) or [stage 1, stage 2]."""

    def pair(value: Any) -> tuple:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(values) not in (1, 2):
            raise ValueError(f"expected one value or [stage 1, stage 2], got {value!r}")
        checked = tuple(check(v) for v in values)
        return checked * 2 if len(checked) == 1 else checked

    return pair


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _array(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string ROWSxCOLS such as '8x8', got {value!r}")
    try:
        SweepSpec(array=value).array_shape()
    except ConfigError as error:
        raise ValueError(str(error)) from None
    return value


def _fixed_pairs(value: Any) -> tuple[str, ...]:
    """INPUT:ACC pairs (may be empty; "none" on the command line)."""
    if isinstance(value, str):
        value = [] if value.strip().lower() == "none" else [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of INPUT:ACC strings such as 'int8:int32' (may be empty), got {value!r}")
    for pair in value:
        try:
            fixed_point_config(pair)
        except (ConfigError, FormatError) as error:
            raise ValueError(str(error)) from None
    return tuple(value)


def _executor(value: Any) -> str:
    from ..execution.jobs import EXECUTORS, RAY_MISSING, ray_installed

    if value not in EXECUTORS:
        raise ValueError(f"expected one of {', '.join(EXECUTORS)}, got {value!r}")
    if value == "ray" and not ray_installed():
        raise ValueError(RAY_MISSING.removeprefix("--executor "))
    return value


def _check_device(spec: "SweepSpec", where: str) -> None:
    """``cuda`` on this machine (local workers, or a Ray instance started here) needs a GPU here; a running
    Ray cluster (``ray_address``) places the points on its GPU nodes."""
    if spec.accuracy.enabled and spec.accuracy.device == "cuda" and spec.ray_address is None:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: device 'cuda' needs a GPU on this machine (torch.cuda.is_available() is "
                              "False); use --device cpu, or --executor ray --ray-address of a cluster with GPUs")


def _ray_address(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected the address of a running Ray cluster (e.g. 'ray://head:10001' or 'auto'), got {value!r}")
    return value


def _check_executor(spec: "SweepSpec", where: str) -> None:
    if spec.ray_address is not None and spec.executor != "ray":
        raise ConfigError(f"{where}: a Ray address has no effect without executor 'ray' (--executor ray)")


def _check_energy(spec: "SweepSpec", where: str) -> None:
    from ..synthesis.flows.libraries import LIBRARIES

    if spec.energy and not set(spec.targets) & set(LIBRARIES):
        raise ConfigError(f"{where}: energy per MAC has no effect without a standard-cell target "
                          f"({', '.join(LIBRARIES)}) in --target / targets")


def report_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"expected a folder name (letters, digits, '.', '_', '-'; no path separators, no leading '.'), got {value!r}"
        )
    return value


def _data(base: Path) -> Callable[[Any], str]:
    """``digits``, ``imagefolder:PATH`` or ``mnist:PATH``; a relative PATH is relative to ``base``. Returns the
    spec with an absolute path, so that the point's identity does not depend on the working directory."""

    def check(value: Any) -> str:
        expected = "'digits', 'imagefolder:PATH' or 'mnist:PATH'"
        if not isinstance(value, str):
            raise ValueError(f"expected {expected}, got {value!r}")
        kind, _, location = value.partition(":")
        if kind not in ("digits", "imagefolder", "mnist") or (kind == "digits") != (not location):
            raise ValueError(f"expected {expected}, got {value!r}")
        if not location:
            return value
        path = (base / Path(location).expanduser()).resolve()
        if not path.exists():
            raise ValueError(f"dataset path {location!r} does not exist ({path})")
        if kind == "imagefolder" and not path.is_dir():
            raise ValueError(f"imagefolder needs a folder, {path} is a file")
        return f"{kind}:{path}"

    return check


def _width(value: Any) -> int:
    from lba_train.models import MAX_WIDTH

    if not _is_int(value) or not 1 <= value <= MAX_WIDTH:
        raise ValueError(f"expected an integer from 1 to {MAX_WIDTH} (the model's width multiplier), got {value!r}")
    return value


def _models() -> tuple[str, ...]:
    return MODELS


def _estimators() -> tuple[str, ...]:
    from lba_train.estimators import ESTIMATORS

    return ESTIMATORS


def _bias_modes() -> tuple[str, ...]:
    from lba_train.bias import BIAS_MODES

    return BIAS_MODES


def _minilm_sentences(value: Any) -> int:
    if not _is_int(value) or not (value == 0 or value >= 3):
        raise ValueError(f"expected 0 (all) or a number of evaluation sentences >= 3, got {value!r}")
    return value


def _minilm_bias_modes() -> tuple[str, ...]:
    return ("paper", "format")


@dataclass(frozen=True)
class Setting:
    """One sweep setting: its field, TOML key, CLI option (None: file only) and validator."""

    field: str
    key: str
    option: str | None
    check: Callable[[Any], Any]


GRID_SETTINGS = (
    Setting("name", "name", "--name", report_name),
    Setting("inputs", "inputs", "--in", _formats),
    Setting("accumulators", "accumulators", "--acc", _accumulators),
    Setting("rounding", "rounding", "--rounding", _choices(ROUNDING_MODES)),
    Setting("chunk_sizes", "chunk_sizes", "--chunk", _chunk_sizes),
    Setting("product", "product", "--product", _format),
    Setting("targets", "targets", "--target", _choices(TARGETS)),
    Setting("energy", "energy", "--energy", _flag),
    Setting("jobs", "jobs", "--jobs", _count(1)),
    Setting("executor", "executor", "--executor", _executor),
    Setting("ray_address", "ray_address", "--ray-address", _ray_address),
    Setting("baseline_acc", "baseline_acc", "--baseline", _format),
    Setting("array", "array", "--array", _array),
    Setting("fixed_point", "fixed_point", "--fixed", _fixed_pairs),
)


def accuracy_settings(base: Path) -> tuple[Setting, ...]:
    """The accuracy settings; relative data paths are taken relative to ``base``."""
    return (
        Setting("enabled", "accuracy.enabled", "--accuracy", _flag),
        Setting("model", "accuracy.model", "--model", _choice(_models)),
        Setting("data", "accuracy.data", "--data", _data(base)),
        Setting("epochs_baseline", "accuracy.epochs_baseline", "--epochs-baseline", _count(0)),
        Setting("epochs", "accuracy.epochs", "--epochs", _pair(_count(0))),
        Setting("lr", "accuracy.lr", "--lr", _pair(_positive_number)),
        Setting("lr_baseline", "accuracy.lr_baseline", "--lr-baseline", _positive_number),
        Setting("seed", "accuracy.seed", "--seed", _count(0)),
        Setting("seeds", "accuracy.seeds", "--seeds", _count(1)),
        Setting("bias", "accuracy.bias", "--bias", _choice(_bias_modes)),
        Setting("standard_bias", "accuracy.standard_bias", "--standard-bias", _choice(_bias_modes)),
        Setting("estimator", "accuracy.estimator", "--estimator", _choice(_estimators)),
        Setting("width", "accuracy.width", "--width", _width),
        Setting("device", "accuracy.device", "--device", _choice(lambda: DEVICES)),
    )


#: The MiniLM workload's settings (a ``[minilm]`` table in TOML).
MINILM_SETTINGS = (
    Setting("enabled", "minilm.enabled", "--minilm", _flag),
    Setting("finetune", "minilm.finetune", "--minilm-finetune", _flag),
    Setting("sentences", "minilm.sentences", "--minilm-sentences", _minilm_sentences),
    Setting("steps", "minilm.steps", "--minilm-steps", _pair(_count(0))),
    Setting("lr", "minilm.lr", "--minilm-lr", _positive_number),
    Setting("bias", "minilm.bias", "--minilm-bias", _choice(_minilm_bias_modes)),
    Setting("held_out", "minilm.held_out", "--minilm-held-out", _count(1)),
    Setting("resamples", "minilm.resamples", "--minilm-resamples", _count(2)),
)
#: The language-model workload's settings (an ``[lm]`` table in TOML).
LM_SETTINGS = (
    Setting("enabled", "lm.enabled", "--lm", _flag),
    Setting("windows", "lm.windows", "--lm-windows", _count(2)),
    Setting("calibration_windows", "lm.calibration_windows", "--lm-calibration-windows", _count(1)),
    Setting("standard_bias", "lm.standard_bias", "--lm-standard-bias", _choice(lambda: ("margin", "format"))),
    Setting("resamples", "lm.resamples", "--lm-resamples", _count(2)),
)
#: The embedded default sweep (``hwmodel sweep`` without a file or --acc): digits, MiniLM and the LM zero-shot.
MAIN_JOB = SweepSpec(minilm=MiniLMSpec(enabled=True), lm=LMSpec(enabled=True))


#: Accuracy settings of the digits pipeline only (MiniLM has its own data, recipe and single seed).
_DIGITS_ONLY = ("data", "epochs_baseline", "epochs", "lr", "lr_baseline", "seeds", "bias", "estimator", "width", "device")


def _check_minilm(spec: SweepSpec, given: dict[str, str], where: str) -> None:
    """Settings that would have no effect are errors; ``given`` maps the fields set (``minilm.<field>`` or
    ``accuracy.<field>``) to the names the user wrote (key or option)."""
    from ..workloads.minilm import stages, uses_minilm

    def named(fields) -> str:
        return ", ".join(sorted(given[f] for f in fields))

    mine = [f for f in given if f.startswith("minilm.") and f != "minilm.enabled"]
    if mine and not uses_minilm(spec):
        raise ConfigError(f"{where}: {named(mine)} would have no effect without the MiniLM workload "
                          "(--minilm / minilm.enabled = true, or --model minilm)")
    tuning = [f for f in mine if f in ("minilm.steps", "minilm.lr", "minilm.held_out")]
    if tuning and "fine-tuned" not in stages(spec):
        raise ConfigError(f"{where}: {named(tuning)} would have no effect without MiniLM fine-tuning "
                          "(--minilm-finetune / minilm.finetune = true)")
    digits = [f for f in given if f.removeprefix("accuracy.") in _DIGITS_ONLY and f.startswith("accuracy.")]
    if digits and spec.accuracy.model == "minilm":
        raise ConfigError(f"{where}: {named(digits)} would have no effect with --model minilm (its settings are "
                          "the --minilm-* options / the [minilm] table)")


def _checked(setting: Setting, value: Any, where: str) -> Any:
    try:
        return setting.check(value)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _fields_of(cls) -> set[str]:
    return {f.name for f in fields(cls)}


# ------------------------------------------------------------------------------------------------ TOML
def _read_toml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"sweep configuration {path} is a folder, not a TOML file")
    if not path.is_file():
        raise ConfigError(f"sweep configuration file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); TOML files must be UTF-8") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def load_sweep_spec(path: "str | Path", name: str | None = None) -> SweepSpec:
    """Read a sweep TOML file; every key is checked here, naming the file and the key."""
    path = Path(path)
    raw = _read_toml(path)
    grid = {setting.key: setting for setting in GRID_SETTINGS}
    unknown = sorted(set(raw) - set(grid) - {"accuracy", "minilm", "lm"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted([*grid, 'accuracy', 'minilm', 'lm']))}")
    changes = {grid[key].field: _checked(grid[key], value, f"{path}: key '{key}'") for key, value in raw.items()
               if key not in ("accuracy", "minilm", "lm")}
    changes.setdefault("name", _checked(grid["name"], path.stem, f"{path}: the file name as report name (set key 'name')"))
    spec = SweepSpec(**changes)
    _check_executor(spec, str(path))
    _check_energy(spec, str(path))
    try:
        spec.configs()  # the keys together: chunk sizes that do not fit the array
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    if "accuracy" in raw:
        spec = replace(spec, accuracy=_load_accuracy(path, raw["accuracy"]))
        _check_device(spec, f"{path}: key 'accuracy.device'")
    if "minilm" in raw:
        spec = replace(spec, minilm=_load_minilm(path, raw["minilm"]))
    if "lm" in raw:
        spec = replace(spec, lm=_load_lm(path, raw["lm"]))
    tables = {table: raw.get(table) for table in ("accuracy", "minilm")}
    _check_minilm(spec, {f"{table}.{key}": f"key '{table}.{key}'" for table, keys in tables.items()
                         if isinstance(keys, dict) for key in keys}, str(path))
    if name is not None:
        spec = replace(spec, name=_checked(grid["name"], name, "--name"))
    return spec


def _load_accuracy(path: Path, raw: Any) -> AccuracySpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: key 'accuracy': expected a table ([accuracy]), got {raw!r}")
    settings = {setting.key.removeprefix("accuracy."): setting for setting in accuracy_settings(path.parent)}
    unknown = sorted(set(raw) - set(settings))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) accuracy.{', accuracy.'.join(unknown)}; expected some of {', '.join(sorted(settings))}"
        )
    changes = {settings[key].field: _checked(settings[key], value, f"{path}: key 'accuracy.{key}'") for key, value in raw.items()}
    if changes.get("enabled") is False and len(changes) > 1:
        ignored = ", ".join(f"accuracy.{key}" for key in raw if key != "enabled")
        raise ConfigError(f"{path}: key(s) {ignored} have no effect with accuracy.enabled = false")
    return AccuracySpec(**changes)


def _load_minilm(path: Path, raw: Any) -> MiniLMSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: key 'minilm': expected a table ([minilm]), got {raw!r}")
    settings = {setting.key.removeprefix("minilm."): setting for setting in MINILM_SETTINGS}
    unknown = sorted(set(raw) - set(settings))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) minilm.{', minilm.'.join(unknown)}; expected some of "
                          f"{', '.join(sorted(settings))}")
    return MiniLMSpec(**{settings[key].field: _checked(settings[key], value, f"{path}: key 'minilm.{key}'")
                         for key, value in raw.items()})


def _load_lm(path: Path, raw: Any) -> LMSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: key 'lm': expected a table ([lm]), got {raw!r}")
    settings = {setting.key.removeprefix("lm."): setting for setting in LM_SETTINGS}
    unknown = sorted(set(raw) - set(settings))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) lm.{', lm.'.join(unknown)}; expected some of {', '.join(sorted(settings))}")
    return LMSpec(**{settings[key].field: _checked(settings[key], value, f"{path}: key 'lm.{key}'")
                     for key, value in raw.items()})


# ------------------------------------------------------------------------------------------------ options
#: Options that say how a sweep runs, not what it measures: allowed next to --config.
_RUN_OPTIONS = ("--name", "--jobs", "--executor", "--ray-address")


def apply_options(spec: SweepSpec, values: dict[str, Any], from_file: bool) -> SweepSpec:
    """``spec`` with command-line values (option name -> raw value, None = not given) applied and checked.

    With a TOML file (``from_file``) the grid comes from the file: grid options other than --name, --jobs and
    the executor's are errors. Accuracy options need accuracy to be on."""
    given = {option: value for option, value in values.items() if value is not None}
    grid = {setting.option: setting for setting in GRID_SETTINGS}
    accuracy = {setting.option: setting for setting in accuracy_settings(Path.cwd())}
    minilm = {setting.option: setting for setting in MINILM_SETTINGS}
    lm = {setting.option: setting for setting in LM_SETTINGS}
    unknown = set(given) - set(grid) - set(accuracy) - set(minilm) - set(lm)
    if unknown:
        raise ValueError(f"not sweep options: {sorted(unknown)}")
    if from_file:
        clashing = [option for option in given if option in grid and option not in _RUN_OPTIONS]
        if clashing:
            raise ConfigError(
                f"{', '.join(clashing)} cannot be combined with --config: the file sets the grid "
                f"(edit its keys, or drop --config)"
            )
    grid_changes = {grid[o].field: _checked(grid[o], v, o) for o, v in given.items() if o in grid}
    spec = replace(spec, **grid_changes)
    accuracy_changes = {accuracy[o].field: _checked(accuracy[o], v, o) for o, v in given.items() if o in accuracy}
    spec = replace(spec, accuracy=replace(spec.accuracy, **accuracy_changes))
    minilm_changes = {minilm[o].field: _checked(minilm[o], v, o) for o, v in given.items() if o in minilm}
    spec = replace(spec, minilm=replace(spec.minilm, **minilm_changes))
    lm_changes = {lm[o].field: _checked(lm[o], v, o) for o, v in given.items() if o in lm}
    spec = replace(spec, lm=replace(spec.lm, **lm_changes))
    spec.configs()  # the options together: chunk sizes that do not fit --array
    _check_executor(spec, "--ray-address")
    _check_device(spec, "--device")
    _check_energy(spec, "--energy")
    if not spec.accuracy.enabled:
        ignored = [o for o in given if o in accuracy and o != "--accuracy"]
        if ignored:
            reason = "--no-accuracy" if given.get("--accuracy") is False else (
                "accuracy.enabled = false in the file" if from_file else "--acc without --accuracy (an area-only sweep)")
            raise ConfigError(f"{', '.join(ignored)} would have no effect with {reason}; add --accuracy or drop them")
    fields = {f"accuracy.{accuracy[o].field}": o for o in given if o in accuracy}
    fields.update({f"minilm.{minilm[o].field}": o for o in given if o in minilm})
    _check_minilm(spec, fields, "options")
    return spec


def check_buildable(spec: SweepSpec) -> list[MacConfig]:
    """The grid's configurations, each (and its baseline twin) checked against the RTL generator, so that a
    format no circuit implements fails before hours of training."""
    import rtl

    configs = spec.configs()
    if not configs:
        raise ConfigError("the sweep has no configurations")
    baseline = FloatFormat.parse(spec.baseline_acc)
    for cfg in configs:
        # integer/fixed-point rows have no floating-point twin (their reduction is left empty)
        for candidate in (cfg,) if cfg.fixed_acc else (cfg, cfg.replace(acc=baseline)):
            try:
                if candidate.fused_acc:  # the FDPA unit's generator (rtl.fdpa_plan), not the MAC's
                    from rtl.fdpa_plan import plan_fused

                    plan_fused(candidate)
                    continue
                rtl.check_config(candidate)
            except ConfigError as error:
                raise ConfigError(f"configuration {candidate.name} cannot be synthesized: {error}") from None
    return configs


def check_option(option: str, value: Any, base: Path | None = None) -> Any:
    """Check one command-line value with the validator of the sweep setting of that option name, so that
    every command spells and means an option the same way (``hwmodel train --lr`` is ``hwmodel sweep --lr``);
    ConfigError ``"--lr: ..."``. Relative data paths are taken relative to ``base`` (default: the cwd)."""
    settings = {setting.option: setting for setting in (*GRID_SETTINGS, *accuracy_settings(base or Path.cwd()),
                                                        *MINILM_SETTINGS, *LM_SETTINGS)}
    return _checked(settings[option], value, option)

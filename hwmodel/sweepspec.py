"""What a sweep covers: the embedded default, or a TOML file validated before any work starts."""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lba_core import ConfigError, FloatFormat, FormatError, MacConfig

TARGETS = ("generic", "ice40", "xilinx", "ecp5")
MODELS = ("mlp", "resnet", "transformer")
DEFAULT_ACCUMULATORS = ("fp32", "fp16", "bf16", "e5m6", "e4m7", "e3m8", "e4m3", "e5m2")
#: Integer and fixed-point rows beside the floating-point grid (docs/arithmetic.md §8), as "INPUT:ACC": INT8 x INT8
#: into 32 bits (exact) and into 16 bits saturating, and e4m3 products into an exact Kulisch-style register
#: (F = 18 holds every e4m3 product; 30 integer bits hold 2^11 of the largest) and a narrower rounding one.
DEFAULT_FIXED_POINT = ("int8:int32", "int8:int16_sat", "e4m3:fx48.18", "e4m3:fx32.10_sat")


@dataclass(frozen=True)
class AccuracySpec:
    """The accuracy half: which model, data and training budget each accumulator configuration gets."""

    enabled: bool = True
    model: str = "resnet"
    data: str = "digits"
    epochs_baseline: int = 10
    epochs: tuple[int, int] = (1, 1)
    lr: tuple[float, float] = (1e-3, 5e-4)
    seed: int = 0
    bias: str = "calibrate"
    estimator: str = "ste"


@dataclass(frozen=True)
class SweepSpec:
    """A grid of MAC configurations (inputs x accumulators x rounding x chunk sizes) and how to measure them."""

    name: str = "default"
    inputs: tuple[str, ...] = ("e4m3",)
    accumulators: tuple[str, ...] = DEFAULT_ACCUMULATORS
    rounding: tuple[str, ...] = ("rne",)
    chunk_sizes: tuple[int, ...] = (0,)
    product: str | None = None
    targets: tuple[str, ...] = ("generic",)
    jobs: int = 2
    baseline_acc: str = "fp32"
    accuracy: AccuracySpec = field(default_factory=AccuracySpec)
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


def fixed_point_config(pair: str) -> MacConfig:
    """The MacConfig of an "INPUT:ACC" pair such as "int8:int16_sat" (ConfigError naming the pair)."""
    parts = pair.split(":") if isinstance(pair, str) else []
    if len(parts) != 2:
        raise ConfigError(f"fixed_point entries are INPUT:ACC pairs such as int8:int32, got {pair!r}")
    cfg = MacConfig(*parts)
    if not cfg.fixed_acc:
        raise ConfigError(f"fixed_point entry {pair!r}: {cfg.acc.name} is not an integer/fixed-point accumulator")
    return cfg


_SWEEP_KEYS = {f.name: f for f in fields(SweepSpec)} | {"accuracy": None}
_ACCURACY_KEYS = {f.name: f for f in fields(AccuracySpec)}


def _fail(path: Path, key: str, expected: str, got: Any) -> ConfigError:
    return ConfigError(f"{path}: key '{key}': expected {expected}, got {got!r}")


def _string_list(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(path, key, "a non-empty list of strings", value)
    return tuple(value)


def _check_formats(path: Path, key: str, names: tuple[str, ...]) -> None:
    for name in names:
        try:
            FloatFormat.parse(name)
        except FormatError as error:
            raise ConfigError(f"{path}: key '{key}': {error}") from None


def load_sweep_spec(path: "str | Path", name: str | None = None) -> SweepSpec:
    """Read a sweep TOML file; unknown keys, malformed formats and missing data paths fail here, naming the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep configuration file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    unknown = sorted(set(raw) - set(_SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(_SWEEP_KEYS))}")
    spec = SweepSpec(name=name or raw.get("name", path.stem))
    changes: dict[str, Any] = {}
    for key in ("inputs", "accumulators", "rounding", "targets"):
        if key in raw:
            changes[key] = _string_list(path, key, raw[key])
    _check_formats(path, "inputs", changes.get("inputs", spec.inputs))
    _check_formats(path, "accumulators", changes.get("accumulators", spec.accumulators))
    for mode in changes.get("rounding", ()):
        if mode not in ("rne", "rtz"):
            raise _fail(path, "rounding", "entries 'rne' or 'rtz'", mode)
    for target in changes.get("targets", ()):
        if target not in TARGETS:
            raise _fail(path, "targets", f"entries among {', '.join(TARGETS)}", target)
    if "chunk_sizes" in raw:
        chunks = raw["chunk_sizes"]
        if not isinstance(chunks, list) or not chunks or not all(isinstance(c, int) and c >= 0 for c in chunks):
            raise _fail(path, "chunk_sizes", "a non-empty list of integers >= 0 (0 = no chunking)", chunks)
        changes["chunk_sizes"] = tuple(chunks)
    for key in ("product", "baseline_acc"):
        if key in raw:
            if not isinstance(raw[key], str):
                raise _fail(path, key, "a format string", raw[key])
            _check_formats(path, key, (raw[key],))
            changes[key] = raw[key]
    if "fixed_point" in raw:
        value = raw["fixed_point"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(path, "fixed_point", "a list of INPUT:ACC strings such as 'int8:int32' (may be empty)", value)
        for pair in value:
            try:
                fixed_point_config(pair)
            except ConfigError as error:
                raise ConfigError(f"{path}: key 'fixed_point': {error}") from None
        changes["fixed_point"] = tuple(value)
    if "jobs" in raw:
        if not isinstance(raw["jobs"], int) or raw["jobs"] < 1:
            raise _fail(path, "jobs", "a positive integer", raw["jobs"])
        changes["jobs"] = raw["jobs"]
    if "array" in raw:
        if not isinstance(raw["array"], str):
            raise _fail(path, "array", "a string ROWSxCOLS such as '8x8'", raw["array"])
        try:
            replace(spec, array=raw["array"]).array_shape()
        except ConfigError as error:
            raise ConfigError(f"{path}: key 'array': {error}") from None
        changes["array"] = raw["array"]
    if "name" in raw and not isinstance(raw["name"], str):
        raise _fail(path, "name", "a string", raw["name"])
    if "accuracy" in raw:
        changes["accuracy"] = _load_accuracy(path, raw["accuracy"])
    return replace(spec, **changes)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _load_accuracy(path: Path, raw: Any) -> AccuracySpec:
    if not isinstance(raw, dict):
        raise _fail(path, "accuracy", "a table", raw)
    unknown = sorted(set(raw) - set(_ACCURACY_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) accuracy.{', accuracy.'.join(unknown)}; expected some of {', '.join(sorted(_ACCURACY_KEYS))}"
        )
    spec = AccuracySpec()
    changes: dict[str, Any] = {}
    checks = {
        "enabled": (lambda v: isinstance(v, bool), "true or false"),
        "model": (lambda v: v in MODELS, f"one of {', '.join(MODELS)}"),
        "data": (lambda v: isinstance(v, str), "'digits', 'imagefolder:PATH' or 'mnist:PATH'"),
        "epochs_baseline": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
        "epochs": (lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(e, int) and e >= 0 for e in v), "[stage1, stage2] epochs"),
        "lr": (lambda v: _positive(v) or (isinstance(v, list) and len(v) == 2 and all(map(_positive, v))),
               "a positive number or [stage1, stage2] numbers"),
        "seed": (lambda v: isinstance(v, int), "an integer"),
        "bias": (lambda v: v in ("format", "paper", "calibrate"), "'format', 'paper' or 'calibrate'"),
        "estimator": (lambda v: isinstance(v, str), "an estimator name"),
    }
    for key, value in raw.items():
        valid, expected = checks[key]
        if not valid(value):
            raise _fail(path, f"accuracy.{key}", expected, value)
        if key == "lr" and not isinstance(value, list):
            value = [value, value]
        changes[key] = tuple(value) if isinstance(value, list) else value
    data = changes.get("data", spec.data)
    kind, _, location = data.partition(":")
    if kind not in ("digits", "imagefolder", "mnist") or (kind != "digits" and not location):
        raise _fail(path, "accuracy.data", "'digits', 'imagefolder:PATH' or 'mnist:PATH'", data)
    if location and not (path.parent / location).expanduser().exists() and not Path(location).expanduser().exists():
        raise ConfigError(f"{path}: key 'accuracy.data': dataset path {location!r} does not exist")
    return replace(spec, **changes)

"""The validators of the sweep's own settings (formats, accumulators, the grid, data, width, executor, report
name), beside the generic ones of hwmodel.workloads.settings. Each takes the raw value (TOML or command line)
and returns it normalised, or raises ValueError saying what was expected; the caller names the key or option."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lba_core import ConfigError, FormatError, MacConfig, parse_acc, parse_format

from ..workloads.settings import is_int, string_list

#: Report folder names: one path component, so a name from a file cannot escape the reports root.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def formats(value: Any) -> tuple[str, ...]:
    names = string_list(value)
    for name in names:
        try:
            parse_format(name)
        except FormatError as error:
            raise ValueError(str(error)) from None
    return names


def accumulators(value: Any) -> tuple[str, ...]:
    """Accumulator spellings: number formats or fused accumulators (``hopper-fp8``), one parse (lba_core.parse_acc)."""
    names = string_list(value)
    for name in names:
        try:
            parse_acc(name)
        except FormatError as error:
            raise ValueError(str(error)) from None
    return names


def one_format(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a format string such as 'e4m3', got {value!r}")
    return formats([value])[0]


def entries(allowed_of: Callable[[], tuple[str, ...]]) -> Callable[[Any], tuple[str, ...]]:
    """A non-empty list of entries of ``allowed_of()``."""

    def check(value: Any) -> tuple[str, ...]:
        items = string_list(value)
        allowed = allowed_of()
        for item in items:
            if item not in allowed:
                raise ValueError(f"expected entries among {', '.join(allowed)}, got {item!r}")
        return items

    return check


def chunk_sizes(value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(is_int(v) and v >= 0 for v in values):
        raise ValueError(f"expected integers >= 0 (0 = one chunk), got {value!r}")
    return tuple(values)


def array_shape(text: str) -> tuple[int, int]:
    """``"RxC"`` as (rows, cols); ConfigError naming what is expected."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise ConfigError(f"array must be ROWSxCOLS with positive integers (e.g. 8x8), got {text!r}")
    return int(parts[0]), int(parts[1])


def array(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string ROWSxCOLS such as '8x8', got {value!r}")
    try:
        array_shape(value)
    except ConfigError as error:
        raise ValueError(str(error)) from None
    return value


def fixed_point_config(pair: str) -> MacConfig:
    """The MacConfig of an "INPUT:ACC" pair such as "int8:int16_sat" (ConfigError naming the pair)."""
    parts = pair.split(":") if isinstance(pair, str) else []
    if len(parts) != 2:
        raise ConfigError(f"fixed_point entries are INPUT:ACC pairs such as int8:int32, got {pair!r}")
    cfg = MacConfig(*parts)
    if not cfg.fixed_acc:
        raise ConfigError(f"fixed_point entry {pair!r}: {cfg.acc.name} is not an integer/fixed-point accumulator")
    return cfg


def fixed_pairs(value: Any) -> tuple[str, ...]:
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


def executor(value: Any) -> str:
    from ..execution.jobs import EXECUTORS, RAY_MISSING, ray_installed

    if value not in EXECUTORS:
        raise ValueError(f"expected one of {', '.join(EXECUTORS)}, got {value!r}")
    if value == "ray" and not ray_installed():
        raise ValueError(RAY_MISSING.removeprefix("--executor "))
    return value


def ray_address(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected the address of a running Ray cluster (e.g. 'ray://head:10001' or 'auto'), got {value!r}")
    return value


def report_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"expected a folder name (letters, digits, '.', '_', '-'; no path separators, no leading '.'), got {value!r}"
        )
    return value


def data(value: Any, base: Path) -> str:
    """``digits``, ``imagefolder:PATH`` or ``mnist:PATH``; a relative PATH is relative to ``base``. Returns the
    spec with an absolute path, so that the point's identity does not depend on the working directory."""
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


def width(value: Any) -> int:
    from lba_train.models import MAX_WIDTH

    if not is_int(value) or not 1 <= value <= MAX_WIDTH:
        raise ValueError(f"expected an integer from 1 to {MAX_WIDTH} (the model's width multiplier), got {value!r}")
    return value


def estimators() -> tuple[str, ...]:
    from lba_train.estimators import ESTIMATORS

    return ESTIMATORS


def bias_modes() -> tuple[str, ...]:
    from lba_train.bias import BIAS_MODES

    return BIAS_MODES

"""Settings declared once: a setting is a dataclass field whose metadata (:func:`setting`) names its command-line
option, metavar, help and validator. The ``hwmodel sweep`` options (with the field's default in their help), the
TOML loader and the validation of both are generated from these declarations (hwmodel.sweep.loading), and
``hwmodel train`` takes the accuracy options from the same ones.

It lives in the workloads package because a workload declares its own settings (its ``[table]`` in a sweep
file and its ``--<name>-*`` options, e.g. hwmodel.workloads.minilm.MiniLMSpec) and the workloads sit below the
sweep. The validators here are the generic ones (counts, numbers, choices, flags, stage pairs); each takes the
raw value (from TOML or from argparse) and returns it normalised, or raises ValueError saying what was expected.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from lba_core import ConfigError

#: How a command-line value is parsed before its validator sees it (argparse keywords per kind).
CLI_KINDS = ("str", "list", "ints", "floats", "int", "float", "flag", "switch")


@dataclass(frozen=True)
class Setting:
    """One setting's declaration (the metadata of its dataclass field).

    ``option``: its command-line option (None: TOML only); ``check``: its validator (with ``relative``, called
    as ``check(value, base)``, base being the folder that relative paths start from); ``kind``: how argparse
    parses it (:data:`CLI_KINDS`); ``help``/``metavar``: its help line, to which the field's default is added
    (``default_text`` replaces it, ``""`` shows none); ``group``: the option group of the parser (None: the
    parser's own options; ``"external"``: the option is defined elsewhere, e.g. the synthesis options shared
    with ``hwmodel synth``); ``dest``: the argparse destination when not the option's name; ``run_option``: it
    says how a sweep runs, not what it measures (allowed next to ``--config``); ``digits_only``: read by the
    digits models only (an error with another model)."""

    option: str | None
    check: Callable[..., Any]
    help: str = ""
    kind: str = "str"
    metavar: str | None = None
    default_text: str | None = None
    group: str | None = None
    dest: str | None = None
    relative: bool = False
    run_option: bool = False
    digits_only: bool = False

    def __post_init__(self) -> None:
        if self.kind not in CLI_KINDS:
            raise ValueError(f"Setting kind {self.kind!r}: expected one of {', '.join(CLI_KINDS)}")

    @property
    def destination(self) -> str:
        return self.dest or self.option.lstrip("-").replace("-", "_")

    def validate(self, value: Any, base: Path | None = None) -> Any:
        return self.check(value, base or Path.cwd()) if self.relative else self.check(value)


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, **declaration: Any) -> Any:
    """A dataclass field declaring a setting: ``field(default=..., metadata={"setting": Setting(...)})``."""
    return field(default=default, default_factory=default_factory, metadata={"setting": Setting(**declaration)})


def declared(cls) -> dict[str, Setting]:
    """The settings of dataclass ``cls`` by field name, in declaration order (fields without one are left out)."""
    return {f.name: f.metadata["setting"] for f in fields(cls) if "setting" in f.metadata}


def tables(cls) -> dict[str, type]:
    """The fields of ``cls`` that are themselves dataclasses of settings (a ``[table]`` in TOML), by name."""
    return {f.name: f.default_factory for f in fields(cls)
            if f.default_factory is not MISSING and is_dataclass(f.default_factory) and declared(f.default_factory)}


def default_of(cls, name: str) -> Any:
    found: Field = next(f for f in fields(cls) if f.name == name)
    return found.default if found.default is not MISSING else found.default_factory()


def shown(value: Any) -> str:
    """A default as the command line spells it: lists comma-separated, numbers as %g."""
    if isinstance(value, (list, tuple)):
        return ",".join(shown(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def help_text(cls, name: str) -> str:
    """The help line of a setting, ending in its default: the field's own, unless the declaration says otherwise."""
    declaration = declared(cls)[name]
    text = shown(default_of(cls, name)) if declaration.default_text is None else declaration.default_text
    return f"{declaration.help} (default: {text})" if text else declaration.help


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")]


def _numbers(kind) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    return parse


_PARSERS: dict[str, dict[str, Any]] = {
    "str": {}, "list": {"type": _comma_list}, "ints": {"type": _numbers(int)}, "floats": {"type": _numbers(float)},
    "int": {"type": int}, "float": {"type": float},
    "flag": {"action": argparse.BooleanOptionalAction}, "switch": {"action": "store_true"},
}


def add_options(parser: argparse.ArgumentParser, cls, groups: dict[str | None, Any] | None = None,
                names: tuple[str, ...] | None = None, defaults: bool = False) -> None:
    """Add the options of ``cls``'s settings (all, or ``names``) to ``parser``, each in its declared group, else
    in ``cls.options_group`` (``groups`` maps a group title to an argparse group; a missing one is created; no
    group: the parser's own options). Without
    ``defaults`` every option defaults to None (not given: the spec's value stands); with it, to the field's
    default in command-line form."""
    groups = {} if groups is None else groups
    for name, declaration in declared(cls).items():
        if declaration.option is None or declaration.group == "external" or (names is not None and name not in names):
            continue
        title = declaration.group or getattr(cls, "options_group", None)
        group = parser if title is None else groups.get(title)
        if group is None:
            group = groups[title] = parser.add_argument_group(title)
        keywords = dict(_PARSERS[declaration.kind])
        if declaration.dest:
            keywords["dest"] = declaration.dest
        if declaration.metavar and declaration.kind not in ("flag", "switch"):
            keywords["metavar"] = declaration.metavar
        value = default_of(cls, name)
        keywords["default"] = (list(value) if isinstance(value, tuple) else value) if defaults else None
        group.add_argument(declaration.option, help=help_text(cls, name), **keywords)


# ------------------------------------------------------------------------------------------- validators
def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"expected a non-empty list of strings, got {value!r}")
    return tuple(v.strip() for v in value)


def choice(allowed_of: Callable[[], tuple[str, ...]]) -> Callable[[Any], str]:
    """One of ``allowed_of()`` (a function, so that a list owned by a slow-to-import module is read late)."""

    def check(value: Any) -> str:
        allowed = allowed_of()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    return check


def count(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not is_int(value) or value < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
        return value

    return check


def positive_number(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive number, got {value!r}")
    return float(value)


def pair(check: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    """One value (used for both stages) or [stage 1, stage 2]."""

    def check_pair(value: Any) -> tuple:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(values) not in (1, 2):
            raise ValueError(f"expected one value or [stage 1, stage 2], got {value!r}")
        checked = tuple(check(v) for v in values)
        return checked * 2 if len(checked) == 1 else checked

    return check_pair


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def zero_or_at_least(minimum: int, what: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not is_int(value) or not (value == 0 or value >= minimum):
            raise ValueError(f"expected 0 (all) or a number of {what} >= {minimum}, got {value!r}")
        return value

    return check


def unused(given: dict[str, str], table: str, needed: str, where: str) -> None:
    """Raise the "would have no effect" error for the settings of ``table`` in ``given`` (``table.field`` -> the
    name the user wrote) other than ``enabled``, if there are any; ``needed`` says what they need."""
    names = sorted(name for key, name in given.items() if key.startswith(f"{table}.") and key != f"{table}.enabled")
    if names:
        raise ConfigError(f"{where}: {', '.join(names)} would have no effect without {needed}")

"""A sweep spec from a TOML file or from command-line values, every value checked before any work.

Generic over the declared settings (hwmodel.workloads.settings): the spec class's own settings are the file's
top-level keys and the grid options; each field that is a dataclass of settings (``accuracy`` and the workloads'
tables) is a ``[table]``. Every setting has one validator, used for the TOML key and the option alike; only the
name in the message differs (``key 'accuracy.lr'`` in a file, ``--lr`` on the command line). A setting that
would have no effect (an accuracy option of an area-only sweep, a workload's option without the workload) is an
error, not silence.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from lba_core import ConfigError

from ..workloads import registry
from ..workloads.settings import Setting, declared, tables


def checked(declaration: Setting, value: Any, where: str, base: Path | None = None) -> Any:
    try:
        return declaration.validate(value, base)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def options_of(cls) -> dict[str, tuple[str | None, str, Setting]]:
    """Every option of ``cls`` and its tables: option -> (table or None, field, declaration)."""
    found = {d.option: (None, name, d) for name, d in declared(cls).items() if d.option}
    for table, table_cls in tables(cls).items():
        found.update({d.option: (table, name, d) for name, d in declared(table_cls).items() if d.option})
    return found


def check_option(cls, option: str, value: Any, base: Path | None = None) -> Any:
    """One command-line value checked with the validator of ``cls``'s setting of that option."""
    return checked(options_of(cls)[option][2], value, option, base)


# ------------------------------------------------------------------------------------------------ checks
def check_device(spec, where: str) -> None:
    """``cuda`` on this machine (local workers, or a Ray instance started here) needs a GPU here; a running
    Ray cluster (``ray_address``) places the points on its GPU nodes."""
    if spec.accuracy.enabled and spec.accuracy.device == "cuda" and spec.ray_address is None:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: device 'cuda' needs a GPU on this machine (torch.cuda.is_available() is "
                              "False); use --device cpu, or --executor ray --ray-address of a cluster with GPUs")


def check_executor(spec, where: str) -> None:
    if spec.ray_address is not None and spec.executor != "ray":
        raise ConfigError(f"{where}: a Ray address has no effect without executor 'ray' (--executor ray)")


def check_energy(spec, where: str) -> None:
    from ..synthesis.flows.libraries import LIBRARIES

    if spec.energy and not set(spec.targets) & set(LIBRARIES):
        raise ConfigError(f"{where}: energy per MAC has no effect without a standard-cell target "
                          f"({', '.join(LIBRARIES)}) in --target / targets")


def check_unused(spec, given: dict[str, str], where: str) -> None:
    """Settings that would have no effect are errors; ``given`` maps the table fields set (``minilm.<field>``,
    ``accuracy.<field>``) to the names the user wrote (key or option). Each workload judges its own table;
    the digits-only accuracy settings need a digits model."""
    for workload in registry.WORKLOADS:
        workload.check_settings(spec, given, where)
    digits_only = {f"accuracy.{name}" for name, d in declared(type(spec.accuracy)).items() if d.digits_only}
    named = sorted(name for key, name in given.items() if key in digits_only)
    owner = next((w for w in registry.WORKLOADS if spec.accuracy.model in w.models), None)
    if named and owner is not None and owner.settings_table is not None:
        model = spec.accuracy.model
        raise ConfigError(f"{where}: {', '.join(named)} would have no effect with --model {model} (its settings are "
                          f"the --{owner.name}-* options / the [{owner.name}] table)")


# ------------------------------------------------------------------------------------------------ TOML
def read_toml(path: Path) -> dict[str, Any]:
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


def _load_table(path: Path, table: str, cls, raw: Any):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: key '{table}': expected a table ([{table}]), got {raw!r}")
    settings = declared(cls)
    unknown = sorted(set(raw) - set(settings))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {table}.{f', {table}.'.join(unknown)}; expected some of "
                          f"{', '.join(sorted(settings))}")
    changes = {key: checked(settings[key], value, f"{path}: key '{table}.{key}'", path.parent)
               for key, value in raw.items()}
    if changes.get("enabled") is False and len(changes) > 1:
        ignored = ", ".join(f"{table}.{key}" for key in raw if key != "enabled")
        raise ConfigError(f"{path}: key(s) {ignored} have no effect with {table}.enabled = false")
    return cls(**changes)


def load_spec(cls, path: "str | Path", name: str | None = None):
    """Read a sweep TOML file into a ``cls`` (SweepSpec); every key is checked here, naming the file and the key."""
    path = Path(path)
    raw = read_toml(path)
    grid, nested = declared(cls), tables(cls)
    unknown = sorted(set(raw) - set(grid) - set(nested))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected some of "
                          f"{', '.join(sorted([*grid, *nested]))}")
    changes = {key: checked(grid[key], value, f"{path}: key '{key}'", path.parent) for key, value in raw.items()
               if key not in nested}
    changes.setdefault("name", checked(grid["name"], path.stem, f"{path}: the file name as report name (set key 'name')"))
    spec = cls(**changes)
    check_executor(spec, str(path))
    check_energy(spec, str(path))
    try:
        spec.configs()  # the keys together: chunk sizes that do not fit the array
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    for table, table_cls in nested.items():
        if table in raw:
            spec = replace(spec, **{table: _load_table(path, table, table_cls, raw[table])})
    if "accuracy" in raw:
        check_device(spec, f"{path}: key 'accuracy.device'")
    check_unused(spec, {f"{table}.{key}": f"key '{table}.{key}'" for table in nested
                        if isinstance(raw.get(table), dict) for key in raw[table]}, str(path))
    if name is not None:
        spec = replace(spec, name=checked(grid["name"], name, "--name"))
    return spec


# ------------------------------------------------------------------------------------------------ options
def apply_options(spec, values: dict[str, Any], from_file: bool):
    """``spec`` with command-line values (option name -> raw value, None = not given) applied and checked.

    With a TOML file (``from_file``) the grid comes from the file: grid options other than the run options
    (--name, --jobs and the executor's) are errors. Accuracy options need accuracy to be on."""
    given = {option: value for option, value in values.items() if value is not None}
    options = options_of(type(spec))
    unknown = set(given) - set(options)
    if unknown:
        raise ValueError(f"not sweep options: {sorted(unknown)}")
    if from_file:
        clashing = [option for option in given if options[option][0] is None and not options[option][2].run_option]
        if clashing:
            raise ConfigError(
                f"{', '.join(clashing)} cannot be combined with --config: the file sets the grid "
                f"(edit its keys, or drop --config)"
            )
    changes: dict[str | None, dict[str, Any]] = {}
    for option, value in given.items():
        table, name, declaration = options[option]
        changes.setdefault(table, {})[name] = checked(declaration, value, option)
    spec = replace(spec, **changes.pop(None, {}))
    spec = replace(spec, **{table: replace(getattr(spec, table), **fields) for table, fields in changes.items()})
    spec.configs()  # the options together: chunk sizes that do not fit --array
    check_executor(spec, "--ray-address")
    check_device(spec, "--device")
    check_energy(spec, "--energy")
    if not spec.accuracy.enabled:
        ignored = [o for o in given if options[o][0] == "accuracy" and options[o][1] != "enabled"]
        if ignored:
            reason = "--no-accuracy" if given.get("--accuracy") is False else (
                "accuracy.enabled = false in the file" if from_file else "--acc without --accuracy (an area-only sweep)")
            raise ConfigError(f"{', '.join(ignored)} would have no effect with {reason}; add --accuracy or drop them")
    check_unused(spec, {f"{options[o][0]}.{options[o][1]}": o for o in given if options[o][0] is not None}, "options")
    return spec

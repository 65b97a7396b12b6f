"""Which rows a comparison pairs, decided once for every table (results.csv, minilm.csv, the reports): the
reference accumulator, and the columns that must be equal for two rows to be compared."""

from __future__ import annotations

from typing import Any

from lba_core import FusedAccumulator, MacConfig, parse_acc, standard_name

#: The accumulator every row is compared with (its "fp32 reference row").
REFERENCE_ACC = "fp32"

#: Columns that tell configurations apart besides the accumulator; a comparison pairs rows equal in these.
GROUP_COLUMNS = ("input", "weight", "product", "rounding", "chunk")


def acc_label(acc: Any) -> str:
    """The name a report shows for an accumulator: a number format's standard name (``fp32`` for ``e8m23``), a
    fused accumulator's own spelling (``hopper-fp8+promote128``)."""
    parsed = parse_acc(acc)
    return parsed.name if isinstance(parsed, FusedAccumulator) else standard_name(parsed)


def is_reference(acc: str) -> bool:
    """Whether an accumulator (any spelling: ``e8m23``, ``fp32``) is the reference accumulator."""
    return acc_label(acc) == REFERENCE_ACC


def config_group(cfg: MacConfig) -> tuple[Any, ...]:
    """The values of :data:`GROUP_COLUMNS` for a configuration (its row's grouping key)."""
    return (cfg.input.name, None if cfg.weight is None else cfg.weight.name,
            None if cfg.product is None else cfg.product.name, cfg.rounding, cfg.chunk_size or 0)

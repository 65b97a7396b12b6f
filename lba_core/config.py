"""The one MAC configuration that drives the RTL, the synthesis model and the simulator."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import ConfigError, FormatError
from .formats import FixedFormat, FloatFormat, parse_format
from .fused import FusedAccumulator, check_fused_mac, parse_acc

ROUNDING_MODES = ("rne", "rtz")


@dataclass(frozen=True)
class MacConfig:
    """A quantized multiply-accumulate: ``acc <- R_acc(acc + R_prod(a * b))``, see docs/arithmetic.md.

    ``input`` is the format of both operands unless ``weight`` gives the second operand's own.
    ``product=None`` keeps the exact product. ``chunk_size=None`` accumulates the whole dot product in one
    chain; otherwise chunks of ``chunk_size`` products are accumulated from +0 and their sums are added.
    ``underflow=False`` is a simulation-only mode (no flush to zero and no lower exponent bound) used by the
    first fine-tuning stage. Formats may be given as strings, parsed once by ``lba_core.parse_format``:
    floating point (``"e4m3"``) or fixed point (``"int32"``, ``"int16_sat"``, ``"fx40.24"``, docs §8).
    A fixed-point accumulator takes integer/fixed-point or floating-point operands and no product format;
    integer/fixed-point operands need a fixed-point accumulator. ``acc`` may also be a tensor-core fused
    dot-product accumulator (:class:`lba_core.FusedAccumulator`, a preset such as ``"hopper-fp8"`` or
    ``"hopper-fp8+promote128"``, docs §9); it fixes product, rounding, chunk_size and underflow to their defaults.
    """

    input: FloatFormat | FixedFormat
    acc: FloatFormat | FixedFormat | FusedAccumulator
    product: FloatFormat | None = None
    rounding: str = "rne"
    chunk_size: int | None = None
    underflow: bool = True
    weight: FloatFormat | FixedFormat | None = None

    def __post_init__(self) -> None:
        for name in ("input", "acc", "product", "weight"):
            value = getattr(self, name)
            if value is None and name in ("product", "weight"):
                continue
            try:
                object.__setattr__(self, name, parse_acc(value) if name == "acc" else parse_format(value))
            except FormatError as error:
                raise ConfigError(f"MacConfig.{name}: {error}") from None
        if isinstance(self.acc, FusedAccumulator):
            check_fused_mac(self.acc, {"input": self.input, "weight": self.weight}, self.product,
                            self.rounding.lower() if isinstance(self.rounding, str) else self.rounding,
                            self.chunk_size, self.underflow)
        if isinstance(self.product, FixedFormat):
            raise ConfigError(f"MacConfig.product must be a floating-point format, got {self.product.name}")
        if isinstance(self.acc, FixedFormat):
            if self.product is not None:
                raise ConfigError(
                    f"MacConfig.product must be None with the fixed-point accumulator {self.acc.name}: products are "
                    "rounded straight onto its grid (docs/arithmetic.md §8)"
                )
        elif isinstance(self.acc, FloatFormat):
            for name in ("input", "weight"):
                fmt = getattr(self, name)
                if isinstance(fmt, FixedFormat):
                    raise ConfigError(
                        f"MacConfig.{name}={fmt.name} is an integer/fixed-point operand: it needs an integer or "
                        f"fixed-point accumulator (int32, int16_sat, fx<W>.<F>), got acc={self.acc.name}"
                    )
        if not isinstance(self.rounding, str) or self.rounding.lower() not in ROUNDING_MODES:
            raise ConfigError(f"MacConfig.rounding must be one of {', '.join(ROUNDING_MODES)}, got {self.rounding!r}")
        object.__setattr__(self, "rounding", self.rounding.lower())
        if self.chunk_size is not None:
            if not isinstance(self.chunk_size, int) or isinstance(self.chunk_size, bool) or self.chunk_size < 1:
                raise ConfigError(f"MacConfig.chunk_size must be a positive integer or None, got {self.chunk_size!r}")
        if not isinstance(self.underflow, bool):
            raise ConfigError(f"MacConfig.underflow must be True or False, got {self.underflow!r}")

    @property
    def fixed_acc(self) -> bool:
        """Whether the accumulator is integer/fixed point (docs §8) rather than floating point."""
        return isinstance(self.acc, FixedFormat)

    @property
    def fused_acc(self) -> bool:
        """Whether the accumulator is a tensor-core fused dot-product accumulator (docs §9)."""
        return isinstance(self.acc, FusedAccumulator)

    @property
    def a_format(self) -> FloatFormat:
        """Format of the first operand (activations)."""
        return self.input

    @property
    def b_format(self) -> FloatFormat:
        """Format of the second operand (weights)."""
        return self.weight or self.input

    @property
    def name(self) -> str:
        """Short label such as ``e4m3xe4m3-e4m7-rne``, unique for distinct configurations."""
        parts = [f"{self.a_format.name}x{self.b_format.name}"]
        if self.product is not None:
            parts.append(f"p{self.product.name}")
        parts.append(self.acc.name)
        if not self.fused_acc:  # a fused accumulator's rounding is part of its name
            parts.append(self.rounding)
        if self.chunk_size is not None:
            parts.append(f"c{self.chunk_size}")
        if not self.underflow:
            parts.append("nouf")
        return "-".join(parts)

    def replace(self, **changes: Any) -> "MacConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form; :meth:`from_dict` inverts it."""
        data = asdict(self)
        for name in ("input", "acc", "product", "weight"):
            fmt = getattr(self, name)
            data[name] = None if fmt is None else fmt.to_dict() if isinstance(fmt, FusedAccumulator) else asdict(fmt)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MacConfig":
        fields = dict(data)
        for name in ("input", "acc", "product", "weight"):
            value = fields.get(name)
            if isinstance(value, dict) and "group" in value:
                fields[name] = FusedAccumulator.from_dict(value)
            elif isinstance(value, dict):
                fields[name] = FixedFormat(**value) if "width" in value else FloatFormat(**value)
        return cls(**fields)


def paper_acc_bias(product_bias: int, chunk_size: int | None) -> int:
    """The paper's accumulator bias rule: b_acc = b_prod - 1/2 * log2(chunk size), rounded to an integer.

    A chunk of n products grows like sqrt(n) times a product, so the accumulator's range is shifted up by
    half a binade per doubling of n. ``None`` (one chunk) means no shift.
    """
    if chunk_size is None:
        return product_bias
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    return product_bias - round(0.5 * math.log2(chunk_size))

"""The fused dot-product accumulator of GPU tensor cores (docs/arithmetic.md §9): its parameters and presets.

A :class:`FusedAccumulator` is the ``acc`` of a :class:`lba_core.MacConfig` that adds a group of ``group``
products and the running sum in one fused dot-product-add (FDPA): aligned to the group's largest exponent,
truncated to ``fraction_bits`` fraction bits, summed exactly and rounded once into ``output``. The arithmetic
itself is in :mod:`lba_core.fused_reference`; this module holds the configuration, its spellings and its
validation, defined once.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import ConfigError, FormatError
from .formats import FixedFormat, FloatFormat, parse_format

FUSED_ROUNDINGS = ("rtz", "rne")

#: How far below the output format's smallest normal exponent a zero term sits (Hopper and Blackwell in
#: MMA-Sim: e_zero = -133 with an fp32 output, -21 with an fp16 output; Ampere/Ada would be 6, Volta 5).
E_ZERO_OFFSET = 7

#: The fp32 register a promoted chain result is added into, with one RNE rounding (IEEE binary32).
PROMOTION_FORMAT = FloatFormat(8, 23, subnormals=True)

_PROMOTE = re.compile(r"^(?P<base>.+?)\+promote(?P<n>\d+)$")
_GENERAL = re.compile(
    r"^fdpa(?P<group>\d+)f(?P<frac>\d+)-(?P<out>.+?)-(?P<rnd>rne|rtz)(?P<sat>-sat)?(?:-z(?P<z>-?\d+))?$"
)


_FP8 = ("e4m3", "e5m2")
#: name: (L, F, output, output rounding, inputs) of each preset, as MMA-Sim 2.1.1 builds the unit.
PRESET_PARAMETERS = {
    "hopper-fp8": (32, 13, "e8m13_sub", "rtz", _FP8),  # WGMMA m64nNk32.f32.e4m3/e5m2: RZ-E8M13
    "hopper-fp8-f16": (32, 13, "e5m10_sub", "rne", _FP8),  # WGMMA m64nNk32.f16.e4m3/e5m2: RNE-FP16
    "hopper-fp16": (16, 25, "e8m23_sub", "rtz", ("fp16",)),  # WGMMA m64nNk16.f32.f16.f16: RZ-FP32
    "hopper-bf16": (16, 25, "e8m23_sub", "rtz", ("bf16",)),  # WGMMA m64nNk16.f32.bf16.bf16: RZ-FP32
    "blackwell-fp8": (32, 25, "e8m23_sub", "rtz", _FP8),  # tcgen05.mma kind::f8f6f4 .f32: RZ-FP32
}


def default_e_zero(output: FloatFormat) -> int:
    """The exponent a zero term (product or addend) gets: the output's smallest normal exponent minus 7."""
    return output.emin - E_ZERO_OFFSET


@dataclass(frozen=True)
class FusedAccumulator:
    """One fused dot-product-add unit and its chain, docs/arithmetic.md §9.

    ``group`` (L) products enter each FDPA with the previous result as addend; each term is truncated toward zero
    to ``fraction_bits`` (F) bits below the group's largest exponent; the exact sum is rounded once into
    ``output`` with ``output_rounding``. ``ieee_output`` reads ``output`` as an IEEE 754 interchange format (its
    all-ones exponent code is Inf/NaN, a result out of range is ±Inf, NaN is canonical); otherwise the result is
    rounded by the contract's R_F (§2, saturating). ``promote_every`` (a multiple of ``group``) restarts the chain
    from +0 every that many products and adds its result into an fp32 register with one RNE rounding.
    ``e_zero`` is the exponent of a zero term (default: :func:`default_e_zero`). ``inputs`` lists the operand
    formats the unit takes (``None``: any floating-point format). ``name`` is the spelling, a preset's or
    :attr:`general_name` (which does not carry ``inputs``), with ``+promote<N>``; empty derives it.
    """

    group: int
    fraction_bits: int
    output: FloatFormat
    output_rounding: str = "rtz"
    ieee_output: bool = True
    promote_every: int | None = None
    name: str = ""
    e_zero: int | None = None
    inputs: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for field in ("group", "fraction_bits"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"FusedAccumulator.{field} must be an integer, got {value!r}")
        if self.group < 1:
            raise ConfigError(f"FusedAccumulator.group must be >= 1 (products per fused group), got {self.group}")
        if self.fraction_bits < 0:
            raise ConfigError(f"FusedAccumulator.fraction_bits must be >= 0, got {self.fraction_bits}")
        try:
            output = parse_format(self.output)
        except FormatError as error:
            raise ConfigError(f"FusedAccumulator.output: {error}") from None
        if isinstance(output, FixedFormat):
            raise ConfigError(f"FusedAccumulator.output must be a floating-point format, got {output.name}")
        object.__setattr__(self, "output", output)
        rounding = self.output_rounding.lower() if isinstance(self.output_rounding, str) else self.output_rounding
        if rounding not in FUSED_ROUNDINGS:
            raise ConfigError(
                f"FusedAccumulator.output_rounding must be one of {', '.join(FUSED_ROUNDINGS)}, got {self.output_rounding!r}"
            )
        object.__setattr__(self, "output_rounding", rounding)
        if not isinstance(self.ieee_output, bool):
            raise ConfigError(f"FusedAccumulator.ieee_output must be True or False, got {self.ieee_output!r}")
        if self.ieee_output and not output.subnormals:
            raise ConfigError(
                f"FusedAccumulator.output={output.name} with ieee_output=True must have subnormals, as IEEE formats "
                f"do: write {output.name}_sub"
            )
        if self.promote_every is not None:
            every = self.promote_every
            if not isinstance(every, int) or isinstance(every, bool) or every < 1 or every % self.group:
                raise ConfigError(
                    f"FusedAccumulator.promote_every must be None or a positive multiple of group={self.group}, "
                    f"got {every!r}"
                )
        if self.e_zero is None:
            object.__setattr__(self, "e_zero", default_e_zero(output))
        elif not isinstance(self.e_zero, int) or isinstance(self.e_zero, bool):
            raise ConfigError(f"FusedAccumulator.e_zero must be an integer or None, got {self.e_zero!r}")
        if self.inputs is not None:
            object.__setattr__(self, "inputs", _input_names(self.inputs))
        self._set_name()

    def _set_name(self) -> None:
        if not isinstance(self.name, str):
            raise ConfigError(f"FusedAccumulator.name must be a string, got {self.name!r}")
        match = _PROMOTE.match(self.name.strip().lower())
        base = match.group("base") if match else self.name.strip().lower()
        if not base:
            base = self.general_name
        elif base in PRESET_PARAMETERS and _preset_unit(base) != _unit(self):
            raise ConfigError(
                f"FusedAccumulator.name={base!r} is a preset name but the fields differ from the preset; "
                "leave name empty for a general accumulator"
            )
        elif base not in PRESET_PARAMETERS and base != self.general_name:
            raise ConfigError(
                f"FusedAccumulator.name={base!r} is neither a preset ({', '.join(PRESET_PARAMETERS)}) nor the spelling of "
                f"its fields ({self.general_name}); leave it empty"
            )
        suffix = "" if self.promote_every is None else f"+promote{self.promote_every}"
        object.__setattr__(self, "name", base + suffix)

    @property
    def general_name(self) -> str:
        """The field-based spelling ``fdpa<L>f<F>-<output>-<rounding>[-sat][-z<e_zero>]`` (no promotion)."""
        text = f"fdpa{self.group}f{self.fraction_bits}-{self.output.name}-{self.output_rounding}"
        if not self.ieee_output:
            text += "-sat"
        if self.e_zero != default_e_zero(self.output):
            text += f"-z{self.e_zero}"
        return text

    def __str__(self) -> str:
        return self.name

    def takes(self, fmt: "FloatFormat | FixedFormat") -> bool:
        """Whether an operand format is one this unit takes (same widths and bias; subnormals either way)."""
        if not isinstance(fmt, FloatFormat):
            return False
        if self.inputs is None:
            return True
        return any(_same_widths(fmt, FloatFormat.parse(name)) for name in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form; :meth:`from_dict` inverts it."""
        data = asdict(self)
        data["inputs"] = None if self.inputs is None else list(self.inputs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FusedAccumulator":
        fields = dict(data)
        if isinstance(fields.get("output"), dict):
            fields["output"] = FloatFormat(**fields["output"])
        if fields.get("inputs") is not None:
            fields["inputs"] = tuple(fields["inputs"])
        return cls(**fields)


def _unit(acc: FusedAccumulator) -> tuple:
    """The fields that define one FDPA unit (all but the name and the promotion)."""
    return (acc.group, acc.fraction_bits, acc.output, acc.output_rounding, acc.ieee_output, acc.e_zero, acc.inputs)


def _preset_unit(name: str) -> tuple:
    group, frac, output, rounding, inputs = PRESET_PARAMETERS[name]
    fmt = FloatFormat.parse(output)
    return (group, frac, fmt, rounding, True, default_e_zero(fmt), _input_names(inputs))


def _same_widths(a: FloatFormat, b: FloatFormat) -> bool:
    return (a.exp_bits, a.man_bits, a.bias) == (b.exp_bits, b.man_bits, b.bias)


def _input_names(inputs: Any) -> tuple[str, ...]:
    if isinstance(inputs, str) or not all(isinstance(name, str) for name in inputs):
        raise ConfigError(f"FusedAccumulator.inputs must be None or a tuple of format names, got {inputs!r}")
    names = []
    for name in inputs:
        try:
            fmt = FloatFormat.parse(name)
        except FormatError as error:
            raise ConfigError(f"FusedAccumulator.inputs: {error}") from None
        names.append(fmt.name)
    return tuple(names)


#: The shipped tensor-core accumulators, parameters from MMA-Sim 2.1.1 (``mmasim.nv_ptx.sim``, arXiv 2511.10909),
#: which its authors report bit-identical to the hardware; see docs/arithmetic.md §9 for each row's source.
FUSED_PRESETS: dict[str, FusedAccumulator] = {
    name: FusedAccumulator(group, frac, FloatFormat.parse(output), rounding, True, None, name, None, inputs)
    for name, (group, frac, output, rounding, inputs) in PRESET_PARAMETERS.items()
}


def parse_fused(name: "str | FusedAccumulator") -> FusedAccumulator:
    """A preset name (``hopper-fp8``) or the general spelling (``fdpa32f13-e8m13_sub-rtz``), optionally followed
    by ``+promote<N>`` (``hopper-fp8+promote128``, the DeepSeek-V3 recipe)."""
    if isinstance(name, FusedAccumulator):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"a fused accumulator must be a string such as 'hopper-fp8', got {name!r}")
    text = name.strip().lower()
    match = _PROMOTE.match(text)
    base, every = (match.group("base"), int(match.group("n"))) if match else (text, None)
    if base in FUSED_PRESETS:
        return replace(FUSED_PRESETS[base], promote_every=every, name=text)
    general = _GENERAL.match(base)
    if general is None:
        raise ConfigError(
            f"unknown fused accumulator {name!r}: expected one of {', '.join(FUSED_PRESETS)} or "
            "fdpa<L>f<F>-<output>-<rne|rtz>[-sat][-z<e_zero>], optionally followed by +promote<N>"
        )
    z = general.group("z")
    return FusedAccumulator(
        group=int(general.group("group")),
        fraction_bits=int(general.group("frac")),
        output=general.group("out"),
        output_rounding=general.group("rnd"),
        ieee_output=general.group("sat") is None,
        promote_every=every,
        e_zero=None if z is None else int(z),
    )


def is_fused_spelling(text: Any) -> bool:
    """Whether a string names a fused accumulator (a preset or ``fdpa...``) rather than a number format."""
    if not isinstance(text, str):
        return False
    base = text.strip().lower().split("+", 1)[0]
    return base in FUSED_PRESETS or base.startswith("fdpa")


def parse_acc(spec: "str | FloatFormat | FixedFormat | FusedAccumulator") -> "FloatFormat | FixedFormat | FusedAccumulator":
    """The one parse of an accumulator spelling, wherever one is accepted (MacConfig.acc, --acc, TOML): a fused
    accumulator (``hopper-fp8``, ``hopper-fp8+promote128``, ``fdpa...``) or a number format (``e4m7``, ``int32``).
    Raises FormatError with one line naming what was expected."""
    if isinstance(spec, FusedAccumulator) or is_fused_spelling(spec):
        try:
            return parse_fused(spec)
        except ConfigError as error:
            raise FormatError(str(error)) from None
    try:
        return parse_format(spec)
    except FormatError as error:
        raise FormatError(f"{error}; or a fused accumulator ({', '.join(FUSED_PRESETS)}, docs §9)") from None


def check_fused_mac(acc: FusedAccumulator, operands: dict[str, Any], product: Any, rounding: str,
                    chunk_size: Any, underflow: Any) -> None:
    """The MacConfig fields a fused accumulator fixes: raise ConfigError naming the first one that disagrees.

    ``operands`` maps ``input``/``weight`` to their parsed formats (``weight`` may be None).
    """
    if product is not None:
        raise ConfigError(f"MacConfig.product must be None with the fused accumulator {acc.name}: products are exact")
    if rounding != "rne":
        raise ConfigError(
            f"MacConfig.rounding must stay 'rne' with the fused accumulator {acc.name}: its rounding is "
            f"FusedAccumulator.output_rounding ({acc.output_rounding})"
        )
    if chunk_size is not None:
        raise ConfigError(
            f"MacConfig.chunk_size must be None with the fused accumulator {acc.name}: use promote_every "
            f"({acc.name.split('+')[0]}+promote<N>)"
        )
    if underflow is not True:
        raise ConfigError(f"MacConfig.underflow must be True with the fused accumulator {acc.name}")
    for field, fmt in operands.items():
        if fmt is None:
            continue
        if isinstance(fmt, FixedFormat):
            raise ConfigError(f"MacConfig.{field}={fmt.name} is fixed point; the fused accumulator {acc.name} takes floats")
        if not acc.takes(fmt):
            raise ConfigError(
                f"MacConfig.{field}={fmt.name} is not an input of the fused accumulator {acc.name} "
                f"(it takes {', '.join(acc.inputs or ())})"
            )

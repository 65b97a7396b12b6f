"""R_F on tensors: the contract's rounding (docs/arithmetic.md §2), vectorized and exact on float64.

:func:`quantize_operand` is the GEMM's operand rounding: a compiled binary32 kernel where that is exact,
the float64 tensor path otherwise.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from lba_core import ConfigError, FixedFormat, FloatFormat, ROUNDING_MODES, parse_format

_NUMBA_AVAILABLE = importlib.util.find_spec("numba") is not None
_BINARY32_MIN_NORMAL_EXPONENT = -126
_BINARY64_MIN_NORMAL_EXPONENT = -1022

# IEEE formats a result may be handed back in, as (man_bits, emax, smallest quantum exponent).
_TORCH_DTYPE_LIMITS = {
    torch.float64: (52, 1023, -1074),
    torch.float32: (23, 127, -149),
    torch.bfloat16: (7, 127, -133),
    torch.float16: (10, 15, -24),
}


def scale_by_power_of_two(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """x * 2^exponent, exact; split in two so that 2^exponent itself never overflows binary64."""
    half = torch.div(exponent, 2, rounding_mode="floor")
    return torch.ldexp(torch.ldexp(x, half), exponent - half)


def round_tensor(
    x: torch.Tensor, fmt: FloatFormat, rounding: str = "rne", underflow: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R_F on a float64 tensor: returns (values, overflow mask, underflow mask).

    Exact because every intermediate is a power-of-two scaling or an integer below 2^53 held in binary64.
    """
    if rounding not in ROUNDING_MODES:
        raise ConfigError(f"rounding must be one of {', '.join(ROUNDING_MODES)}, got {rounding!r}")
    if isinstance(fmt, FixedFormat):
        return round_to_grid(x, fmt, rounding)
    if _NUMBA_AVAILABLE and x.device.type == "cpu" and x.dtype == torch.float64:
        compiled = _round_tensor_compiled(x, fmt, rounding, underflow)
        if compiled is not None:
            return compiled
    magnitude = x.abs()
    _, frexp_exponent = torch.frexp(magnitude)
    exponent = frexp_exponent.to(torch.int64) - 1  # floor(log2 |x|) for x != 0
    if underflow and fmt.subnormals:
        exponent = exponent.clamp(min=fmt.emin)
    quantum_exponent = exponent - fmt.man_bits
    steps = scale_by_power_of_two(magnitude, -quantum_exponent)
    steps = torch.round(steps) if rounding == "rne" else torch.floor(steps)  # torch.round ties to even
    rounded = scale_by_power_of_two(steps, quantum_exponent)
    max_value = float(fmt.max_value)
    overflow = rounded > max_value
    rounded = torch.where(overflow, torch.full_like(rounded, max_value), rounded)
    if underflow and not fmt.subnormals:
        rounded = torch.where(rounded < float(fmt.min_normal), torch.zeros_like(rounded), rounded)
    underflowed = (rounded == 0) & (magnitude != 0)
    values = torch.where(rounded == 0, torch.zeros_like(rounded), torch.copysign(rounded, x))  # +0, never -0
    return values, overflow, underflowed


def round_to_grid(x: torch.Tensor, fmt: FixedFormat, rounding: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Operand conversion into a fixed-point format (docs §8): round x * 2^F to an integer, saturate.

    Exact on float64: every grid value below 2^53 is a binary64 integer, and scaling by 2^F (0 <= F <= 1022,
    FixedFormat's range) is one multiplication by a normal power of two: exact upward, and downward too, since
    a non-zero grid value times 2^-F is at least 2^-1022. (A multiplication, not ldexp by a tensor of F, which
    was 70 % of an int8 x int8 -> int32 GEMM call.)
    """
    scale = 2.0**fmt.frac_bits
    scaled = x * scale
    steps = torch.round(scaled) if rounding == "rne" else torch.trunc(scaled)
    overflow = (steps > fmt.max_int) | (steps < fmt.min_int)
    steps = steps.clamp(fmt.min_int, fmt.max_int)
    underflowed = (steps == 0) & (x != 0)
    values = steps * (1.0 / scale) + 0.0
    return values, overflow, underflowed


def _round_tensor_compiled(x: torch.Tensor, fmt: FloatFormat, rounding: str, underflow: bool):
    """round_tensor in one pass of the Numba kernel's exact roundings (numba_gemm.round_array); None if x has NaN.

    The bit-pattern rounding where its preconditions hold (docs/simulator.md), the general exact rounding for
    the rest; both are R_F, as the tensor path below is.
    """
    from .kernels import numba_gemm
    from .kernels.plan import FAST_MAX_MAN_BITS, round_spec_of

    spec = round_spec_of(fmt, rounding, underflow)
    bit_pattern = fmt.man_bits <= FAST_MAX_MAN_BITS and (
        not spec.clamp or fmt.emin - fmt.man_bits >= _BINARY64_MIN_NORMAL_EXPONENT)
    flat = x.detach().contiguous().reshape(-1)
    values = torch.empty_like(flat)
    overflow = torch.empty(flat.shape, dtype=torch.bool)
    underflowed = torch.empty(flat.shape, dtype=torch.bool)
    if numba_gemm.round_array(flat.numpy(), spec, bit_pattern, values.numpy(), overflow.numpy(), underflowed.numpy()):
        return None
    return values.reshape(x.shape), overflow.reshape(x.shape), underflowed.reshape(x.shape)


def fits_dtype(fmt: "FloatFormat | FixedFormat", dtype: torch.dtype, underflow: bool = True) -> bool:
    """Whether every value R_F can produce for fmt is exact in ``dtype``."""
    if dtype not in _TORCH_DTYPE_LIMITS:
        return False
    man_bits, emax, min_quantum = _TORCH_DTYPE_LIMITS[dtype]
    if isinstance(fmt, FixedFormat):
        return fmt.width - 1 <= man_bits + 1 and -fmt.frac_bits >= min_quantum and fmt.width - 1 - fmt.frac_bits <= emax
    lowest_quantum = fmt.emin - fmt.man_bits if (fmt.subnormals or not underflow) else fmt.emin
    return fmt.man_bits <= man_bits and fmt.emax <= emax and (not underflow or lowest_quantum >= min_quantum)


def quantize(x, fmt, rounding: str = "rne", underflow: bool = True):
    """Round a tensor, array or number into ``fmt`` with the contract's R_F (saturating, +0 for zero).

    Tensor in, tensor out (same dtype when the format fits in it, float64 otherwise, same device); NumPy
    array in, NumPy array out; Python number in, float out. +-Inf saturates to +-max; NaN raises ValueError.
    Autograd is not tracked through this function: use the layers' quantizers for an STE.
    """
    fmt = parse_format(fmt)
    if isinstance(x, torch.Tensor):
        return _quantize_tensor(x, fmt, rounding, underflow)
    if isinstance(x, np.ndarray):
        return _quantize_tensor(torch.from_numpy(np.asarray(x, dtype=np.float64)), fmt, rounding, underflow).numpy()
    if isinstance(x, (int, float, np.floating, np.integer)):
        return float(_quantize_tensor(torch.tensor(float(x), dtype=torch.float64), fmt, rounding, underflow))
    raise TypeError(f"quantize expects a torch.Tensor, a numpy.ndarray or a number, got {type(x).__name__}")


def _quantize_tensor(x: torch.Tensor, fmt: FloatFormat, rounding: str, underflow: bool) -> torch.Tensor:
    with torch.no_grad():
        wide = x.detach().to(torch.float64)
        if torch.isnan(wide).any():
            raise ValueError(nan_message(fmt))
        if isinstance(fmt, FloatFormat):  # a fixed-point conversion saturates +-Inf by itself
            wide = torch.where(torch.isinf(wide), torch.copysign(torch.full_like(wide, float(fmt.max_value)), wide), wide)
        values, _, _ = round_tensor(wide, fmt, rounding, underflow)
    out_dtype = x.dtype if x.is_floating_point() and fits_dtype(fmt, x.dtype, underflow) else torch.float64
    return values.to(out_dtype)




def binary32_quantizer_holds(fmt: "FloatFormat | FixedFormat") -> bool:
    """Whether the binary32 bit-pattern rounding of ``lba_train.kernels.numba_binary32`` is R_F for fmt.

    fmt's values must be binary32 numbers with at most 21 fraction bits (the rounding adds half a unit
    below bit 23 - man_bits), and its min_normal a normal binary32 number above 2^-126: binary32 subnormal
    inputs, whose bit pattern has a fixed quantum, then lie below min_normal and go through the fixed
    subnormal quantum (subnormals) or round to at most 2^-126 < min_normal and flush (no subnormals).
    """
    return (
        isinstance(fmt, FloatFormat)
        and fits_dtype(fmt, torch.float32)
        and fmt.man_bits <= 21
        and fmt.emin > _BINARY32_MIN_NORMAL_EXPONENT
        and fmt.emax < _TORCH_DTYPE_LIMITS[torch.float32][1]
    )


def nan_message(fmt: "FloatFormat | FixedFormat") -> str:
    """The one refusal of a NaN operand (the formats have no NaN code)."""
    return f"cannot quantize NaN into {fmt.name}: the formats have no NaN code"


def quantize_binary32(x: torch.Tensor, fmt: "FloatFormat | FixedFormat") -> torch.Tensor | None:
    """R_F (RNE, underflow on, +-Inf to +-max) of a CPU float32 (or narrower float) tensor in one pass of the
    compiled binary32 kernel, as float32; None where that is not R_F (:func:`binary32_quantizer_holds`) or
    Numba is missing. The pass also counts NaN: ValueError(:func:`nan_message`) if there is one.
    """
    narrow = x.dtype in (torch.float32, torch.float16, torch.bfloat16)  # exact in binary32
    if not (_NUMBA_AVAILABLE and x.device.type == "cpu" and narrow and binary32_quantizer_holds(fmt)):
        return None
    from .kernels import numba_binary32
    from .kernels.plan import round_spec_of

    values = x.detach().to(torch.float32).contiguous()
    out = torch.empty_like(values)
    spec = numba_binary32.binary32_spec(round_spec_of(fmt, "rne", True))
    if numba_binary32.quantize_into(values.numpy(), out.numpy(), spec):
        raise ValueError(nan_message(fmt))
    return out


def quantize_operand(x: torch.Tensor, fmt: "FloatFormat | FixedFormat", caller: str) -> torch.Tensor:
    """R_F (RNE, underflow on, +-Inf to +-max) of a GEMM operand: float32 where exact, float64 otherwise.

    :func:`quantize_binary32` where it applies; everything else takes :func:`quantize`'s float64 path. NaN
    raises ValueError naming ``caller``.
    """
    with torch.no_grad():
        x = x.detach()
        try:
            fast = quantize_binary32(x, fmt)
        except ValueError as error:
            raise ValueError(f"{caller}: {error}") from None
        return fast if fast is not None else quantize(x.to(torch.float64), fmt)

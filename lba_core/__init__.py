"""lba_core: formats, the MAC configuration and the exact reference of the arithmetic contract.

The bottom layer of the toolkit: pure Python, no torch, no amaranth. ``rtl`` and ``lba_train`` build on it;
``hwmodel`` builds on all three. The contract itself is written in docs/arithmetic.md.
"""

from .config import ROUNDING_MODES, MacConfig, paper_acc_bias
from .datapath import DatapathPlan, FixedDatapathPlan, derive_datapath, derive_fixed_datapath
from .errors import ConfigError, FormatError
from .fused import FUSED_PRESETS, FusedAccumulator, parse_acc, parse_fused
from .fused_reference import fdpa, fused_dot, fused_matmul_reference
from .formats import OVERFLOW_MODES, FixedFormat, FloatFormat, floor_log2, parse_format, standard_name
from .reference import (
    DotResult,
    Rounded,
    Step,
    accumulate,
    dot,
    fmaq,
    product,
    quantize_value,
    round_to_fixed,
    round_to_format,
)

__all__ = [
    "ROUNDING_MODES",
    "ConfigError",
    "DatapathPlan",
    "FixedDatapathPlan",
    "DotResult",
    "FixedFormat",
    "FloatFormat",
    "FormatError",
    "FUSED_PRESETS",
    "FusedAccumulator",
    "MacConfig",
    "OVERFLOW_MODES",
    "Rounded",
    "Step",
    "accumulate",
    "derive_datapath",
    "derive_fixed_datapath",
    "dot",
    "floor_log2",
    "fdpa",
    "fmaq",
    "fused_dot",
    "fused_matmul_reference",
    "paper_acc_bias",
    "parse_acc",
    "parse_fused",
    "parse_format",
    "standard_name",
    "product",
    "quantize_value",
    "round_to_fixed",
    "round_to_format",
]

"""What synthesis can handle, checked before any work: the PE array's size and the MAC datapath's width.

Both limits exist because the work grows without bound and without a word otherwise (issue 27): a
``--array 1000x1000`` export grew a worker to 12-18 GB until the kernel killed it, and ``--in fp32 --acc
int16_sat`` (a 556-bit grid aligner) sat in Yosys for more than 10 minutes. Light on purpose (lba_core only):
the command line calls these while parsing, before Amaranth, Yosys or torch load.
"""

from __future__ import annotations

from lba_core import ConfigError, MacConfig
from lba_core.datapath import derive_fixed_datapath

#: Largest PE array side (rows or columns). Measured: 16x16 arrays (reports/pe_array/share.md); each tile's
#: Verilog and the output buffer (ROWS entries per column by default) grow with the side.
MAX_ARRAY_SIDE = 64

#: Widest grid aligner of an integer/fixed-point accumulator's datapath (FixedDatapathPlan.exact_bits: the
#: exact product's magnitude in units of the grid). The shipped rows need at most 82 (fp16 inputs into int32);
#: floating-point inputs with a wide exponent range into an integer accumulator (fp32 or bf16 into int16/int32:
#: 524-556 bits) give barrel shifters Yosys does not finish in minutes.
MAX_FIXED_ALIGN_BITS = 128


def check_array_size(rows: int, cols: int, option: str = "--array") -> None:
    """ConfigError naming ``option``, the limit and why, for an array synthesis cannot handle."""
    if max(rows, cols) > MAX_ARRAY_SIDE:
        raise ConfigError(
            f"{option} {rows}x{cols}: at most {MAX_ARRAY_SIDE} rows and {MAX_ARRAY_SIDE} columns (the export and "
            f"synthesis of each tile grow with the array; {rows}x{cols} would exhaust memory)")


def check_datapath_width(cfg: MacConfig) -> None:
    """ConfigError with the limit and the reason when ``cfg``'s datapath is too wide to synthesize."""
    if not cfg.fixed_acc:
        return
    plan = derive_fixed_datapath(cfg)
    if plan.exact_bits > MAX_FIXED_ALIGN_BITS:
        raise ConfigError(
            f"--in {cfg.input.name} --acc {cfg.acc.name}: the fixed-point datapath's aligner would be "
            f"{plan.exact_bits} bits wide, more than synthesis handles ({MAX_FIXED_ALIGN_BITS}); use inputs "
            "with a narrower exponent range (e.g. e4m3, fp16) or a floating-point accumulator")

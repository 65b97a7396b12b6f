"""rtl: Amaranth generator of low-bit-width-accumulator MAC circuits, bit-exact to docs/arithmetic.md.

``FMAq`` is one combinational MAC step, ``ChunkAdder`` the chunk adder, ``MAC`` the sequential unit; all are
parameterized by an ``lba_core.MacConfig``. ``export_verilog`` writes their Verilog for synthesis and
simulation. Depends on lba_core and amaranth only. See docs/rtl.md.
"""

from .export import export_verilog
from .fmaq import ChunkAdder, FMAq
from .mac import MAC, Register
from .plan import DatapathPlan, check_config, plan_datapath

BLOCK_NAMES = (
    "multiplier",
    "product_rounder",
    "aligner",
    "adder",
    "normalizer",
    "rounder",
    "range_flags",
    "register",
    "chunk_adder",
)

__all__ = [
    "BLOCK_NAMES",
    "ChunkAdder",
    "DatapathPlan",
    "FMAq",
    "MAC",
    "Register",
    "check_config",
    "export_verilog",
    "plan_datapath",
]

"""rtl: Amaranth generator of low-bit-width-accumulator MAC circuits, bit-exact to docs/arithmetic.md.

``FMAq`` is one combinational MAC step, ``ChunkAdder`` the chunk adder, ``MAC`` the sequential unit (``PipelinedMAC`` with product registers before its loop), ``PEArray`` a
weight-stationary array of them (docs/pe_array.md); all are
parameterized by an ``lba_core.MacConfig``. ``export_verilog`` writes their Verilog for synthesis and
simulation. Depends on lba_core and amaranth only. See docs/rtl.md.
"""

from .export import export_verilog
from .fmaq import ChunkAdder, FMAq
from .hierarchy import BLOCK_NAMES, BLOCKS, module_blocks
from .intmac import FixedFMAq, FixedMAC, check_fixed_config
from .mac import MAC, Register
from .pe_array import PEArray, export_pe_array_verilog
from .pipeline import PIPELINE_STAGES, PipelinedMAC, check_pipeline
from .plan import check_config, plan_datapath

__all__ = [
    "BLOCKS",
    "BLOCK_NAMES",
    "ChunkAdder",
    "FMAq",
    "FixedFMAq",
    "FixedMAC",
    "MAC",
    "PEArray",
    "PIPELINE_STAGES",
    "PipelinedMAC",
    "Register",
    "check_config",
    "check_fixed_config",
    "check_pipeline",
    "export_pe_array_verilog",
    "export_verilog",
    "module_blocks",
    "plan_datapath",
]

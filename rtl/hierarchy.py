"""The blocks of a circuit: which block each module of the hierarchical Verilog implements.

The per-block area report (hwmodel.synthesis.synth) files every synthesized module under the block this map names, and
refuses a module the map does not know, so a block can neither be lost nor double-counted.
"""

from __future__ import annotations

from amaranth.hdl import Fragment
from amaranth.lib import wiring

from .blocks import Adder, Aligner, Multiplier, Normalizer, ProductRounder, RangeFlags, Rounder, block_name
from .fmaq import ChunkAdder
from .intmac import FIXED_BLOCKS
from .mac import Register

#: Every block class of the floating-point MAC, in datapath order (the order of the per-block report).
FLOAT_BLOCKS = (Multiplier, ProductRounder, Aligner, Adder, Normalizer, Rounder, RangeFlags, Register, ChunkAdder)
FLOAT_BLOCK_NAMES = tuple(block_name(block) for block in FLOAT_BLOCKS)
#: ... and then those of the integer/fixed-point MAC (rtl.intmac).
BLOCKS = (*FLOAT_BLOCKS, *FIXED_BLOCKS)
BLOCK_NAMES = tuple(block_name(block) for block in BLOCKS)


def block_of_class(origin: type, name: str) -> str | None:
    """The block a sub-module is by its class (BLOCKS); ``name`` is its sub-module name."""
    return block_name(origin) if origin in BLOCKS else None


def module_blocks(component: wiring.Component, top: str, block_of=block_of_class) -> dict[str, str | None]:
    """``{module name: block name}`` for every module of ``component`` exported as ``top`` with
    ``hierarchical=True`` (module names ``<top>_<path>``, as :func:`rtl.export.plain_module_names` writes them).

    A module belongs to the outermost block on its path (the chunk adder's own aligner is part of
    ``chunk_adder``); the top and composite circuits that are no block (the MAC's ``fmaq``) map to None.
    ``block_of(class, sub-module name)`` names a sub-module's block (by class unless told otherwise: the PE
    array tells its registers apart by role, rtl.pe_array.array_block_of).
    """
    blocks: dict[str, str | None] = {top: None}

    def visit(fragment: Fragment, path: list[str], block: str | None) -> None:
        for child, name, _ in fragment.subfragments:
            child_block = block or block_of(type(child.origins[0]), name)
            blocks["_".join([top, *path, name])] = child_block
            visit(child, [*path, name], child_block)

    visit(Fragment.get(component, None), [], None)
    return blocks

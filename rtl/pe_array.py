"""A weight-stationary array of processing elements: chunked accumulation as an accelerator tile builds it.

``PEArray(rows, cols, cfg)`` computes Y = X @ W with the K dimension cut into tiles of ``rows`` products:
PE (i, j) holds weight W[t·rows + i, j] of the current K-tile t, activations enter row i skewed by i cycles
and move one PE to the right per cycle, and partial sums move one PE down per cycle in the accumulator
format (one FMAq per PE, every hop registered). Below column j the chunk adder folds each K-tile's partial
sum into the output buffer, one running total per output row: exactly the chunked dot product of
docs/arithmetic.md §5 with chunk_size = rows. docs/pe_array.md gives the timing, the interface and the
area accounting.
"""

from __future__ import annotations

import json
from pathlib import Path

from amaranth import Cat, Module, Mux, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lba_core import ConfigError, DatapathPlan, MacConfig

from .blocks import EVENT_FIELDS, event_ports, gated_events
from .export import write_top
from .fmaq import ChunkAdder, ConfiguredComponent, FMAq
from .mac import Register
from .plan import check_float_component, component_plan

DATAFLOWS = ("weight-stationary",)

#: Area classes of the array's sub-modules (docs/pe_array.md): each Amaranth sub-module name maps to one.
#: The FMAq blocks keep their own names; ``ACCUMULATOR_BLOCKS`` are the "everything after the product" part.
ACCUMULATOR_BLOCKS = (
    "aligner",
    "adder",
    "normalizer",
    "rounder",
    "range_flags",
    "psum_register",
    "chunk_adder",
    "output_buffer",
)
ARRAY_BLOCKS = (
    "multiplier",
    "product_rounder",
    *ACCUMULATOR_BLOCKS,
    "weight_register",
    "activation_register",
    "skew_register",
    "control_register",
)


def array_block_of(origin: type, name: str) -> str | None:
    """The ARRAY_BLOCKS block a sub-module is, by its name with trailing indices dropped
    (``skew_register_2_0`` -> skew_register; ``fmaq`` and ``total_3`` are no block): the array's registers are
    all Register blocks, told apart by role. For rtl.module_blocks(tile, top, array_block_of)."""
    parts = name.split("_")
    while parts and parts[-1].isdigit():
        parts.pop()
    stem = "_".join(parts)
    return stem if stem in ARRAY_BLOCKS else None


def check_array(
    rows: int, cols: int, cfg: MacConfig, dataflow: str, depth: int, plan: DatapathPlan | None = None
) -> None:
    for name, value in (("rows", rows), ("cols", cols), ("depth", depth)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"PEArray {name} must be a positive integer, got {value!r}")
    if dataflow not in DATAFLOWS:
        raise ConfigError(f"PEArray dataflow must be one of {', '.join(DATAFLOWS)}, got {dataflow!r}")
    check_float_component(cfg, plan)
    if cfg.chunk_size not in (None, rows):
        raise ConfigError(
            f"{cfg.name}: a {rows}-row array accumulates chunks of {rows} products, but the configuration "
            f"says chunk_size={cfg.chunk_size} (use chunk_size={rows} or leave it unset)"
        )


class ProcessingElement(ConfiguredComponent):
    """One PE: a weight register, an FMAq, and the registers that pass the activation right and the
    partial sum down. The step's events are gated by its valid bit (a bubble raises nothing)."""

    def __init__(self, cfg: MacConfig, *, plan: DatapathPlan | None = None):
        self.cfg = cfg
        self.fmaq = FMAq(cfg, plan=plan)
        super().__init__(
            {
                "x_in": In(cfg.a_format.width),
                "valid_in": In(1),
                "psum_in": In(cfg.acc.width),
                "weight_load": In(1),
                "weight_in": In(cfg.b_format.width),
                "x_out": Out(cfg.a_format.width),
                "valid_out": Out(1),
                "psum_out": Out(cfg.acc.width),
                **event_ports(),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.fmaq = fmaq = self.fmaq
        m.submodules.weight_register = weight = Register(cfg.b_format.width)
        m.submodules.activation_register = activation = Register(cfg.a_format.width + 1)
        m.submodules.psum_register = psum = Register(cfg.acc.width)
        m.d.comb += [
            weight.d.eq(self.weight_in),
            weight.en.eq(self.weight_load),
            fmaq.a.eq(self.x_in),
            fmaq.b.eq(weight.q),
            fmaq.acc_in.eq(self.psum_in),
            activation.d.eq(Cat(self.x_in, self.valid_in)),
            activation.en.eq(1),
            self.x_out.eq(activation.q[: cfg.a_format.width]),
            self.valid_out.eq(activation.q[-1]),
            psum.d.eq(fmaq.acc_out),
            psum.en.eq(self.valid_in),
            self.psum_out.eq(psum.q),
            *gated_events(self, fmaq, self.valid_in),
        ]
        return m


class OutputColumn(ConfiguredComponent):
    """Below one column: the chunk adder and the output buffer (``depth`` running totals, one per output row).

    A valid partial sum for row ``row`` replaces total[row] by R_acc(total[row] + partial); ``clear`` sets
    every total to +0 (and wins over a fold in the same cycle). ``read_row`` selects the total on ``total``.
    """

    def __init__(self, cfg: MacConfig, depth: int, *, plan: DatapathPlan | None = None):
        self.cfg, self.depth = cfg, depth
        self.chunk_adder = ChunkAdder(cfg, plan=plan)
        address = address_bits(depth)
        super().__init__(
            {
                "partial": In(cfg.acc.width),
                "valid": In(1),
                "row": In(address),
                "clear": In(1),
                "read_row": In(address),
                "total": Out(cfg.acc.width),
                **event_ports(),
            }
        )

    def elaborate(self, platform):
        m = Module()
        width = self.cfg.acc.width
        m.submodules.chunk_adder = adder = self.chunk_adder
        m.submodules.output_buffer = buffer = OutputBuffer(width, self.depth)
        m.d.comb += [
            buffer.read_row.eq(self.row),
            buffer.read_row_b.eq(self.read_row),
            adder.acc_in.eq(buffer.read_data),
            adder.addend.eq(self.partial),
            buffer.write_row.eq(self.row),
            buffer.write_data.eq(adder.acc_out),
            buffer.write.eq(self.valid),
            buffer.clear.eq(self.clear),
            self.total.eq(buffer.read_data_b),
            *gated_events(self, adder, self.valid),
        ]
        return m


class OutputBuffer(wiring.Component):
    """``depth`` accumulator registers with one write port, two read ports and a clear-all."""

    def __init__(self, width: int, depth: int):
        self.width, self.depth = width, depth
        address = address_bits(depth)
        super().__init__(
            {
                "read_row": In(address),
                "read_data": Out(width),
                "read_row_b": In(address),
                "read_data_b": Out(width),
                "write_row": In(address),
                "write_data": In(width),
                "write": In(1),
                "clear": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        totals = []
        for row in range(self.depth):
            register = Register(self.width)
            m.submodules[f"total_{row}"] = register
            m.d.comb += [
                register.d.eq(Mux(self.clear, 0, self.write_data)),
                register.en.eq(self.clear | (self.write & (self.write_row == row))),
            ]
            totals.append(register.q)
        m.d.comb += [self.read_data.eq(select(totals, self.read_row)), self.read_data_b.eq(select(totals, self.read_row_b))]
        return m


def select(values: list, index):
    """values[index] as a mux tree (values past the end read as 0)."""
    result = 0
    for position, value in enumerate(values):
        result = Mux(index == position, value, result)
    return result


class Feeder(wiring.Component):
    """The array's left edge: the skew registers that delay row i's activations (and valid bit) by i cycles,
    the weight-row decoder, and the control registers that carry each activation's output-buffer row beside
    the wavefront, so it reaches the bottom of column j rows + j cycles after entering."""

    def __init__(self, rows: int, cols: int, a_width: int, address_bits: int):
        self.rows, self.cols, self.a_width, self.address_bits = rows, cols, a_width, address_bits
        super().__init__(
            {
                "x": In(data.ArrayLayout(a_width, rows)),
                "x_valid": In(1),
                "x_row": In(address_bits),
                "weight_valid": In(1),
                "weight_row": In(max(1, (rows - 1).bit_length())),
                "row_x": Out(data.ArrayLayout(a_width, rows)),
                "row_valid": Out(rows),
                "weight_load": Out(rows),
                "bottom_row": Out(data.ArrayLayout(address_bits, cols)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        for i in range(self.rows):
            value = Cat(self.x[i], self.x_valid)
            for stage in range(i):
                register = Register(self.a_width + 1)
                m.submodules[f"skew_register_{i}_{stage}"] = register
                m.d.comb += [register.d.eq(value), register.en.eq(1)]
                value = register.q
            m.d.comb += [
                self.row_x[i].eq(value[: self.a_width]),
                self.row_valid[i].eq(value[-1]),
                self.weight_load[i].eq(self.weight_valid & (self.weight_row == i)),
            ]
        row_address = self.x_row
        for stage in range(self.rows + self.cols - 1):
            register = Register(self.address_bits)
            m.submodules[f"control_register_{stage}"] = register
            m.d.comb += [register.d.eq(row_address), register.en.eq(1)]
            row_address = register.q
            if stage >= self.rows - 1:
                m.d.comb += self.bottom_row[stage - self.rows + 1].eq(row_address)
        return m


def address_bits(depth: int) -> int:
    return max(1, (depth - 1).bit_length())


def buffer_depth(rows: int, depth: int | None) -> int:
    """Output-buffer rows per column: one running total per output row of a pass (default: rows)."""
    return rows if depth is None else depth


def array_latency(rows: int, cols: int) -> int:
    """Clock edges from an activation entering (x_valid) to its fold into the last column's buffer."""
    return rows + cols


#: The array's tiles: every gate of a PEArray lies in one of them (docs/pe_array.md, "Array area").
TILE_NAMES = ("feeder", "pe", "column")


def tile_counts(rows: int, cols: int) -> dict[str, int]:
    return {"feeder": 1, "pe": rows * cols, "column": cols}


def array_tile(
    tile: str, rows: int, cols: int, cfg: MacConfig, depth: int, plan: DatapathPlan | None = None
) -> wiring.Component:
    """A fresh tile of a rows x cols array (for synthesis one tile at a time); ``plan``: the array's datapath,
    derived once for all its tiles (a tile synthesized alone derives its own)."""
    if tile == "feeder":
        return Feeder(rows, cols, cfg.a_format.width, address_bits(depth))
    if tile == "pe":
        return ProcessingElement(cfg, plan=plan)
    if tile == "column":
        return OutputColumn(cfg, depth, plan=plan)
    raise ValueError(f"unknown array tile {tile!r}; choose from {', '.join(TILE_NAMES)}")


class PEArray(ConfiguredComponent):
    """A rows x cols weight-stationary PE array with chunk adders and output buffers (docs/pe_array.md).

    Ports (valid-only streaming, no back-pressure; clk and rst from the sync domain):

    - ``weight_valid``, ``weight_row``, ``weight`` (cols codes): write row ``weight_row`` of the weights;
    - ``x_valid``, ``x`` (rows codes: the K-tile slice of one input row), ``x_row`` (its output-buffer row);
    - ``clear``: set every running total to +0; ``read_row``, ``y`` (cols totals of that buffer row);
    - ``overflow``, ``underflow``, ``swamp``: one bit per step in this cycle, PE (i, j) at bit i·cols + j and
      the chunk adder of column j at bit rows·cols + j.

    The array is built from three tiles, all its logic inside them: ``feeder`` (skew and control
    registers), ``pe_<i>_<j>`` (ProcessingElement) and ``column_<j>`` (OutputColumn).
    """

    def __new__(
        cls, rows: int, cols: int, cfg: MacConfig, dataflow: str = "weight-stationary", *, depth=None, plan=None
    ):
        check_array(rows, cols, cfg, dataflow, buffer_depth(rows, depth), plan)
        return wiring.Component.__new__(cls)

    def __init__(
        self,
        rows: int,
        cols: int,
        cfg: MacConfig,
        dataflow: str = "weight-stationary",
        *,
        depth=None,
        plan: DatapathPlan | None = None,
    ):
        self.rows, self.cols, self.cfg, self.dataflow = rows, cols, cfg, dataflow
        self.depth = buffer_depth(rows, depth)
        self.plan = component_plan(cfg, plan)  # one derivation for every PE and column
        self.feeder = array_tile("feeder", rows, cols, cfg, self.depth)
        self.pes = [[array_tile("pe", rows, cols, cfg, self.depth, self.plan) for _ in range(cols)] for _ in range(rows)]
        self.columns = [array_tile("column", rows, cols, cfg, self.depth, self.plan) for _ in range(cols)]
        steps = (rows + 1) * cols
        super().__init__(
            {
                "weight_valid": In(1),
                "weight_row": In(max(1, (rows - 1).bit_length())),
                "weight": In(data.ArrayLayout(cfg.b_format.width, cols)),
                "x_valid": In(1),
                "x": In(data.ArrayLayout(cfg.a_format.width, rows)),
                "x_row": In(address_bits(self.depth)),
                "clear": In(1),
                "read_row": In(address_bits(self.depth)),
                "y": Out(data.ArrayLayout(cfg.acc.width, cols)),
                "overflow": Out(steps),
                "underflow": Out(steps),
                "swamp": Out(steps),
            }
        )

    @property
    def latency(self) -> int:
        return array_latency(self.rows, self.cols)

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        m.submodules.feeder = feeder = self.feeder
        m.d.comb += [
            feeder.x.eq(self.x),
            feeder.x_valid.eq(self.x_valid),
            feeder.x_row.eq(self.x_row),
            feeder.weight_valid.eq(self.weight_valid),
            feeder.weight_row.eq(self.weight_row),
        ]
        events = {name: [] for name in EVENT_FIELDS}
        for i, pe_row in enumerate(self.pes):
            for j, pe in enumerate(pe_row):
                m.submodules[f"pe_{i}_{j}"] = pe
                if j == 0:
                    m.d.comb += [pe.x_in.eq(feeder.row_x[i]), pe.valid_in.eq(feeder.row_valid[i])]
                else:
                    m.d.comb += [pe.x_in.eq(pe_row[j - 1].x_out), pe.valid_in.eq(pe_row[j - 1].valid_out)]
                m.d.comb += [
                    pe.psum_in.eq(0 if i == 0 else self.pes[i - 1][j].psum_out),  # each chunk starts at +0
                    pe.weight_in.eq(self.weight[j]),
                    pe.weight_load.eq(feeder.weight_load[i]),
                ]
                for name in events:
                    events[name].append(getattr(pe, name))
        for j, column in enumerate(self.columns):
            m.submodules[f"column_{j}"] = column
            bottom = self.pes[rows - 1][j]
            m.d.comb += [
                column.partial.eq(bottom.psum_out),
                column.valid.eq(bottom.valid_out),
                column.row.eq(feeder.bottom_row[j]),
                column.clear.eq(self.clear),
                column.read_row.eq(self.read_row),
                self.y[j].eq(column.total),
            ]
            for name in events:
                events[name].append(getattr(column, name))
        for name, bits in events.items():
            m.d.comb += getattr(self, name).eq(Cat(*bits))
        return m


def export_pe_array_verilog(
    rows: int, cols: int, cfg: MacConfig, out_dir, *, depth=None, hierarchical: bool = False
) -> dict[str, Path]:
    """Write ``pe_array.v`` (top ``pe_array``) and its JSON sidecar ``pe_array.json`` into out_dir.

    The sidecar holds the configuration (``cfg.to_dict()``), the array (rows, cols, depth, dataflow,
    latency), every top port with its width and the bit layout of the packed ports.
    """
    array = PEArray(rows, cols, cfg, depth=depth)  # validates before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"pe_array": write_top(array, "pe_array", out, hierarchical)}
    ports = {"clk": 1, "rst": 1}
    ports.update({name: len(Value.cast(getattr(array, name))) for name in array.signature.members})
    description = {
        **cfg.to_dict(),
        "name": cfg.name,
        "hierarchical": hierarchical,
        "array": {
            "rows": rows,
            "cols": cols,
            "depth": array.depth,
            "dataflow": array.dataflow,
            "chunk_size": rows,
            "latency": array.latency,
        },
        "ports": ports,
        "layout": {
            "weight": f"column j at bits [j*{cfg.b_format.width} +: {cfg.b_format.width}]",
            "x": f"row i at bits [i*{cfg.a_format.width} +: {cfg.a_format.width}]",
            "y": f"column j at bits [j*{cfg.acc.width} +: {cfg.acc.width}]",
            "events": f"PE (i, j) at bit i*{cols} + j, chunk adder of column j at bit {rows * cols} + j",
        },
    }
    paths["config"] = out / "pe_array.json"
    paths["config"].write_text(json.dumps(description, indent=2) + "\n")
    return paths

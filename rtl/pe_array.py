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

from lba_core import ConfigError, MacConfig

from .export import write_top
from .fmaq import ChunkAdder, ConfiguredComponent, FMAq
from .mac import Register
from .plan import plan_datapath

DATAFLOWS = ("weight-stationary",)

#: Area classes of the array's sub-modules (docs/pe_array.md): each Amaranth sub-module name maps to one.
#: The FMAq blocks keep their own names; ``ACCUMULATOR_BLOCKS`` are the "everything after the product" part.
ARRAY_BLOCKS = (
    "multiplier",
    "product_rounder",
    "aligner",
    "adder",
    "normalizer",
    "rounder",
    "range_flags",
    "psum_register",
    "chunk_adder",
    "output_buffer",
    "weight_register",
    "activation_register",
    "skew_register",
    "control_register",
)
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


def parse_array_shape(text: str) -> tuple[int, int]:
    """``"8x8"`` -> (8, 8); ValueError naming the expected spelling otherwise."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise ValueError(f"array shape must be ROWSxCOLS with positive integers (e.g. 8x8), got {text!r}")
    return int(parts[0]), int(parts[1])


def check_array(rows: int, cols: int, cfg: MacConfig, dataflow: str, depth: int) -> None:
    for name, value in (("rows", rows), ("cols", cols), ("depth", depth)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"PEArray {name} must be a positive integer, got {value!r}")
    if dataflow not in DATAFLOWS:
        raise ConfigError(f"PEArray dataflow must be one of {', '.join(DATAFLOWS)}, got {dataflow!r}")
    plan_datapath(cfg)
    if cfg.chunk_size not in (None, rows):
        raise ConfigError(
            f"{cfg.name}: a {rows}-row array accumulates chunks of {rows} products, but the configuration "
            f"says chunk_size={cfg.chunk_size} (use chunk_size={rows} or leave it unset)"
        )


class ProcessingElement(ConfiguredComponent):
    """One PE: a weight register, an FMAq, and the registers that pass the activation right and the
    partial sum down. The step's events are gated by its valid bit (a bubble raises nothing)."""

    def __init__(self, cfg: MacConfig):
        self.cfg = cfg
        self.fmaq = FMAq(cfg)
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
                "overflow": Out(1),
                "underflow": Out(1),
                "swamp": Out(1),
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
            self.overflow.eq(fmaq.overflow & self.valid_in),
            self.underflow.eq(fmaq.underflow & self.valid_in),
            self.swamp.eq(fmaq.swamp & self.valid_in),
        ]
        return m


class OutputColumn(ConfiguredComponent):
    """Below one column: the chunk adder and the output buffer (``depth`` running totals, one per output row).

    A valid partial sum for row ``row`` replaces total[row] by R_acc(total[row] + partial); ``clear`` sets
    every total to +0 (and wins over a fold in the same cycle). ``read_row`` selects the total on ``total``.
    """

    def __init__(self, cfg: MacConfig, depth: int):
        self.cfg, self.depth = cfg, depth
        self.chunk_adder = ChunkAdder(cfg)
        address = max(1, (depth - 1).bit_length())
        super().__init__(
            {
                "partial": In(cfg.acc.width),
                "valid": In(1),
                "row": In(address),
                "clear": In(1),
                "read_row": In(address),
                "total": Out(cfg.acc.width),
                "overflow": Out(1),
                "underflow": Out(1),
                "swamp": Out(1),
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
            self.overflow.eq(adder.overflow & self.valid),
            self.underflow.eq(adder.underflow & self.valid),
            self.swamp.eq(adder.swamp & self.valid),
        ]
        return m


class OutputBuffer(wiring.Component):
    """``depth`` accumulator registers with one write port, two read ports and a clear-all."""

    def __init__(self, width: int, depth: int):
        self.width, self.depth = width, depth
        address = max(1, (depth - 1).bit_length())
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


class PEArray(ConfiguredComponent):
    """A rows x cols weight-stationary PE array with chunk adders and output buffers (docs/pe_array.md).

    Ports (valid-only streaming, no back-pressure; clk and rst from the sync domain):

    - ``weight_valid``, ``weight_row``, ``weight`` (cols codes): write row ``weight_row`` of the weights;
    - ``x_valid``, ``x`` (rows codes: the K-tile slice of one input row), ``x_row`` (its output-buffer row);
    - ``clear``: set every running total to +0; ``read_row``, ``y`` (cols totals of that buffer row);
    - ``overflow``, ``underflow``, ``swamp``: one bit per step in this cycle, PE (i, j) at bit i·cols + j and
      the chunk adder of column j at bit rows·cols + j.
    """

    def __new__(cls, rows: int, cols: int, cfg: MacConfig, dataflow: str = "weight-stationary", *, depth=None):
        check_array(rows, cols, cfg, dataflow, rows if depth is None else depth)
        return wiring.Component.__new__(cls)

    def __init__(self, rows: int, cols: int, cfg: MacConfig, dataflow: str = "weight-stationary", *, depth=None):
        self.rows, self.cols, self.cfg, self.dataflow = rows, cols, cfg, dataflow
        self.depth = rows if depth is None else depth
        self.pes = [[ProcessingElement(cfg) for _ in range(cols)] for _ in range(rows)]
        self.columns = [OutputColumn(cfg, self.depth) for _ in range(cols)]
        address = max(1, (self.depth - 1).bit_length())
        steps = (rows + 1) * cols
        super().__init__(
            {
                "weight_valid": In(1),
                "weight_row": In(max(1, (rows - 1).bit_length())),
                "weight": In(data.ArrayLayout(cfg.b_format.width, cols)),
                "x_valid": In(1),
                "x": In(data.ArrayLayout(cfg.a_format.width, rows)),
                "x_row": In(address),
                "clear": In(1),
                "read_row": In(address),
                "y": Out(data.ArrayLayout(cfg.acc.width, cols)),
                "overflow": Out(steps),
                "underflow": Out(steps),
                "swamp": Out(steps),
            }
        )

    @property
    def latency(self) -> int:
        """Cycles from an activation entering (x_valid) to its row's fold in the last column's buffer."""
        return self.rows + self.cols - 1

    def elaborate(self, platform):
        m = Module()
        rows, cols, cfg = self.rows, self.cols, self.cfg
        a_width = cfg.a_format.width
        events = {name: [] for name in ("overflow", "underflow", "swamp")}
        # Skew: row i's activation (with its valid bit) enters i cycles late, so that it meets the partial
        # sum coming down from row i - 1.
        row_inputs = []
        for i in range(rows):
            value = Cat(self.x[i], self.x_valid)
            for stage in range(i):
                register = Register(a_width + 1)
                m.submodules[f"skew_register_{i}_{stage}"] = register
                m.d.comb += [register.d.eq(value), register.en.eq(1)]
                value = register.q
            row_inputs.append(value)
        for i, pe_row in enumerate(self.pes):
            for j, pe in enumerate(pe_row):
                m.submodules[f"pe_{i}_{j}"] = pe
                left = (row_inputs[i][:a_width], row_inputs[i][-1]) if j == 0 else (pe_row[j - 1].x_out, pe_row[j - 1].valid_out)
                m.d.comb += [
                    pe.x_in.eq(left[0]),
                    pe.valid_in.eq(left[1]),
                    pe.psum_in.eq(0 if i == 0 else self.pes[i - 1][j].psum_out),
                    pe.weight_in.eq(self.weight[j]),
                    pe.weight_load.eq(self.weight_valid & (self.weight_row == i)),
                ]
        for i in range(rows):
            for j in range(cols):
                for name in events:
                    events[name].append(getattr(self.pes[i][j], name))
        # The output-buffer row travels beside the wavefront: it reaches column j's bottom rows + j cycles
        # after it entered, together with that column's partial sum.
        row_address = self.x_row
        delayed_rows = []
        for stage in range(rows + cols - 1):
            register = Register(len(self.x_row))
            m.submodules[f"control_register_{stage}"] = register
            m.d.comb += [register.d.eq(row_address), register.en.eq(1)]
            row_address = register.q
            delayed_rows.append(row_address)
        for j, column in enumerate(self.columns):
            m.submodules[f"column_{j}"] = column
            bottom = self.pes[rows - 1][j]
            m.d.comb += [
                column.partial.eq(bottom.psum_out),
                column.valid.eq(bottom.valid_out),
                column.row.eq(delayed_rows[rows - 1 + j]),
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
    array = PEArray(rows, cols, cfg, depth=depth)
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

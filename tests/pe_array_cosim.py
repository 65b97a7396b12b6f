"""Cosimulation of rtl.PEArray against lba_matmul with chunk_size = rows.

:func:`schedule` turns X (M, K) and W (K, N) code matrices into the array's cycle-by-cycle inputs (the
loop order of docs/pe_array.md: for each column block, for each row block: clear, then per K-tile load the
weights and stream the rows, then drain and read). The same program drives Amaranth's simulator
(:func:`simulate_amaranth`) and the exported pe_array.v in Verilator or Icarus (:func:`simulate_verilog`);
:func:`outputs_and_events` reads Y's codes and the event totals back from the sampled words, and
:func:`reference` computes both with lba_matmul.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lba_core import FloatFormat, MacConfig
from lba_train import EventStats, lba_matmul
from support.simulators import run_testbench_words

#: Input ports in packing order, most significant first (the Verilog testbench's concatenation).
INPUT_PORTS = ("clear", "weight_valid", "weight_row", "weight", "x_valid", "x_row", "x", "read_row")
EVENTS = ("overflow", "underflow", "swamp")


@dataclass(frozen=True)
class ArrayShape:
    rows: int
    cols: int
    depth: int
    a_width: int
    b_width: int
    acc_width: int

    @staticmethod
    def of(rows: int, cols: int, depth: int, cfg: MacConfig) -> "ArrayShape":
        return ArrayShape(rows, cols, depth, cfg.a_format.width, cfg.b_format.width, cfg.acc.width)

    def widths(self) -> dict[str, int]:
        address = max(1, (self.depth - 1).bit_length())
        return {
            "clear": 1,
            "weight_valid": 1,
            "weight_row": max(1, (self.rows - 1).bit_length()),
            "weight": self.cols * self.b_width,
            "x_valid": 1,
            "x_row": address,
            "x": self.rows * self.a_width,
            "read_row": address,
        }

    @property
    def steps(self) -> int:
        return (self.rows + 1) * self.cols


@dataclass
class Program:
    """Per-cycle input words and, for each cycle that reads an output row, (cycle, m, first column)."""

    shape: ArrayShape
    words: list[int] = field(default_factory=list)
    reads: list[tuple[int, int, int]] = field(default_factory=list)

    def cycle(self, **ports: int) -> None:
        word = 0
        for name, width in self.shape.widths().items():
            value = ports.get(name, 0)
            if not 0 <= value < (1 << width):
                raise ValueError(f"{name}={value} does not fit {width} bits")
            word = (word << width) | value
        self.words.append(word)


def run_all(shape: ArrayShape, problems: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Program, list[slice]]:
    """One program computing every (X, W) in turn (one simulator build for all); the cycle range of each."""
    program = Program(shape)
    spans = []
    for x, w in problems:
        part = schedule(shape, x, w)
        offset = len(program.words)
        program.words += part.words
        program.reads += [(cycle + offset, m, n0) for cycle, m, n0 in part.reads]
        spans.append(slice(offset, len(program.words)))
    return program, spans


def split(program: Program, span: slice) -> Program:
    """The part of a combined program in span (its reads re-based to the span's first cycle)."""
    reads = [(cycle - span.start, m, n0) for cycle, m, n0 in program.reads if span.start <= cycle < span.stop]
    return Program(program.shape, program.words[span], reads)


def pack(codes, width: int) -> int:
    """Element 0 in the low bits (Amaranth's ArrayLayout order)."""
    word = 0
    for position, code in enumerate(codes):
        word |= int(code) << (position * width)
    return word


def schedule(shape: ArrayShape, x: np.ndarray, w: np.ndarray) -> Program:
    """The cycle program computing X @ W on the array (X: M x K codes, W: K x N codes, K >= 1)."""
    rows, cols, depth = shape.rows, shape.cols, shape.depth
    m_total, k_total = x.shape
    n_total = w.shape[1]
    tiles = math.ceil(k_total / rows)
    x_padded = np.zeros((m_total, tiles * rows), dtype=np.int64)
    x_padded[:, :k_total] = x
    w_padded = np.zeros((tiles * rows, math.ceil(n_total / cols) * cols), dtype=np.int64)
    w_padded[:k_total, :n_total] = w
    program = Program(shape)
    for n0 in range(0, n_total, cols):
        for m0 in range(0, m_total, depth):
            count = min(depth, m_total - m0)
            program.cycle(clear=1)
            for tile in range(tiles):
                if tile:  # the last activation of the previous tile must pass row i's last PE first
                    for _ in range(max(0, cols - 2)):
                        program.cycle()
                for i in range(rows):
                    weights = w_padded[tile * rows + i, n0 : n0 + cols]
                    program.cycle(weight_valid=1, weight_row=i, weight=pack(weights, shape.b_width))
                for r in range(count):
                    activations = x_padded[m0 + r, tile * rows : (tile + 1) * rows]
                    program.cycle(x_valid=1, x_row=r, x=pack(activations, shape.a_width))
            for _ in range(rows + cols - 1):  # drain: the last fold lands rows + cols - 1 edges later
                program.cycle()
            for r in range(count):
                program.reads.append((len(program.words), m0 + r, n0))
                program.cycle(read_row=r)
    return program


def outputs_and_events(program: Program, samples: list[int], n_total: int) -> tuple[np.ndarray, dict[str, int]]:
    """Y's codes (M x N) and the summed event bits of every cycle, from the per-cycle output words
    ``y | overflow | underflow | swamp`` (events in the low bits)."""
    shape = program.shape
    steps = shape.steps
    events = {name: 0 for name in EVENTS}
    for word in samples:
        for position, name in enumerate(reversed(EVENTS)):
            events[name] += bin((word >> (position * steps)) & ((1 << steps) - 1)).count("1")
    m_total = max((m for _, m, _ in program.reads), default=-1) + 1
    y = np.zeros((m_total, n_total), dtype=np.int64)
    mask = (1 << shape.acc_width) - 1
    for cycle, m, n0 in program.reads:
        word = samples[cycle] >> (3 * steps)
        for j in range(min(shape.cols, n_total - n0)):
            y[m, n0 + j] = (word >> (j * shape.acc_width)) & mask
    return y, events


def reference(cfg: MacConfig, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """lba_matmul's result codes and event counts for the code matrices."""
    x_values = torch.tensor(code_values(cfg.a_format)[x])
    w_values = torch.tensor(code_values(cfg.b_format)[w])
    stats = EventStats()
    y = lba_matmul(x_values, w_values, cfg, stats=stats).double().numpy()
    codes = np.vectorize(lambda value: cfg.acc.encode(float(value)), otypes=[np.int64])(y)
    return codes, {name: getattr(stats, name) for name in EVENTS}


def code_values(fmt: FloatFormat) -> np.ndarray:
    return np.array([float(fmt.decode(code)) for code in range(fmt.code_count)])


def random_codes(fmt: FloatFormat, shape: tuple[int, int], rng: np.random.Generator, kind: str) -> np.ndarray:
    """``uniform``: every code equally likely (saturation, flushes); ``moderate``: binades within a few of 1
    with both signs and some zeros (swamping, cancellation, rounding)."""
    if kind == "uniform":
        return rng.integers(0, fmt.code_count, shape, dtype=np.int64)
    exponent = np.clip(fmt.bias + rng.integers(-3, 3, shape), 0, (1 << fmt.exp_bits) - 1)
    codes = (exponent << fmt.man_bits) | rng.integers(0, 1 << fmt.man_bits, shape)
    codes |= rng.integers(0, 2, shape) << (fmt.width - 1)
    return np.where(rng.random(shape) < 0.1, 0, codes).astype(np.int64)


TESTBENCH = """`timescale 1ns/1ps
// PE-array testbench: one input word per cycle from inputs.hex ({{{inputs}}}); in each cycle, after the
// inputs settle, {{y, overflow, underflow, swamp}} goes to results.hex; then the rising edge. Reset is held
// for the first two edges.
module tb;
  parameter N = 1;
  reg [{word}:0] stimulus [0:N-1];
{regs}
  wire [{yw}:0] y;
  wire [{ew}:0] overflow, underflow, swamp;
  reg clk = 0, rst = 1;
  integer i, f;
  pe_array dut (.clk(clk), .rst(rst), {connections}, .y(y), .overflow(overflow), .underflow(underflow),
                .swamp(swamp));
  always #5 clk = ~clk;
  initial begin
    $readmemh("inputs.hex", stimulus);
    f = $fopen("results.hex", "w");
    @(posedge clk); @(posedge clk);
    #1 rst = 0;
    for (i = 0; i < N; i = i + 1) begin
      {{{inputs}}} = stimulus[i];
      #1 $fwrite(f, "%h\\n", {{y, overflow, underflow, swamp}});
      @(posedge clk);
      #1;
    end
    $fclose(f);
    $finish;
  end
endmodule
"""


def simulate_verilog(program: Program, verilog: Path, workdir: Path, simulator: str = "verilator") -> list[int]:
    """Run the exported pe_array.v over the program; returns the sampled output word of every cycle."""
    shape = program.shape
    widths = shape.widths()
    regs = "\n".join(f"  reg [{width - 1}:0] {name} = 0;" for name, width in widths.items())
    testbench = TESTBENCH.format(
        word=sum(widths.values()) - 1,
        regs=regs,
        inputs=", ".join(widths),
        connections=", ".join(f".{name}({name})" for name in widths),
        yw=shape.cols * shape.acc_width - 1,
        ew=shape.steps - 1,
    )
    # Python ints: a sampled word (y and the event bits) is wider than 64 bits for arrays beyond 2 x 2.
    return run_testbench_words(testbench, "inputs.hex", program.words, verilog, workdir, simulator)


def simulate_amaranth(array, program: Program) -> list[int]:
    """Drive an rtl.PEArray in Amaranth's simulator with the program; same sampled words as the Verilog."""
    from amaranth import Value
    from amaranth.sim import Simulator

    widths = program.shape.widths()
    steps = program.shape.steps
    samples = []

    async def testbench(ctx):
        for word in program.words:
            shift = sum(widths.values())
            for name, width in widths.items():
                shift -= width
                ctx.set(Value.cast(getattr(array, name)), (word >> shift) & ((1 << width) - 1))
            sample = ctx.get(Value.cast(array.y))
            for name in EVENTS:
                sample = (sample << steps) | ctx.get(getattr(array, name))
            samples.append(sample)
            await ctx.tick()

    simulator = Simulator(array)
    simulator.add_clock(1e-6)
    simulator.add_testbench(testbench)
    simulator.run()
    return samples

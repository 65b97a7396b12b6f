"""FDPA drivers: the Amaranth unit in Amaranth's simulator, the exported fdpa.v in Verilator or Icarus.

Both feed one group per step (the combinational unit) or one group per clock cycle (a pipelined unit, whose
result is read ``latency`` rising edges later), so a pipelined unit is checked at full throughput.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from amaranth.sim import Simulator

from rtl.fdpa import FusedDotProductAdd
from rtl.fdpa_plan import FdpaPlan

from .fdpa_vectors import FdpaVectors
from .simulators import run_testbench_words


def rows_of(plan: FdpaPlan, vectors: FdpaVectors):
    for a, b, c in zip(vectors.a.tolist(), vectors.b.tolist(), vectors.c.tolist()):
        row = {f"a_{i}": x for i, x in enumerate(a)}
        row.update({f"b_{i}": y for i, y in enumerate(b)})
        row["c"] = c
        yield row


def simulate_fdpa_amaranth(plan: FdpaPlan, vectors: FdpaVectors, pipeline: int = 0) -> np.ndarray:
    """Output codes of FusedDotProductAdd(plan, pipeline) in Amaranth's simulator, one group per cycle."""
    dut = FusedDotProductAdd(plan, pipeline)
    rows = list(rows_of(plan, vectors))
    observed: list[int] = []

    async def testbench(ctx):
        for step in range(len(rows) + dut.latency):
            if step < len(rows):
                for name, value in rows[step].items():
                    ctx.set(getattr(dut, name), value)
            if dut.latency:
                await ctx.tick()
                if step >= dut.latency - 1 and len(observed) < len(rows):
                    observed.append(ctx.get(dut.out))
            else:
                observed.append(ctx.get(dut.out))

    simulator = Simulator(dut)
    if dut.latency:
        simulator.add_clock(1e-6)
    simulator.add_testbench(testbench)
    simulator.run()
    return np.array(observed, dtype=np.int64)


FDPA_TESTBENCH = """`timescale 1ns/1ps
// fdpa testbench: one group {{a_0..a_{{L-1}}, b_0..b_{{L-1}}, c}} per line of vectors.hex, one out per line of
// results.hex. LATENCY 0: combinational; else one group per cycle, out read LATENCY edges later.
module tb;
  parameter N = 1;
  localparam LATENCY = {latency};
  reg [{vw}:0] vectors [0:N-1];
  reg [{vw}:0] v;
  reg clk = 0, rst = 1;
  wire [{ow}:0] out;
  integer i, f;
  fdpa dut ({connections});
  always #5 clk = ~clk;
  initial begin
    $readmemh("vectors.hex", vectors);
    f = $fopen("results.hex", "w");
    if (LATENCY == 0) begin
      for (i = 0; i < N; i = i + 1) begin
        v = vectors[i];
        #1;
        $fwrite(f, "%h\\n", out);
      end
    end else begin
      @(posedge clk); @(posedge clk);
      #1 rst = 0;
      for (i = 0; i < N + LATENCY - 1; i = i + 1) begin
        v = vectors[i < N ? i : N - 1];
        @(posedge clk);
        #1 if (i >= LATENCY - 1) $fwrite(f, "%h\\n", out);
      end
    end
    $fclose(f);
    $finish;
  end
endmodule
"""


def fdpa_testbench(plan: FdpaPlan, latency: int) -> str:
    """The testbench text: a vector packs a_0 (most significant) .. a_{L-1}, b_0 .. b_{L-1}, c (least)."""
    L, aw, bw, cw = plan.group, plan.a_format.width, plan.b_format.width, plan.output.width
    connections, low = [], 0
    fields = [("c", cw)] + [(f"b_{i}", bw) for i in reversed(range(L))] + [(f"a_{i}", aw) for i in reversed(range(L))]
    for name, width in fields:
        connections.append(f".{name}(v[{low + width - 1}:{low}])")
        low += width
    if latency:
        connections += [".clk(clk)", ".rst(rst)"]
    connections.append(".out(out)")
    return FDPA_TESTBENCH.format(latency=latency, vw=low - 1, ow=cw - 1, connections=", ".join(connections))


def pack_vectors(plan: FdpaPlan, vectors: FdpaVectors) -> list[int]:
    aw, bw, cw = plan.a_format.width, plan.b_format.width, plan.output.width
    words = []
    for a, b, c in zip(vectors.a.tolist(), vectors.b.tolist(), vectors.c.tolist()):
        word = 0
        for x in a:
            word = (word << aw) | x
        for y in b:
            word = (word << bw) | y
        words.append((word << cw) | c)
    return words


def simulate_fdpa_verilog(
    plan: FdpaPlan, verilog: Path, vectors: FdpaVectors, workdir: Path, simulator: str = "verilator", latency: int = 0
) -> np.ndarray:
    """Output codes of the exported fdpa.v (top ``fdpa``) in Verilator or Icarus over the vectors."""
    words = pack_vectors(plan, vectors)
    return np.array(
        run_testbench_words(fdpa_testbench(plan, latency), "vectors.hex", words, verilog, workdir, simulator), dtype=np.int64
    )

"""Simulator drivers: the exported Verilog in Verilator (``--binary``) or Icarus Verilog from generic
testbenches that $readmemh the vectors and write one result word per vector, and the Amaranth circuits in
Amaranth's own simulator (:func:`simulate_combinational` drives any combinational component, the blocks
included)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from amaranth.sim import Simulator

from lba_core import MacConfig
from rtl import MAC, FMAq
from rtl.intmac import FixedFMAq, FixedMAC

from .vectors import Vectors, check_packable, pack_result

SIMULATORS = ("verilator", "iverilog")


def port(component, name: str):
    """A (possibly nested) port by dotted name: ``"addend.sig"``."""
    for part in name.split("."):
        component = getattr(component, part)
    return component


def simulate_combinational(
    dut, rows: Iterable[Mapping[str, int]], outputs: Sequence[str]
) -> list[tuple[int, ...]]:
    """Drive a combinational Amaranth component with each row of input values (port name -> value) and read
    ``outputs`` (port names) after it settles; returns one tuple of output values per row."""
    observed: list[tuple[int, ...]] = []
    output_ports = [port(dut, name) for name in outputs]

    async def testbench(ctx):
        for row in rows:
            for name, value in row.items():
                ctx.set(port(dut, name), value)
            observed.append(tuple(ctx.get(signal) for signal in output_ports))

    simulator = Simulator(dut)
    simulator.add_testbench(testbench)
    simulator.run()
    return observed


FMAQ_TESTBENCH = """`timescale 1ns/1ps
// Generic fmaq testbench: one vector {{a, b, acc_in}} per line of vectors.hex, one result
// {{acc_out, overflow, underflow, swamp}} per line of results.hex (hex).
module tb;
  parameter N = 1;
  reg [{vw}:0] vectors [0:N-1];
  reg [{aw}:0] a;
  reg [{bw}:0] b;
  reg [{cw}:0] acc_in;
  wire [{cw}:0] acc_out;
  wire overflow, underflow, swamp;
  integer i, f;
  fmaq dut (.a(a), .b(b), .acc_in(acc_in),
            .acc_out(acc_out), .overflow(overflow), .underflow(underflow), .swamp(swamp));
  initial begin
    $readmemh("vectors.hex", vectors);
    f = $fopen("results.hex", "w");
    for (i = 0; i < N; i = i + 1) begin
      {{a, b, acc_in}} = vectors[i];
      #1;
      $fwrite(f, "%h\\n", {{acc_out, overflow, underflow, swamp}});
    end
    $fclose(f);
    $finish;
  end
endmodule
"""


def simulate_fmaq(
    cfg: MacConfig, fmaq_verilog: Path, vectors: Vectors, workdir: Path, simulator: str = "verilator"
) -> np.ndarray:
    """Run the exported fmaq.v over the vectors in a Verilog simulator; returns the packed result words."""
    check_packable(cfg)
    aw, bw, cw = cfg.a_format.width, cfg.b_format.width, cfg.acc.width
    testbench = FMAQ_TESTBENCH.format(vw=aw + bw + cw - 1, aw=aw - 1, bw=bw - 1, cw=cw - 1)
    words = ((vectors.a << (bw + cw)) | (vectors.b << cw) | vectors.acc).tolist()
    return run_testbench(testbench, "vectors.hex", words, fmaq_verilog, workdir, simulator)


def run_testbench(
    testbench: str, input_name: str, words: list[int], design: Path, workdir: Path, simulator: str
) -> np.ndarray:
    """Build tb.v with the design in Verilator or Icarus, feed it the input words, read results.hex."""
    return np.array(run_testbench_words(testbench, input_name, words, design, workdir, simulator), dtype=np.int64)


def run_testbench_words(
    testbench: str, input_name: str, words: list[int], design: Path, workdir: Path, simulator: str
) -> list[int]:
    """:func:`run_testbench` with the result words as Python ints, for results wider than 64 bits."""
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, got {simulator!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tb.v").write_text(testbench)
    (workdir / input_name).write_text("\n".join(map("{:x}".format, words)) + "\n")
    source = Path(design).resolve()
    count = len(words)
    if simulator == "verilator":
        build = [
            "verilator",
            "--binary",
            "--top-module",
            "tb",
            f"-GN={count}",
            "-Wno-fatal",
            "-Wno-lint",
            "-Wno-style",
            "-CFLAGS",
            "-O1",
            "--Mdir",
            "obj",
            "-o",
            "Vtb",
            "tb.v",
            str(source),
        ]
        run = ["obj/Vtb"]
    else:
        build = ["iverilog", "-g2005", "-o", "tb.vvp", f"-Ptb.N={count}", "tb.v", str(source)]
        run = ["vvp", "-n", "tb.vvp"]
    for command in (build, run):
        require_tool(command[0], workdir)
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    lines = (workdir / "results.hex").read_text().split()
    if len(lines) != count:
        raise RuntimeError(f"{simulator} wrote {len(lines)} results for {count} inputs")
    return [int(line, 16) for line in lines]


MAC_TESTBENCH = """`timescale 1ns/1ps
// Generic mac testbench: one cycle {{valid, clear, a, b}} per line of cycles.hex; after each rising edge the
// registered acc is written to results.hex (hex). Reset is held for the first two edges.
module tb;
  parameter N = 1;
  reg [{vw}:0] cycles [0:N-1];
  reg clk = 0, rst = 1, valid = 0, clear = 0;
  reg [{aw}:0] a = 0;
  reg [{bw}:0] b = 0;
  wire [{cw}:0] acc;
  integer i, f;
  mac dut (.clk(clk), .rst(rst), .valid(valid), .clear(clear), .a(a), .b(b), .acc(acc));
  always #5 clk = ~clk;
  initial begin
    $readmemh("cycles.hex", cycles);
    f = $fopen("results.hex", "w");
    @(posedge clk); @(posedge clk);
    #1 rst = 0;
    for (i = 0; i < N; i = i + 1) begin
      {{valid, clear, a, b}} = cycles[i];
      @(posedge clk);
      #1 $fwrite(f, "%h\\n", acc);
    end
    $fclose(f);
    $finish;
  end
endmodule
"""


def simulate_mac(
    cfg: MacConfig,
    mac_verilog: Path,
    cycles: list[tuple[int, int, int, int]],
    workdir: Path,
    simulator: str = "iverilog",
) -> list[int]:
    """Drive the exported mac.v with one (valid, clear, a, b) per cycle; returns acc after each rising edge."""
    aw, bw = cfg.a_format.width, cfg.b_format.width
    words = [(valid << (aw + bw + 1)) | (clear << (aw + bw)) | (a << bw) | b for valid, clear, a, b in cycles]
    testbench = MAC_TESTBENCH.format(vw=aw + bw + 1, aw=aw - 1, bw=bw - 1, cw=cfg.acc.width - 1)
    return run_testbench(testbench, "cycles.hex", words, mac_verilog, workdir, simulator).tolist()


STEP_OUTPUTS = ("acc_out", "overflow", "underflow", "swamp")


def fmaq_of(cfg: MacConfig):
    """The combinational MAC step of cfg: the floating-point FMAq, or the integer/fixed-point one."""
    return FixedFMAq(cfg) if cfg.fixed_acc else FMAq(cfg)


def simulate_fmaq_amaranth(cfg: MacConfig, vectors: Vectors) -> np.ndarray:
    """Run the Amaranth FMAq in Amaranth's own simulator (slow: for small focused vector sets)."""
    rows = ({"a": a, "b": b, "acc_in": c} for a, b, c in zip(vectors.a.tolist(), vectors.b.tolist(), vectors.acc.tolist()))
    return np.array([pack_result(*out) for out in simulate_combinational(fmaq_of(cfg), rows, STEP_OUTPUTS)], dtype=np.int64)


def simulate_mac_amaranth(cfg: MacConfig, cycles: list[tuple[int, int, int, int]], dut=None) -> list[int]:
    """Drive a sequential MAC with one (valid, clear, a, b) per clock cycle; returns ``acc`` after each edge.

    ``dut`` is cfg's MAC (floating or fixed point) unless another circuit with the MAC's ports is given (a
    pipelined MAC)."""
    if dut is None:
        dut = FixedMAC(cfg) if cfg.fixed_acc else MAC(cfg)
    observed = []

    async def testbench(ctx):
        for valid, clear, a, b in cycles:
            ctx.set(dut.valid, valid)
            ctx.set(dut.clear, clear)
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            await ctx.tick()
            observed.append(ctx.get(dut.acc))

    simulator = Simulator(dut)
    simulator.add_clock(1e-6)
    simulator.add_testbench(testbench)
    simulator.run()
    return observed


def require_tool(name: str, workdir: Path) -> None:
    if not (workdir / name).exists() and shutil.which(name) is None:
        raise RuntimeError(f"{name} is not installed (scripts/install-system-deps.sh installs the simulators)")

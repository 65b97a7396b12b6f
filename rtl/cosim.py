"""Cosimulation of the exported Verilog against the reference (lba_core.fmaq).

Vectors are (a, b, acc_in) code triples held in NumPy arrays. The expected outputs come from the Fraction
reference, computed once per distinct (exact product, accumulator) pair and spread over processes; the
Verilog runs in Verilator (``--binary``) or Icarus Verilog from a generic testbench that $readmemh's the
vectors and writes one result word per vector. A result word packs ``acc_out | overflow | underflow | swamp``
(the flags in the three low bits).
"""

from __future__ import annotations

import functools
import multiprocessing
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lba_core import FloatFormat, MacConfig, fmaq

SIMULATORS = ("verilator", "iverilog")
FLAG_BITS = 3
#: Reference runs per process-pool task.
REFERENCE_CHUNK = 20000


@dataclass(frozen=True)
class Vectors:
    """Code triples for the fmaq circuit, one entry per vector."""

    a: np.ndarray
    b: np.ndarray
    acc: np.ndarray

    def __len__(self) -> int:
        return len(self.a)

    @staticmethod
    def concat(parts: "list[Vectors]") -> "Vectors":
        return Vectors(*(np.concatenate([getattr(part, name) for part in parts]) for name in ("a", "b", "acc")))


def pack_result(acc_code: int, overflow: bool, underflow: bool, swamp: bool) -> int:
    return (acc_code << FLAG_BITS) | (int(overflow) << 2) | (int(underflow) << 1) | int(swamp)


def unpack_result(word: int) -> tuple[int, int, int, int]:
    return word >> FLAG_BITS, (word >> 2) & 1, (word >> 1) & 1, word & 1


def check_packable(cfg: MacConfig) -> None:
    if cfg.a_format.width + cfg.b_format.width + cfg.acc.width > 62:
        raise ValueError(f"{cfg.name}: vectors wider than 62 bits are not supported by the cosim harness")


# ------------------------------------------------------------------------------------------- vector sets
def boundary_codes(fmt: FloatFormat, mantissas_per_exponent: int = 4) -> np.ndarray:
    """Accumulator codes covering every exponent code and the boundary values.

    Every exponent code with 1, 2 or 4 mantissas (1: one code per exponent, the mantissa alternating between
    all-ones and zero and the sign alternating; 2: both extremes; 4: also 1 and the middle; 2 and 4 take both
    signs), plus, with both signs: max and the value below it, min_normal and its neighbours, the smallest
    exponent-0 code (a subnormal, or a code that must read as zero), +0 and the -0 code.
    """
    if mantissas_per_exponent not in (1, 2, 4):
        raise ValueError(f"mantissas_per_exponent must be 1, 2 or 4, got {mantissas_per_exponent}")
    man_max = (1 << fmt.man_bits) - 1
    sign = 1 << (fmt.width - 1)
    if mantissas_per_exponent == 1:
        spread = {
            (e << fmt.man_bits) | (man_max if e % 2 else 0) | (sign if e % 4 >= 2 else 0)
            for e in range(1 << fmt.exp_bits)
        }
    else:
        mantissas = {0, man_max} | ({1, man_max // 2 + 1} if mantissas_per_exponent == 4 else set())
        spread = {(e << fmt.man_bits) | m for e in range(1 << fmt.exp_bits) for m in mantissas}
        spread |= {code | sign for code in spread}
    max_code = fmt.encode(fmt.max_value)
    min_normal_code = fmt.encode(fmt.min_normal)
    special = {0, 1, max_code, max_code - 1, min_normal_code, min_normal_code + 1, min_normal_code - 1}
    return np.array(sorted(spread | special | {code | sign for code in special}), dtype=np.int64)


def all_pairs_vectors(cfg: MacConfig, acc_codes: np.ndarray) -> Vectors:
    """Every (a, b) code pair against each accumulator code (accumulator-major)."""
    a, b = np.meshgrid(np.arange(cfg.a_format.code_count), np.arange(cfg.b_format.code_count), indexing="ij")
    pairs = a.size
    return Vectors(
        np.tile(a.ravel(), len(acc_codes)).astype(np.int64),
        np.tile(b.ravel(), len(acc_codes)).astype(np.int64),
        np.repeat(acc_codes.astype(np.int64), pairs),
    )


def boundary_vectors(cfg: MacConfig, acc_codes: np.ndarray, count: int, seed: int) -> Vectors:
    """Random (a, b) code pairs, each against the next accumulator of acc_codes in turn."""
    rng = np.random.default_rng(seed)
    return Vectors(
        rng.integers(0, cfg.a_format.code_count, count, dtype=np.int64),
        rng.integers(0, cfg.b_format.code_count, count, dtype=np.int64),
        np.resize(acc_codes.astype(np.int64), count),
    )


def random_vectors(cfg: MacConfig, count: int, seed: int) -> Vectors:
    """Random code triples: a third with a uniform accumulator code, a third with the accumulator near the
    product's binade (partial overlap of the significands), a third near -product (massive cancellation)."""
    rng = np.random.default_rng(seed)
    a, b, product = random_operands(cfg, count, rng)
    kind = rng.integers(0, 3, count)
    acc = np.select(
        [kind == 0, kind == 1],
        [rng.integers(0, cfg.acc.code_count, count, dtype=np.int64), near_codes(cfg.acc, product, rng)],
        cancelling_codes(cfg.acc, product, rng),
    )
    return Vectors(a, b, acc.astype(np.int64))


def cancellation_vectors(cfg: MacConfig, count: int, seed: int) -> Vectors:
    """Random (a, b) with the accumulator within two codes of -(a*b): the exact sum cancels to a few ulps or
    to zero, and a product wider than the accumulator leaves a sticky tail on the subtracted operand."""
    rng = np.random.default_rng(seed)
    a, b, product = random_operands(cfg, count, rng)
    return Vectors(a, b, cancelling_codes(cfg.acc, product, rng))


def random_operands(cfg: MacConfig, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = rng.integers(0, cfg.a_format.code_count, count, dtype=np.int64)
    b = rng.integers(0, cfg.b_format.code_count, count, dtype=np.int64)
    return a, b, code_values(cfg.a_format)[a] * code_values(cfg.b_format)[b]


def near_codes(fmt: FloatFormat, product: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random codes of either sign whose binade is within a significand width of the product's."""
    count = len(product)
    exponent = np.frexp(np.abs(product))[1] - 1
    exponent_code = np.clip(exponent + rng.integers(-fmt.man_bits - 3, 4, count) + fmt.bias, 1, (1 << fmt.exp_bits) - 1)
    codes = (exponent_code << fmt.man_bits) | rng.integers(0, 1 << fmt.man_bits, count, dtype=np.int64)
    return codes | (rng.integers(0, 2, count, dtype=np.int64) << (fmt.width - 1))


def cancelling_codes(fmt: FloatFormat, product: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Codes within two steps of -product (a zero product gets +0 or a neighbour of it)."""
    magnitude = np.clip(
        nearest_code_magnitude(fmt, np.abs(product)) + rng.integers(-2, 3, len(product)), 0, (1 << (fmt.width - 1)) - 1
    )
    return magnitude | (np.where(product > 0, 1, 0).astype(np.int64) << (fmt.width - 1))


def code_values(fmt: FloatFormat) -> np.ndarray:
    """float64 value of every code (exact: formats are limited to binary64, docs §1)."""
    return np.array([float(fmt.decode(code)) for code in range(fmt.code_count)])


def nearest_code_magnitude(fmt: FloatFormat, magnitude: np.ndarray) -> np.ndarray:
    """A code (sign bit clear) whose value is within one ulp of each magnitude, clamped to the format."""
    mantissa, exponent = np.frexp(np.where(magnitude > 0, magnitude, 1.0))
    exponent_code = np.clip(exponent - 1 + fmt.bias, 0, (1 << fmt.exp_bits) - 1)
    fraction = np.floor((mantissa * 2 - 1) * (1 << fmt.man_bits)).astype(np.int64)
    code = (exponent_code.astype(np.int64) << fmt.man_bits) | np.clip(fraction, 0, (1 << fmt.man_bits) - 1)
    return np.where(magnitude > 0, code, 0)


# ------------------------------------------------------------------------------------------- reference
def expected_results(cfg: MacConfig, vectors: Vectors, processes: int = 1, progress: bool = False) -> np.ndarray:
    """The reference's packed result word for every vector (lba_core.fmaq on exact values).

    FMAq depends on a and b only through their exact product, so the reference runs once per distinct
    (product, accumulator) pair; ``processes`` > 1 spreads those runs over a process pool, ``progress``
    shows a tqdm bar.
    """
    check_packable(cfg)
    a_values = [cfg.a_format.decode(code) for code in range(cfg.a_format.code_count)]
    b_values = [cfg.b_format.decode(code) for code in range(cfg.b_format.code_count)]
    product_ids: dict[Fraction, int] = {}
    pair_ids = np.array(
        [product_ids.setdefault(x * y, len(product_ids)) for x in a_values for y in b_values], dtype=np.int64
    )
    pair = vectors.a * cfg.b_format.code_count + vectors.b
    keys = pair_ids[pair] * cfg.acc.code_count + vectors.acc
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    triples = list(zip(vectors.a[first].tolist(), vectors.b[first].tolist(), vectors.acc[first].tolist()))
    chunks = [triples[start : start + REFERENCE_CHUNK] for start in range(0, len(triples), REFERENCE_CHUNK)]
    words: list[int] = []
    with tqdm(total=len(triples), desc=f"reference {cfg.name}", unit="fma", disable=not progress) as bar:
        if processes > 1 and len(chunks) > 1:
            with multiprocessing.get_context("fork").Pool(processes) as pool:
                parts = pool.imap(functools.partial(reference_words, cfg), chunks)
                for part in parts:
                    words += part
                    bar.update(len(part))
        else:
            for chunk in chunks:
                words += reference_words(cfg, chunk)
                bar.update(len(chunk))
    return np.array(words, dtype=np.int64)[inverse.ravel()]


def reference_words(cfg: MacConfig, triples: list[tuple[int, int, int]]) -> list[int]:
    """Packed lba_core.fmaq results; decoding and encoding are memoized (they cost as much as fmaq itself)."""
    acc = cfg.acc
    a_values = cached(cfg.a_format.decode)
    b_values = cached(cfg.b_format.decode)
    acc_values = cached(acc.decode)
    acc_codes = cached(acc.encode)
    words = []
    for a, b, c in triples:
        step = fmaq(a_values(a), b_values(b), acc_values(c), cfg)
        words.append(pack_result(acc_codes(step.value), step.overflow, step.underflow, step.swamp))
    return words


def cached(function):
    """A per-call memo of a pure one-argument function."""
    memo = {}

    def lookup(key):
        if key not in memo:
            memo[key] = function(key)
        return memo[key]

    return lookup


# ------------------------------------------------------------------------------------------- simulators
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
    return np.array([int(line, 16) for line in lines], dtype=np.int64)


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


def simulate_fmaq_amaranth(cfg: MacConfig, vectors: Vectors) -> np.ndarray:
    """Run the Amaranth FMAq in Amaranth's own simulator (slow: for small focused vector sets)."""
    from amaranth.sim import Simulator

    from .fmaq import FMAq
    from .intmac import FixedFMAq

    dut = FixedFMAq(cfg) if cfg.fixed_acc else FMAq(cfg)
    words = []

    async def testbench(ctx):
        for a, b, c in zip(vectors.a.tolist(), vectors.b.tolist(), vectors.acc.tolist()):
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.acc_in, c)
            words.append(
                pack_result(ctx.get(dut.acc_out), ctx.get(dut.overflow), ctx.get(dut.underflow), ctx.get(dut.swamp))
            )

    simulator = Simulator(dut)
    simulator.add_testbench(testbench)
    simulator.run()
    return np.array(words, dtype=np.int64)


def simulate_mac_amaranth(cfg: MacConfig, cycles: list[tuple[int, int, int, int]]) -> list[int]:
    """Drive the Amaranth MAC with one (valid, clear, a, b) per clock cycle; returns ``acc`` after each edge."""
    from amaranth.sim import Simulator

    from .intmac import FixedMAC
    from .mac import MAC

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


def mismatch_report(
    cfg: MacConfig, vectors: Vectors, expected: np.ndarray, got: np.ndarray, limit: int = 5
) -> list[str]:
    """Readable lines for the first mismatching vectors."""
    lines = []
    for index in np.flatnonzero(expected != got)[:limit]:
        a, b, c = int(vectors.a[index]), int(vectors.b[index]), int(vectors.acc[index])
        lines.append(
            f"a={a:#x} ({float(cfg.a_format.decode(a))}) b={b:#x} ({float(cfg.b_format.decode(b))}) "
            f"acc={c:#x} ({float(cfg.acc.decode(c))}): expected {unpack_result(int(expected[index]))}, "
            f"got {unpack_result(int(got[index]))}"
        )
    return lines

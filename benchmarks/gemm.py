"""Benchmark of the bit-true GEMM: the naive per-step PyTorch loop, the fast path, and fp32 torch.matmul.

For (M x K) @ (K x N) with e4m3 operands and e4m7 / e5m10 accumulators, prints multiply-accumulates per second
of each and the ratios the simulator is judged by (docs/simulator.md): the fast path against fp32 matmul
(target: within 20x at 256 x 1024 x 256) and against the naive loop (target: at least 50x faster).

The naive loop is what a user would write: one elementwise step per k, rounding the accumulator with
``lba_train.quantize``. Its cost per k is constant, so it is timed over the first ``--naive-steps`` values of
k and scaled to K. With e4m3 operands the float64 sum ``acc + p`` is exact, so that loop is bit-true here
and the benchmark checks that the fast path returns the same values (on an 8 x 8 corner, over those k).

Run: ``python benchmarks/gemm.py [--quick] [--json out.json]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from lba_core import MacConfig
from lba_train import lba_matmul, quantize
from lba_train.kernels import available_kernels, plan_gemm

FULL_SHAPES = [(m, k, m) for m in (64, 256) for k in (128, 512, 2048)] + [(256, 1024, 256)]
QUICK_SHAPES = [(64, 128, 64), (256, 1024, 256)]
ACCUMULATORS = ("e4m7", "e5m10")
TARGET_SHAPE = (256, 1024, 256)
TARGET_VS_FP32 = 20.0
TARGET_VS_NAIVE = 50.0


@dataclass
class Row:
    m: int
    k: int
    n: int
    acc: str
    step: str
    naive_macs: float
    fast_macs: float
    fp32_macs: float

    @property
    def fast_over_naive(self) -> float:
        return self.fast_macs / self.naive_macs

    @property
    def fp32_over_fast(self) -> float:
        return self.fp32_macs / self.fast_macs


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def best_time(function, repeats: int, clock) -> float:
    """Fastest of ``repeats`` runs, in seconds (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        function()
        best = min(best, clock() - start)
    return best


def naive_loop(x: torch.Tensor, w: torch.Tensor, cfg: MacConfig, steps: int) -> torch.Tensor:
    """The per-step loop over the first ``steps`` values of k, rounding with quantize after every step."""
    acc = torch.zeros(x.shape[0], w.shape[1], dtype=torch.float64)
    for k in range(steps):
        acc = quantize(acc + x[:, k : k + 1] * w[k : k + 1, :], cfg.acc, cfg.rounding, cfg.underflow)
    return acc


def measure(m: int, k: int, n: int, acc: str, naive_steps: int, repeats: int, clock) -> Row:
    cfg = MacConfig("e4m3", acc)
    generator = torch.Generator().manual_seed(0)
    x = quantize(torch.randn(m, k, generator=generator, dtype=torch.float64) * 2, cfg.input)
    w = quantize(torch.randn(k, n, generator=generator, dtype=torch.float64) * 2, cfg.input)
    macs = m * n * k
    steps = min(k, naive_steps)
    corner = lba_matmul(x[:8, :steps], w[:steps, :8], cfg).double()
    if not torch.equal(naive_loop(x[:8], w[:, :8], cfg, steps), corner):
        raise AssertionError(f"fast path and naive loop disagree at {m}x{k}x{n} {acc}")
    naive_seconds = best_time(lambda: naive_loop(x, w, cfg, steps), 1, clock) * k / steps
    fast_seconds = best_time(lambda: lba_matmul(x, w, cfg), repeats, clock)
    x32, w32 = x.float(), w.float()
    fp32_seconds = best_time(lambda: torch.matmul(x32, w32), max(repeats, 10), clock)
    return Row(m, k, n, acc, plan_gemm(cfg).step, macs / naive_seconds, macs / fast_seconds, macs / fp32_seconds)


def format_table(rows: list[Row]) -> str:
    header = (
        f"{'M x K x N':>16} {'acc':>6} {'step':>10} {'naive MAC/s':>12} {'fast MAC/s':>12} {'fp32 MAC/s':>12} "
        f"{'fast/naive':>10} {'fp32/fast':>10}"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"{f'{row.m}x{row.k}x{row.n}':>16} {row.acc:>6} {row.step:>10} {row.naive_macs:>12.3e} "
            f"{row.fast_macs:>12.3e} {row.fp32_macs:>12.3e} {row.fast_over_naive:>9.0f}x {row.fp32_over_fast:>9.1f}x"
        )
    return "\n".join(lines)


def target_lines(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        if (row.m, row.k, row.n) != TARGET_SHAPE:
            continue
        vs_fp32 = "met" if row.fp32_over_fast <= TARGET_VS_FP32 else "MISSED"
        vs_naive = "met" if row.fast_over_naive >= TARGET_VS_NAIVE else "MISSED"
        lines.append(
            f"target {row.acc} at {row.m}x{row.k}x{row.n}: fast path {row.fp32_over_fast:.1f}x slower than fp32 "
            f"(<= {TARGET_VS_FP32:.0f}x: {vs_fp32}), {row.fast_over_naive:.0f}x faster than the naive loop "
            f"(>= {TARGET_VS_NAIVE:.0f}x: {vs_naive})"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two shapes instead of seven")
    parser.add_argument("--naive-steps", type=int, default=64, help="values of k timed in the naive loop (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per fast-path timing, the best is kept")
    parser.add_argument("--threads", type=int, help="threads for both torch and numba (default: all cores)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time (default); cpu: CPU time of the process, all threads summed, which on a busy "
        "machine is fairer to long runs (a short fp32 matmul often runs undisturbed, a long one never does)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.naive_steps < 1 or args.repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--naive-steps, --repeats and --threads must be positive")
    if args.threads is not None:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    print(
        f"kernels on cpu: {', '.join(available_kernels('cpu'))}; torch threads: {torch.get_num_threads()}; "
        f"clock: {args.clock}"
    )
    lba_matmul(torch.ones(2, 2), torch.ones(2, 2), MacConfig("e4m3", "e4m7"))  # compile / load the kernel first
    rows = []
    for (m, k, n), acc in tqdm([(s, a) for s in shapes for a in ACCUMULATORS], desc="gemm benchmark", file=sys.stderr):
        rows.append(measure(m, k, n, acc, args.naive_steps, args.repeats, CLOCKS[args.clock]))
    print(format_table(rows))
    for line in target_lines(rows):
        print(line)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([asdict(row) for row in rows], handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

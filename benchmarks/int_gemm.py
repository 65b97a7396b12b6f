"""Integer/fixed-point accumulation against fp32 matmul and the floating-point chain, in one process.

    python benchmarks/int_gemm.py [--size M K N] [--repeats R]

Prints the median (and min-max spread) time of each GEMM and its ratio to torch's fp32 matmul of the same
shape. Operands are already quantized (int8 values, e4m3 values), so the times are the accumulation's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lba_core import MacConfig
from lba_train.kernels import gemm_values
from lba_train.quantize import quantize


def timed(run, repeats: int) -> list[float]:
    run()  # warm-up: JIT compilation, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(256, 576, 64), metavar=("M", "K", "N"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    m, k, n = args.size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=generator, dtype=torch.float64)
    w = torch.randn(k, n, generator=generator, dtype=torch.float64)
    x8, w8 = quantize(x * 40, "int8"), quantize(w * 40, "int8")
    xf, wf = quantize(x * 4, "e4m3"), quantize(w * 4, "e4m3")
    x32, w32 = x.float(), w.float()
    cases = {
        "fp32 matmul (torch)": lambda: x32 @ w32,
        "int8 x int8 -> int32": lambda: gemm_values(x8, w8, MacConfig("int8", "int32")),
        "int8 x int8 -> int16_sat (chain)": lambda: gemm_values(x8, w8, MacConfig("int8", "int16_sat")),
        "e4m3 -> fx40.24 (exact grid)": lambda: gemm_values(xf, wf, MacConfig("e4m3", "fx40.24")),
        "e4m3 -> fp32 accumulator chain": lambda: gemm_values(xf, wf, MacConfig("e4m3", "fp32")),
        "e4m3 -> e5m6 accumulator chain": lambda: gemm_values(xf, wf, MacConfig("e4m3", "e5m6")),
    }
    print(f"GEMM {m}x{k}x{n}, {torch.get_num_threads()} torch threads, {args.repeats} repeats")
    baseline = None
    for name, run in cases.items():
        times = timed(run, args.repeats)
        median = statistics.median(times)
        baseline = baseline or median
        print(f"{name:<36} {1e3 * median:9.2f} ms  (spread {1e3 * min(times):.2f}-{1e3 * max(times):.2f})  "
              f"x{median / baseline:8.1f} fp32 matmul")


if __name__ == "__main__":
    main()

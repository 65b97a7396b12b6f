"""Benchmark of the fine-grained estimators' backward pass (lba_train.estimators.gemm_backward).

Times grad_x and grad_w of Y = X @ W for every estimator on one shape, after a warm-up call that compiles
the Numba kernel (or loads it from the cache), and prints one line per estimator plus the float baseline,
with each estimator's time relative to float32 matmuls and to the STE backward (binary64 matmuls, what
lba_matmul's autograd runs for estimator="ste") at the same shape.
Run: .venv/bin/python benchmarks/estimators.py [--rows 256 --depth 512 --columns 256 --acc e4m3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import torch

from lba_core import MacConfig
from lba_train import quantize
from lba_train.estimators import ESTIMATORS, gemm_backward


def median_seconds(work, repeats: int) -> float:
    work()  # warm-up: compilation or cache load
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="M, rows of X (default 256)")
    parser.add_argument("--depth", type=int, default=512, help="K, the accumulation length (default 512)")
    parser.add_argument("--columns", type=int, default=256, help="N, columns of W (default 256)")
    parser.add_argument("--input", default="e4m3", help="operand format (default e4m3)")
    parser.add_argument("--acc", default="e4m7", help="accumulator format (default e4m7)")
    parser.add_argument("--chunk", type=int, default=None, metavar="N", help="accumulator chunk size (default: one chain)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the median is reported")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    cfg = MacConfig(input=args.input, acc=args.acc, chunk_size=args.chunk)
    generator = torch.Generator().manual_seed(args.seed)
    x = quantize(torch.randn(args.rows, args.depth, generator=generator, dtype=torch.float64), cfg.a_format)
    w = quantize(torch.randn(args.depth, args.columns, generator=generator, dtype=torch.float64), cfg.b_format)
    g = torch.randn(args.rows, args.columns, generator=generator, dtype=torch.float64)
    steps = args.rows * args.depth * args.columns
    print(f"backward of ({args.rows}x{args.depth}) @ ({args.depth}x{args.columns}), {cfg.name}, "
          f"{numba.get_num_threads()} Numba threads, median of {args.repeats}")
    x32, w32, g32 = x.float(), w.float(), g.float()
    float_time = median_seconds(lambda: (g32 @ w32.T, x32.T @ g32), args.repeats)
    print(f"{'float32 matmul backward':>26}: {1e3 * float_time:9.2f} ms")
    ste_time = median_seconds(lambda: gemm_backward(x, w, g, cfg, "ste"), args.repeats)
    for estimator in ESTIMATORS:
        seconds = ste_time if estimator == "ste" else median_seconds(
            lambda name=estimator: gemm_backward(x, w, g, cfg, name), args.repeats)
        print(f"{estimator:>26}: {1e3 * seconds:9.2f} ms  {1e9 * seconds / steps:6.2f} ns/chain step  "
              f"{seconds / float_time:8.0f}x float32  {seconds / ste_time:8.1f}x STE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

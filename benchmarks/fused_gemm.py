"""Benchmark of the fused (tensor-core) CPU kernel against the sequential e4m7 chain, in one process.

Times ``lba_matmul(x, w, MacConfig(input="e4m3", acc=acc))`` at 256 x 1024 x 256 for e4m7 (the sequential chain)
and the fused accumulators hopper-fp8, hopper-fp8+promote128 and blackwell-fp8 (binary64 lanes), rounds
interleaved (every accumulator once per round), best and median in ms of wall time and of this process's CPU
time (``time.process_time``: on a shared, loaded machine the wall time mostly measures waiting for a core),
the load average before and after. Target (issue 24): hopper-fp8 no slower than e4m7 at this size.
``--events`` times the calls with an EventStats (as the sweep's evaluations make them: the sequential chain's
overflow/underflow/swamp counters, the fused unit's truncation statistics).

Run: ``python benchmarks/fused_gemm.py [--rounds 15] [--threads N] [--events]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from lba_core import MacConfig
from lba_train import EventStats, lba_matmul
from lba_train.quantize import quantize

SHAPE = (256, 1024, 256)
ACCUMULATORS = ("e4m7", "hopper-fp8", "hopper-fp8+promote128", "blackwell-fp8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--threads", type=int, help="Numba threads (default: every logical CPU)")
    parser.add_argument("--events", action="store_true", help="count events (stats=EventStats()) in every call")
    args = parser.parse_args(argv)
    if args.rounds < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--rounds and --threads must be positive")
    import numba

    # lba_train.kernels.vector_width: 512-bit vectors on AVX-512 hosts unless NUMBA_CPU_FEATURES was set (read
    # before any kernel runs: Numba may reload its configuration from the environment later)
    vectors = "512-bit preferred" if "-prefer-256-bit" in (numba.config.CPU_FEATURES or "") else "LLVM's default width"
    if args.threads is not None:
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    m, k, n = SHAPE
    generator = torch.Generator().manual_seed(0)
    x = quantize(torch.randn(m, k, generator=generator) * 2, "e4m3")
    w = quantize(torch.randn(k, n, generator=generator) * 2, "e4m3")
    configs = {acc: MacConfig(input="e4m3", acc=acc) for acc in ACCUMULATORS}
    for cfg in configs.values():
        lba_matmul(x, w, cfg, stats=EventStats() if args.events else None)  # compile or load every kernel first
    times = {acc: [] for acc in ACCUMULATORS}
    cpu = {acc: [] for acc in ACCUMULATORS}
    before = os.getloadavg()
    for _ in range(args.rounds):
        for acc, cfg in configs.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            lba_matmul(x, w, cfg, stats=EventStats() if args.events else None)
            times[acc].append(time.perf_counter() - started)
            cpu[acc].append(time.process_time() - started_cpu)
    after = os.getloadavg()
    print(f"{m}x{k}x{n}, {args.rounds} interleaved rounds, {numba.get_num_threads()} Numba threads, "
          f"{os.cpu_count()} CPUs, vectors: {vectors}{', events counted' if args.events else ''}; "
          f"load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, "
          f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    for acc, values in times.items():
        print(f"{acc:24s} wall best {1e3 * min(values):8.1f} ms  median {1e3 * statistics.median(values):8.1f} ms   "
              f"CPU best {1e3 * min(cpu[acc]):8.1f} ms  median {1e3 * statistics.median(cpu[acc]):8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

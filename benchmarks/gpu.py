"""GPU benchmark of the bit-true Triton GEMM kernel: exact MAC/s, ratios to torch matmul, bit-exactness check.

Prints, on one CUDA GPU:

1. a bit-exactness spot check: the Triton kernel against the CPU kernel (Numba where installed, else the
   portable PyTorch kernel on the CPU) on every step algorithm (exact sum, round-to-odd, general), with
   RTZ, chunks, subnormals, product formats and underflow off; values and event counts, mismatches counted;
2. exact MAC/s of the Triton kernel (e4m3 operands; e4m7 and e5m10 accumulators) at 4096 x 4096 x 4096 and at
   MiniLM-sized shapes (a feed-forward GEMM of 49 sentences x 128 tokens, and the batched attention
   product of 49 x 12 heads), next to torch bf16 and fp32 matmul on the same GPU, and the ratios.

Meant to finish in under 3 minutes (Triton compiles each configuration once, a few seconds each). Run it
with the GPU machine's own python3 and its CUDA torch from the repository root:

    python3 benchmarks/gpu.py [--repeats 3] [--skip-4096]

It needs lba_train's pure-Python dependencies (numpy, scipy, tqdm); a missing one is named before any work.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, installed or not

SPOT_CHECK_CONFIGS = [
    dict(input="e4m3", acc="e4m7"),
    dict(input="e4m3", acc="e5m10", chunk_size=32),
    dict(input="e4m3_sub", acc="e4m7_sub", rounding="rtz"),
    dict(input="e5m2", acc="e5m10", product="e6m3_sub", underflow=False),
    dict(input="e4m3", acc="e8m23", chunk_size=16),
    dict(input="e5m2", acc="e10m52"),
    dict(input="e5m2_sub", acc="e8m51_sub", rounding="rtz", chunk_size=8),
]
SPOT_CHECK_SHAPE = (48, 96, 80)  # M, K, N: more than one program's tile both ways
THROUGHPUT_ACCS = ("e4m7", "e5m10")
SHAPE_4096 = (4096, 4096, 4096)
MINILM_FFN = (49 * 128, 384, 1536)  # tokens x hidden -> intermediate
MINILM_ATTENTION = (49 * 12, 128, 32, 128)  # (batch x heads) x tokens x head size x tokens


def require_modules() -> None:
    missing = [name for name in ("numpy", "torch", "triton", "scipy", "tqdm") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"benchmarks/gpu.py: missing Python packages {', '.join(missing)} (pip install them; "
                         "never a different torch)")


def cuda_seconds(work, repeats: int) -> float:
    """Best wall time of ``work`` over ``repeats`` runs, synchronizing the GPU around each."""
    import torch

    work()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def operands(shape: tuple[int, ...], fmt, generator, device):
    import torch

    from lba_train.quantize import quantize

    values = torch.randn(*shape, generator=generator, dtype=torch.float64) * 2
    return quantize(values, fmt).to(torch.float64).to(device)


def spot_check(device) -> int:
    """Triton on the GPU against the CPU kernel; returns the number of mismatching elements and event counts."""
    import torch

    from lba_core import MacConfig
    from lba_train.events import EventStats
    from lba_train.kernels import available_kernels, plan_gemm
    from lba_train.kernels.dispatch import batched_gemm_values

    cpu_kernel = available_kernels("cpu")[0]
    rows, length, columns = SPOT_CHECK_SHAPE
    total_bad = 0
    print(f"bit-exactness: triton on {torch.cuda.get_device_name(device)} vs the CPU kernel ({cpu_kernel}), "
          f"2 x {rows}x{length}x{columns} per configuration")
    for fields in SPOT_CHECK_CONFIGS:
        cfg = MacConfig(**fields)
        generator = torch.Generator().manual_seed(len(cfg.name))
        x = operands((2, rows, length), cfg.a_format, generator, "cpu")
        w = operands((2, length, columns), cfg.b_format, generator, "cpu")
        gpu_stats, cpu_stats = EventStats(), EventStats()
        gpu = batched_gemm_values(x.to(device), w.to(device), cfg, stats=gpu_stats, kernel="triton").cpu().double()
        cpu = batched_gemm_values(x, w, cfg, stats=cpu_stats, kernel=cpu_kernel).double()
        bad = int((gpu != cpu).sum()) + int(gpu_stats != cpu_stats)
        total_bad += bad
        print(f"  {cfg.name:<40} {plan_gemm(cfg).step:>13}: {gpu.numel()} elements, {bad} mismatches, "
              f"events {'equal' if gpu_stats == cpu_stats else 'DIFFER'} ({gpu_stats.as_dict()})")
    return total_bad


def throughput(device, repeats: int, skip_4096: bool) -> None:
    import torch

    from lba_core import MacConfig
    from lba_train.kernels.dispatch import batched_gemm_values

    shapes = [("MiniLM feed-forward", (1,) + MINILM_FFN), ("MiniLM attention scores", MINILM_ATTENTION)]
    if not skip_4096:
        shapes.insert(0, ("4096^3", (1,) + SHAPE_4096))
    print(f"\n{'shape':>24} {'B x M x K x N':>22} {'acc':>6} {'triton exact MAC/s':>19} {'bf16 MAC/s':>11} "
          f"{'fp32 MAC/s':>11} {'bf16/triton':>11} {'fp32/triton':>11}")
    for label, (batch, rows, length, columns) in shapes:
        macs = batch * rows * length * columns
        generator = torch.Generator().manual_seed(0)
        x = operands((batch, rows, length), "e4m3", generator, "cpu").to(device)
        w = operands((batch, length, columns), "e4m3", generator, "cpu").to(device)
        x32, w32 = x.float(), w.float()
        x16, w16 = x.bfloat16(), w.bfloat16()  # e4m3 values are exact in bf16
        bf16 = macs / cuda_seconds(lambda: torch.bmm(x16, w16), max(repeats, 10))
        fp32 = macs / cuda_seconds(lambda: torch.bmm(x32, w32), max(repeats, 10))
        for acc in THROUGHPUT_ACCS:
            cfg = MacConfig(input="e4m3", acc=acc)
            exact = macs / cuda_seconds(lambda: batched_gemm_values(x, w, cfg, kernel="triton"), repeats)
            print(f"{label:>24} {f'{batch}x{rows}x{length}x{columns}':>22} {acc:>6} {exact:>19.3e} {bf16:>11.3e} "
                  f"{fp32:>11.3e} {bf16 / exact:>10.0f}x {fp32 / exact:>10.0f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per kernel, the best is kept")
    parser.add_argument("--skip-4096", action="store_true", help="leave out the 4096^3 product")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be positive")
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("TRITON_INTERPRET=1 is set: this benchmark times the compiled kernel on a GPU; unset it")
    require_modules()
    import torch

    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device is visible to torch; run it on a GPU machine", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    started = time.perf_counter()
    print(f"torch {torch.__version__}, triton {__import__('triton').__version__}, {torch.cuda.get_device_name(device)}")
    mismatches = spot_check(device)
    throughput(device, args.repeats, args.skip_4096)
    print(f"\nbit-exactness: {mismatches} mismatches in total; {time.perf_counter() - started:.0f} s")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

"""Whole-model cost of the simulator: the lbaify'd MiniLM and a MobileNetV3-small against their float forwards.

In one process, with pinned thread counts and interleaved rounds (the protocol of benchmarks/gemm.py):

- **MiniLM** (all-MiniLM-L6-v2, the transformers extra): the 147 evaluation sentences of
  data/sentences/eval.txt in batches of 49, every Linear and both attention products on e4m3 x e4m7
  (``lbaify_minilm``), against the float forward of the same batches; and one fine-tuning step (forward and
  backward of a squared-embedding loss on the first batch) of each;
- **MobileNetV3-small** (built here with random weights, 224 x 224 inputs, batch 2: no torchvision), every
  Conv2d (depthwise ones included) and Linear on the same accumulator, against its float forward.

Prints best and median per model, the ratio of the bests, the load average before and after, the machine's
busy/steal share over the run (/proc/stat) and a profile summary (cProfile, by own time) of one simulated
forward of each model. ``--report FILE`` writes the same as markdown.

Run: ``python benchmarks/models.py [--rounds 3] [--threads 2] [--skip-minilm] [--report reports/gemm/models.md]``
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gemm as gemm_benchmark  # noqa: E402  (the shared protocol helpers: /proc/stat, machine lines)

from lba_core import MacConfig  # noqa: E402
from lba_core.fileio import atomic_write_text, markdown_table  # noqa: E402
from lba_train import lbaify  # noqa: E402

CFG = MacConfig(input="e4m3", acc="e4m7")
SENTENCES = Path(__file__).resolve().parents[1] / "data/sentences/eval.txt"
BATCH = 49
# MobileNetV3-small (Howard et al., 2019, table 2): kernel, expansion, output channels, SE, hard-swish, stride.
MOBILENET_V3_SMALL = [
    (3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1),
]


def divisible(value: float, divisor: int = 8) -> int:
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        squeezed = divisible(channels / 4)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        scale = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.expand(nn.functional.relu(self.reduce(scale))))


class InvertedResidual(nn.Module):
    def __init__(self, inputs: int, kernel: int, expanded: int, outputs: int, se: bool, hswish: bool, stride: int):
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != inputs:
            layers += [nn.Conv2d(inputs, expanded, 1, bias=False), nn.BatchNorm2d(expanded), act()]
        layers += [nn.Conv2d(expanded, expanded, kernel, stride, kernel // 2, groups=expanded, bias=False),
                   nn.BatchNorm2d(expanded), act()]
        if se:
            layers.append(SqueezeExcite(expanded))
        layers += [nn.Conv2d(expanded, outputs, 1, bias=False), nn.BatchNorm2d(outputs)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and inputs == outputs

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


def mobilenet_v3_small(classes: int = 1000) -> nn.Module:
    """MobileNetV3-small with random weights (torchvision's layout, without torchvision), eval mode."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()]
    channels = 16
    for kernel, expanded, outputs, se, hswish, stride in MOBILENET_V3_SMALL:
        layers.append(InvertedResidual(channels, kernel, expanded, outputs, se, hswish, stride))
        channels = outputs
    layers += [nn.Conv2d(channels, 576, 1, bias=False), nn.BatchNorm2d(576), nn.Hardswish(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(576, 1024), nn.Hardswish(), nn.Linear(1024, classes)]
    return nn.Sequential(*layers).eval()


def interleaved(first, second, rounds: int) -> tuple[list[float], list[float]]:
    """Per round: wall seconds of ``first()`` then of ``second()``."""
    first_times, second_times = [], []
    for _ in range(rounds):
        for call, times in ((first, first_times), (second, second_times)):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
    return first_times, second_times


def profile_summary(call, lines: int = 12) -> str:
    profile = cProfile.Profile()
    profile.enable()
    call()
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(lines)
    body = text.getvalue()
    return body[body.index("ncalls"):].rstrip() if "ncalls" in body else body.rstrip()


def shape_profile(call) -> str:
    """Kernel time of one simulated forward by GEMM shape (B, M, K, N): calls, seconds, ns per MAC (wall).

    Wraps ``lba_train.gemm.batched_gemm_values`` (the one kernel entry of every LBA layer) for the call only.
    """
    import lba_train.gemm as gemm_module

    original = gemm_module.batched_gemm_values
    shapes: dict[tuple[int, int, int, int], list[float]] = {}

    def timed(x_q, w_q, *args, **kwargs):
        started = time.perf_counter()
        values = original(x_q, w_q, *args, **kwargs)
        entry = shapes.setdefault((x_q.shape[0], x_q.shape[1], x_q.shape[2], w_q.shape[2]), [0, 0.0])
        entry[0] += 1
        entry[1] += time.perf_counter() - started
        return values

    gemm_module.batched_gemm_values = timed
    try:
        call()
    finally:
        gemm_module.batched_gemm_values = original
    rows = []
    for (batch, m, k, n), (calls, seconds) in sorted(shapes.items(), key=lambda item: -item[1][1]):
        macs = calls * batch * m * k * n
        rows.append([f"{batch}×({m}×{k} @ {k}×{n})", str(calls), f"{macs / 1e6:,.0f}", f"{seconds:.3f} s",
                     f"{seconds / macs * 1e9:.3f}"])
    total = sum(seconds for _, seconds in shapes.values())
    return markdown_table(["GEMM shape B×(M×K @ K×N)", "calls", "MMAC", "time in batched_gemm_values", "ns/MAC"], rows,
                          "lrrrr") + f"\n\n{total:.3f} s in {sum(c for c, _ in shapes.values())} calls."


def row(name: str, lba_times: list[float], float_times: list[float]) -> list[str]:
    return [name, f"{min(lba_times):.3f} / {statistics.median(lba_times):.3f} s",
            f"{min(float_times):.4f} / {statistics.median(float_times):.4f} s",
            f"{min(lba_times) / min(float_times):.1f}×"]


def minilm_rows(rounds: int) -> tuple[list[list[str]], tuple[str, str]]:
    from lba_train import minilm

    missing = minilm.extra_missing()
    if missing:
        raise SystemExit(f"benchmarks/models.py: MiniLM needs the transformers extra ({missing}); or --skip-minilm")
    encoder = minilm.load_minilm()
    simulated = minilm.lbaify_minilm(encoder, CFG)
    batches = minilm.tokenize(minilm.load_tokenizer(), minilm.read_sentences(SENTENCES), batch_size=BATCH)

    def forward(model):
        return lambda: minilm.embed(model, batches)

    forward(simulated)(), forward(encoder)()  # compile or load every kernel variant
    lba_times, float_times = interleaved(forward(simulated), forward(encoder), rounds)

    def step(model):
        def run():
            model.zero_grad(set_to_none=True)
            model(**batches[0]).pow(2).sum().backward()
        return run

    step(simulated)()
    lba_steps, float_steps = interleaved(step(simulated), step(encoder), rounds)
    rows = [row(f"MiniLM forward, 147 sentences in batches of {BATCH}", lba_times, float_times),
            row(f"MiniLM fine-tuning step (forward + backward, one batch of {BATCH})", lba_steps, float_steps)]
    shapes = ("By GEMM shape (one simulated forward, events counted as lbaify's layers do by default):\n\n"
              + shape_profile(forward(simulated)))
    return rows, (profile_summary(forward(simulated)), shapes)


def mobilenet_rows(rounds: int) -> tuple[list[list[str]], tuple[str, str]]:
    model = mobilenet_v3_small()
    simulated = lbaify(model, CFG).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))

    def forward(net):
        def run():
            with torch.no_grad():
                net(x)
        return run

    forward(simulated)(), forward(model)()
    lba_times, float_times = interleaved(forward(simulated), forward(model), rounds)
    return [row("MobileNetV3-small forward (random init, 2 x 3 x 224 x 224)", lba_times, float_times)], \
        (profile_summary(forward(simulated)), "By GEMM shape (one simulated forward):\n\n" + shape_profile(forward(simulated)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per model (default 3)")
    parser.add_argument("--threads", type=int, help="threads for both torch and numba, pinned (default: every logical CPU)")
    parser.add_argument("--skip-minilm", action="store_true", help="only MobileNetV3-small (no transformers extra)")
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write the results as markdown there")
    args = parser.parse_args(argv)
    if args.rounds < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--rounds and --threads must be positive")
    import numba

    threads = args.threads if args.threads is not None else os.cpu_count() or 1
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    command = "python benchmarks/models.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    header = gemm_benchmark.machine_lines(command.strip())[:-1]  # without the GEMM peer line
    print("\n".join(header), flush=True)
    before, own_before, wall_before = gemm_benchmark.proc_stat(), time.process_time(), time.perf_counter()
    rows, profiles = [], []
    for name, part in [("MiniLM", minilm_rows), ("MobileNetV3-small", mobilenet_rows)]:
        if name == "MiniLM" and args.skip_minilm:
            continue
        part_rows, profile = part(args.rounds)
        rows += part_rows
        profiles.append((name, profile))
    shares = gemm_benchmark.cpu_shares(before, gemm_benchmark.proc_stat(), time.process_time() - own_before,
                                       time.perf_counter() - wall_before)
    after = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    header += [f"load average after the run: {after}"] + ([shares.line()] if shares else [])
    table = markdown_table([f"model ({CFG.name})", "simulated best / median", "float best / median",
                            "ratio (best/best)"], rows, "lrrr")
    sections = "\n\n".join(f"Profile of one simulated {name} forward (cProfile, by own time):\n\n```\n{profile}\n```"
                           + (f"\n\n{shapes}" if shapes else "") for name, (profile, shapes) in profiles)
    body = "\n".join(f"- {line}" for line in header) + "\n\n" + table + "\n\n" + sections + "\n"
    print(body)
    if args.report is not None:
        atomic_write_text(args.report, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of fine-tuning a real-sized network on the simulated accumulator: seconds per image, measured here.

Builds ResNet-18 (the torchvision architecture, written out below because torchvision is not a dependency;
random weights: the cost does not depend on them) for 224 x 224 ImageNet inputs, converts every Conv2d and
Linear with ``lbaify`` (e4m3 inputs, e4m7 accumulator), and times, interleaved round by round, one eval
forward and one training step (forward, backward with the STE, Adam) of a batch. Counts the multiply-accumulates
of the converted layers with forward hooks, so it prints the effective simulated MAC/s of a whole network
(quantization and the float backward included), the spread over the rounds, and what one ImageNet epoch
(1,281,167 training images, 50,000 validation images) costs on one such process. Times are wall-clock and
this process's CPU time: on a loaded machine the CPU time says what the simulator costs, the wall time what
the machine gave it.

Run: ``python benchmarks/epoch_cost.py [--batch 2] [--rounds 3] [--threads 1]`` (docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch import nn

from lba_core import MacConfig
from lba_train.convert import lbaify, set_lba_config

IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.down = (nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))
                     if stride != 1 or inputs != outputs else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


def resnet18(classes: int = 1000) -> nn.Module:
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    channels = 64
    for outputs, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(channels, outputs, stride), BasicBlock(outputs, outputs, 1)]
        channels = outputs
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


def macs_per_image(model: nn.Module, image: torch.Tensor) -> int:
    """Multiply-accumulates of the Conv2d and Linear layers for one image (what lbaify puts on the accumulator)."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kernel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * kernel
        else:
            total += output[0].numel() * module.in_features

    hooks = [module.register_forward_hook(count) for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(image[:1])
    for hook in hooks:
        hook.remove()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--acc", default="e4m7")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, labels = torch.randn(args.batch, 3, 224, 224), torch.randint(0, 1000, (args.batch,))
    float_model = resnet18()
    macs = macs_per_image(float_model, images)
    model = lbaify(float_model, MacConfig(input="e4m3", acc=args.acc))
    set_lba_config(model, underflow=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    evals, steps, eval_cpu, step_cpu = [], [], [], []
    load_before = os.getloadavg()
    for round_index in range(args.rounds + 1):  # round 0 compiles the kernels and is not counted
        started, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            model.eval()(images)
        eval_s, eval_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        model.train()
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        step_s, step_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        if round_index:
            evals.append(eval_s / args.batch)
            steps.append(step_s / args.batch)
            eval_cpu.append(eval_cpu_s / args.batch)
            step_cpu.append(step_cpu_s / args.batch)
    load = (*load_before, *os.getloadavg())
    eval_best, step_best = min(eval_cpu), min(step_cpu)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch "
          f"{torch.__version__} with {args.threads} thread(s); load average (1, 5, 15 min) before "
          f"{', '.join(f'{value:.2f}' for value in load[:3])}, after {', '.join(f'{value:.2f}' for value in load[3:])}")
    print(f"ResNet-18 at 224x224, e4m3 inputs, {args.acc} accumulator, batch {args.batch}, {args.rounds} rounds: "
          f"{macs / 1e9:.3f} GMAC per image on the accumulator")
    for name, wall, cpu in (("eval forward", evals, eval_cpu), ("training step", steps, step_cpu)):
        print(f"{name}: CPU {min(cpu):.2f} s/image best, {statistics.median(cpu):.2f} median, {max(cpu):.2f} max "
              f"({macs / min(cpu):.3g} simulated MAC per CPU-second); wall {min(wall):.2f} best, "
              f"{statistics.median(wall):.2f} median, {max(wall):.2f} max")
    epoch_s = IMAGENET_TRAIN * step_best + IMAGENET_VAL * eval_best
    print(f"one ImageNet epoch (train + validation) at the best CPU times: {epoch_s / 3600:,.0f} CPU-hours "
          f"({epoch_s / 3600 / 24:,.1f} CPU-days) of this simulator")


if __name__ == "__main__":
    main()

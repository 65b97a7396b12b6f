"""Small classifiers for the fine-tuning experiments: an MLP, a ResNet-style CNN with batch norm and a
Transformer encoder whose attention products are :class:`~lba_train.layers.MatMul` modules (so lbaify puts
Q·K^T and softmax·V on the accumulator too). Sized for 8x8 digits; they accept any (C, H, W) input."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from lba_core import ConfigError

from .layers import MatMul

MODEL_NAMES = ("mlp", "resnet", "transformer")


class MLP(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], classes: int, hidden: tuple[int, ...] = (128, 64)) -> None:
        super().__init__()
        widths = [input_shape[0] * input_shape[1] * input_shape[2], *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1-convolution) shortcut."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], classes: int, widths: tuple[int, ...] = (8, 16)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks = [BasicBlock(widths[0], widths[0])]
        blocks += [BasicBlock(width_in, width_out, stride=2) for width_in, width_out in itertools.pairwise(widths)]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class Attention(nn.Module):
    """Multi-head self-attention whose two activation products are MatMul modules."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.scores = MatMul()
        self.mix = MatMul()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        # Scaling q before the product keeps the scores' magnitude (and so the accumulator's range) in check.
        weights = torch.softmax(self.scores(q * (dim // self.heads) ** -0.5, k.transpose(-2, -1)), dim=-1)
        mixed = self.mix(weights, v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(mixed)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """Patches of the image as tokens, a learned position embedding, pre-norm encoder layers, mean pooling."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        classes: int,
        dim: int = 32,
        heads: int = 2,
        depth: int = 2,
        hidden: int = 64,
        tokens_per_side: int = 4,
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.patch = max(1, min(height, width) // tokens_per_side)
        tokens = (height // self.patch) * (width // self.patch)
        self.embed = nn.Linear(channels * self.patch * self.patch, dim)
        self.position = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.normal_(self.position, std=0.02)
        self.layers = nn.Sequential(*[EncoderLayer(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(x, self.patch, stride=self.patch).transpose(1, 2)  # (batch, tokens, C * p * p)
        tokens = self.embed(patches) + self.position
        return self.head(self.norm(self.layers(tokens)).mean(dim=1))


#: Largest :func:`build_model` width multiplier: at 64 the digits ResNet's widest convolution sums 9216
#: products per output, beyond any layer of the paper's ResNet-50 and BERT.
MAX_WIDTH = 64


def _widened(name: str, width: int) -> dict:
    """The constructor keywords that make ``name`` ``width`` times wider than its default."""
    if name == "mlp":
        return {"hidden": (128 * width, 64 * width)}
    if name == "resnet":
        return {"widths": (8 * width, 16 * width)}
    return {"dim": 32 * width, "hidden": 64 * width}


def build_model(name: str, input_shape: tuple[int, int, int], classes: int, seed: int = 0, width: int = 1) -> nn.Module:
    """One of :data:`MODEL_NAMES`, initialised deterministically from ``seed``. ``width`` multiplies every
    hidden width (MLP hidden layers, ResNet channels, Transformer model and MLP widths), so every dot product
    but the first layer's sums ``width`` times more products (K) and the MACs grow about ``width``²: the knob
    that makes accumulations long (docs/sweep.md, "Long accumulations")."""
    builders = {"mlp": MLP, "resnet": SmallResNet, "transformer": TinyTransformer}
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= MAX_WIDTH:
        raise ConfigError(f"width must be an integer from 1 to {MAX_WIDTH}, got {width!r}")
    if name not in builders:
        raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ConfigError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
    if classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builders[name](tuple(input_shape), classes, **_widened(name, width))

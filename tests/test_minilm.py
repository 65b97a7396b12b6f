"""all-MiniLM-L6-v2 on the low-bit-width accumulator (lba_train.minilm).

The model tests need the optional extra (``pip install '.[transformers]'``) and are skipped without it; the
sentence-file and error-message tests run everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lba_core import MacConfig
from lba_train import layers, minilm
from lba_train.bias import resolve_bias
from lba_train.layers import LayerOptions, LBALinear, LBAMatMul

DATA = Path(__file__).resolve().parents[1] / "data" / "sentences"
SENTENCES = ["The train to the coast leaves at seven every morning.", "A fox crept through the snow looking for food."]
LAYERS, LINEARS_PER_LAYER = 6, 6  # query, key, value, attention output, FFN in, FFN out

needs_extra = pytest.mark.skipif(minilm.extra_missing() is not None,
                                 reason=f"optional MiniLM extra absent: {minilm.extra_missing()}")


def test_sentence_files_are_disjoint_and_sized():
    evaluation = minilm.read_sentences(DATA / "eval.txt")
    finetuning = minilm.read_sentences(DATA / "finetune.txt")
    assert 100 <= len(evaluation) <= 200 and 200 <= len(finetuning) <= 400
    assert len(set(evaluation)) == len(evaluation) and len(set(finetuning)) == len(finetuning)
    assert minilm.sentences_disjoint(evaluation, finetuning)
    assert not minilm.sentences_disjoint(evaluation, [evaluation[3].upper()])


def test_missing_extra_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, minilm.MODEL_PACKAGE, None)  # makes the import fail as if uninstalled
    with pytest.raises(minilm.MissingExtraError, match=r"pip install '\.\[transformers\]'"):
        minilm.model_dir()


def test_metrics_against_hand_computed_values():
    reference = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    swapped = reference[[0, 1, 3, 2, 4, 5]]  # sentences 2 and 3 exchange their embeddings
    metrics = minilm.embedding_metrics(swapped, reference)
    cross = F.cosine_similarity(reference[2], reference[3], dim=0)
    assert metrics.mean_cosine == pytest.approx(float((4 + 2 * cross) / 6))
    assert metrics.top1 == pytest.approx(4 / 6) and metrics.spearman < 1
    scaled = minilm.embedding_metrics(reference * 3, reference)  # scale changes no cosine
    assert scaled.as_dict() == pytest.approx({"mean_cosine": 1.0, "spearman": 1.0, "top1": 1.0})
    negated = minilm.embedding_metrics(-reference, reference)  # every pairwise cosine keeps its value
    assert negated.mean_cosine == pytest.approx(-1.0) and negated.spearman == pytest.approx(1.0)


@pytest.fixture
def one_thread():
    """Single-threaded torch and Numba: on a busy machine every small GEMM of a multi-threaded run waits for
    a second core, which made this test several times slower."""
    import numba

    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    numba.set_num_threads(numba_threads)


@pytest.fixture(scope="module")
def model_and_tokens():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # any attempt to reach the hub would now fail loudly
        encoder, tokenizer = minilm.load_minilm(), minilm.load_tokenizer()
    (batch,) = minilm.tokenize(tokenizer, SENTENCES, batch_size=len(SENTENCES))
    return encoder, tokenizer, batch


@needs_extra
def test_loader_matches_the_model_card_recipe(model_and_tokens, comparisons):
    """Our encoder (attention rewritten on MatMul modules) against transformers' own BERT, pooled as the
    model card says."""
    from transformers import AutoModel

    encoder, _, batch = model_and_tokens
    stock = AutoModel.from_pretrained(str(minilm.model_dir()), local_files_only=True).eval()
    with torch.no_grad():
        tokens = stock(**batch)[0]
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = F.normalize((tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=1)
        got = encoder(**batch)
    mismatches = int((~torch.isclose(got, expected, atol=1e-5, rtol=0)).sum())
    comparisons("MiniLM FP32 embeddings vs transformers BertModel + mean pooling", got.numel(), mismatches)
    assert got.shape == (len(SENTENCES), 384) and mismatches == 0
    assert torch.allclose(got.norm(dim=1), torch.ones(len(SENTENCES)), atol=1e-6)


@needs_extra
def test_lba_forward_routes_every_product_through_the_accumulator(model_and_tokens, monkeypatch, comparisons,
                                                                  one_thread):
    encoder, _, batch = model_and_tokens
    cfg = resolve_bias(MacConfig(input="e4m3", acc="e5m10"), "paper")  # e5m10_b14 for e4m3 products
    calls = {"bmm": 0, "linear": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(layers, "lba_bmm", counting("bmm", layers.lba_bmm))
    monkeypatch.setattr(layers, "lba_linear", counting("linear", layers.lba_linear))
    lba = minilm.lbaify_minilm(encoder, cfg, LayerOptions(collect_stats=True))
    modules = list(lba.modules())
    assert not any(type(m) is torch.nn.Linear for m in modules), "a Linear stayed in high precision"
    assert sum(isinstance(m, LBALinear) for m in modules) == LAYERS * LINEARS_PER_LAYER
    assert sum(isinstance(m, LBAMatMul) for m in modules) == LAYERS * 2
    with torch.no_grad():
        reference, got = encoder(**batch), lba(**batch)
    assert calls == {"bmm": LAYERS * 2, "linear": LAYERS * LINEARS_PER_LAYER}
    assert torch.isfinite(got).all()
    cosine = (got * reference).sum(dim=1)
    # Measured 0.908 and 0.921 (e4m3 operands alone, with an FP32-range accumulator, give about 0.997).
    comparisons("MiniLM e4m3 x e5m10 embeddings: cosine to FP32 > 0.85", len(SENTENCES), int((cosine <= 0.85).sum()))
    assert (cosine > 0.85).all(), cosine
    attention = [m for m in modules if isinstance(m, LBAMatMul)]
    assert all(m.stats.steps > 0 for m in attention), "attention products recorded no MAC steps"

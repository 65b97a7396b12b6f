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
from lba_train import layers, minilm, minilm_distill
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


# ------------------------------------------------------------------ intervals and distillation (no extra)
def _noisy(reference: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    return reference + scale * torch.randn(reference.shape, generator=torch.Generator().manual_seed(seed))


def test_bootstrap_intervals_and_paired_differences():
    reference = torch.randn(60, 16, generator=torch.Generator().manual_seed(1))
    close, far = _noisy(reference, 0.3, 2), _noisy(reference, 0.6, 3)
    result = minilm.bootstrap_metrics(far, reference, close, resamples=300, seed=0)
    point = minilm.embedding_metrics(far, reference)
    for name in minilm.METRIC_NAMES:
        interval = result.metrics[name]
        assert interval.estimate == pytest.approx(getattr(point, name))
        assert interval.low <= interval.estimate <= interval.high
    cosines = F.cosine_similarity(far, reference, dim=1).double()
    normal_half = 1.96 * float(cosines.std()) / len(cosines) ** 0.5  # the bootstrap should agree with the CLT
    mean_cosine = result.metrics["mean_cosine"]
    assert (mean_cosine.high - mean_cosine.low) / 2 == pytest.approx(normal_half, rel=0.25)
    assert result.difference["mean_cosine"].high < 0 and result.difference["spearman"].high < 0
    assert result.differs()
    again = minilm.bootstrap_metrics(far, reference, close, resamples=300, seed=0)
    assert again == result  # seeded
    same = minilm.bootstrap_metrics(close, reference, close.clone(), resamples=50)
    assert all(interval == minilm.MetricInterval(0.0, 0.0, 0.0) for interval in same.difference.values())
    assert not same.differs()
    assert minilm.bootstrap_metrics(close, reference, resamples=20).difference is None


def test_bootstrap_spearman_leaves_out_pairs_of_one_sentence_drawn_twice():
    """The Spearman of a resample without duplicate pairs equals scipy's on those pairs: checked through a
    two-point bootstrap whose interval must lie within [-1, 1] and contain no NaN."""
    reference = torch.randn(5, 4, generator=torch.Generator().manual_seed(4))
    result = minilm.bootstrap_metrics(_noisy(reference, 0.5, 5), reference, resamples=200)
    spearman = result.metrics["spearman"]
    assert -1 <= spearman.low <= spearman.high <= 1


def test_held_out_split_is_seeded_and_disjoint():
    sentences = [f"sentence number {i}" for i in range(20)]
    train, held = minilm.held_out_split(sentences, 5, seed=3)
    assert len(held) == 5 and len(train) == 15 and minilm.sentences_disjoint(train, held)
    assert sorted(train + held) == sorted(sentences)
    assert minilm.held_out_split(sentences, 5, seed=3) == (train, held)
    assert minilm.held_out_split(sentences, 5, seed=4) != (train, held)
    with pytest.raises(ValueError, match="held_out"):
        minilm.held_out_split(sentences, 20)


def test_distill_schedule_warms_up_and_decays():
    config = minilm_distill.DistillConfig(lr=1e-4, warmup_steps=4)
    rates = [config.lr_at(step, 100) for step in range(100)]
    assert rates[:5] == sorted(rates[:5]) and max(rates) == pytest.approx(1e-4)
    assert rates[4:] == sorted(rates[4:], reverse=True) and rates[-1] < 1e-7
    for bad in ({"patience": 0}, {"eval_every": 0}, {"warmup_steps": -1}, {"lr": 0}):
        with pytest.raises(ValueError):
            minilm_distill.DistillConfig(**bad)


class _ToyEncoder(torch.nn.Module):
    """A normalized linear map, called like the sentence encoder (keyword token tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x), dim=1)


def _toy_data(count: int, seed: int, mapping: torch.Tensor) -> tuple[list, list]:
    inputs = torch.randn(count, 4, 6, generator=torch.Generator().manual_seed(seed))
    return [{"x": x} for x in inputs], [F.normalize(x @ mapping, dim=1) for x in inputs]


def test_distill_converges_and_early_stopping_keeps_the_best_weights():
    torch.manual_seed(0)
    mapping = torch.randn(6, 6, generator=torch.Generator().manual_seed(9))
    batches, targets = _toy_data(12, 1, mapping)
    held = _toy_data(3, 2, mapping)
    student = _ToyEncoder()
    start = minilm_distill.held_out_loss(student, *held)
    config = minilm_distill.DistillConfig(60, 60, lr=3e-2, eval_every=10, patience=3)
    good = minilm_distill.distill(student, batches, targets, config, progress=False, held_out=held)
    assert good.steps == len(good.losses) == sum(good.stage_steps)
    assert minilm_distill.held_out_loss(student, *held) < 0.5 * start
    # held-out targets that training moves away from (the opposite map): the first measurement is the best,
    # the stage stops after `patience` worse ones and its start's weights come back
    opposite = _toy_data(3, 2, -mapping)
    drifting = _ToyEncoder()
    before = {name: value.clone() for name, value in drifting.state_dict().items()}
    config = minilm_distill.DistillConfig(50, 5, lr=3e-2, warmup_steps=0, eval_every=1, patience=2)
    result = minilm_distill.distill(drifting, batches, targets, config, progress=False, held_out=opposite)
    measured = [loss for _, stage, loss in result.held_out if stage == 1]
    assert measured[1:] > [measured[0]] * (len(measured) - 1) and len(measured) == 3
    assert result.stage_steps[0] == 2 and result.kept_step[0] == 0
    stage2 = [loss for _, stage, loss in result.held_out if stage == 2]
    assert stage2[0] == pytest.approx(measured[0])  # stage 2 began from the restored weights
    if result.kept_step[1] == result.stage_steps[0]:
        assert all(torch.equal(before[name], value) for name, value in drifting.state_dict().items())

"""The language-model workload (lba_train.lm): corpus split, windows, model and KV cache, bootstrap, evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lba_core import ConfigError, MacConfig
from lba_train import lbaify
from lba_train.lm.checkpoint import load_model, save_model
from lba_train.lm.corpus import ARCHIVE, DEFAULT_CACHE, MANIFEST, split_documents
from lba_train.lm.evaluate import LMEvalOptions, evaluate_accumulators, freeze_operand_ranges
from lba_train.lm.model import ByteLM, LMConfig, decode_logits
from lba_train.lm.stats import bootstrap_mean, paired_difference
from lba_train.lm.train import LMTrainOptions, train_lm
from lba_train.lm.windows import evaluation_windows

TINY = LMConfig(d_model=16, heads=2, layers=1, d_ff=32, context=16)
FP32 = MacConfig(input="e4m3", acc="fp32")
NARROW = MacConfig(input="e4m3", acc="e4m3")


def tiny_text(documents: int = 6) -> dict[str, bytes]:
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly kings".split()
    rng = np.random.default_rng(1)
    return {f"doc{i}": " ".join(rng.choice(words, size=120)).encode() for i in range(documents)}


def tiny_model(seed: int = 0) -> ByteLM:
    torch.manual_seed(seed)
    return ByteLM(TINY).eval()


def test_split_is_by_document_and_fixed():
    docs = tiny_text(8)
    corpus = split_documents(docs, test=2, validation=1)
    names = [set(corpus.train), set(corpus.validation), set(corpus.test)]
    assert sum(map(len, names)) == 8 and not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert (len(corpus.test), len(corpus.validation)) == (2, 1)
    assert split_documents(dict(reversed(list(docs.items()))), test=2, validation=1) == corpus
    with pytest.raises(ConfigError, match="leave at least one"):
        split_documents(docs, test=4, validation=4)
    with pytest.raises(ConfigError, match="non-empty bytes"):
        split_documents({"a": "text"})


def test_evaluation_windows_are_cut_per_document():
    docs = {"a": bytes(range(10)), "b": bytes(range(100, 107))}
    windows = evaluation_windows(docs, 4)
    assert windows.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [100, 101, 102, 103]]
    assert evaluation_windows(docs, 4, 2).tolist() == [[0, 1, 2, 3], [100, 101, 102, 103]]
    with pytest.raises(ConfigError, match="no document has 20 bytes"):
        evaluation_windows(docs, 20)


def test_bootstrap_intervals():
    values = np.arange(20, dtype=float)
    interval = bootstrap_mean(values, resamples=500)
    assert interval.value == pytest.approx(9.5) and interval.low < 9.5 < interval.high
    assert bootstrap_mean(values, resamples=500) == interval  # seeded
    shifted = paired_difference(values + 0.25, values, resamples=500)
    assert (shifted.value, shifted.low, shifted.high) == (0.25, 0.25, 0.25)
    assert math.isnan(bootstrap_mean([1.0, math.nan]).low)
    with pytest.raises(ValueError, match="same windows"):
        paired_difference([1.0, 2.0], [1.0])


def test_kv_cache_float_matches_full_forward_closely():
    model = tiny_model()
    ids = torch.randint(0, 256, (2, TINY.context), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full, cached = model(ids), decode_logits(model, ids)
    # torch's float32 BLAS sums in a shape-dependent order: close, not bit-identical (docs/lm.md)
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [FP32, NARROW], ids=["fp32", "e4m3"])
def test_kv_cache_on_the_accumulator_is_bit_identical(cfg):
    torch.manual_seed(0)
    short = LMConfig(d_model=16, heads=2, layers=1, d_ff=32, context=8)  # 8 decoding steps: seconds under load
    model = lbaify(ByteLM(short).eval(), cfg, intercept=False).eval()
    ids = torch.randint(0, 256, (2, short.context), generator=torch.Generator().manual_seed(1))
    freeze_operand_ranges(model, ids)
    with torch.no_grad():
        full = model(ids)
        assert torch.equal(decode_logits(model, ids), full)
        assert torch.equal(decode_logits(model, ids, step=3), full)
    assert torch.isfinite(full).all()


def test_every_product_runs_on_the_accumulator():
    ids = torch.randint(0, 256, (1, TINY.context), generator=torch.Generator().manual_seed(2))
    converted = lbaify(tiny_model(), NARROW, example_inputs=ids)
    coverage = converted.lba_coverage
    assert coverage.macs_float == 0 and coverage.macs_accumulator > 0
    kinds = sorted(set(coverage.converted.values()))
    assert kinds == ["LBALinear", "LBAMatMul"] and "head" in coverage.converted


def test_user_text_and_model_end_to_end(tmp_path):
    corpus = split_documents(tiny_text(6), test=2, validation=1)
    result = train_lm(corpus.train, corpus.validation, TINY,
                      LMTrainOptions(steps=4, batch=2, log_every=2, validation_windows=2, threads=1))
    assert [entry["step"] for entry in result.log] == [2, 4]
    assert all(math.isfinite(entry["validation_bpb"]) for entry in result.log)
    save_model(result.model, tmp_path / "lm.pt")
    model = load_model(tmp_path / "lm.pt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, result.model.state_dict()[name])
    options = LMEvalOptions(windows=4, calibration_windows=2, batch=2, resamples=200)
    evaluation = evaluate_accumulators(model, corpus.test, corpus.train, [FP32, NARROW], options)
    base, narrow = evaluation.points
    assert (base.name, narrow.name, narrow.baseline, base.delta_bpb) == (FP32.name, NARROW.name, FP32.name, None)
    assert base.windows == 4 and base.tokens == 4 * TINY.context
    assert abs(base.bpb.value - evaluation.float_bpb.value) < 0.05 and base.top1.value > 0.9
    assert narrow.delta_bpb.value == pytest.approx(narrow.bpb.value - base.bpb.value)
    assert narrow.kl_bits.value > base.kl_bits.value >= 0
    narrow_rows = {row["layer"]: row for row in narrow.layers}
    assert narrow_rows["head"]["steps"] > 0 and narrow_rows["head"]["nan"] == 0
    assert narrow.nan == 0 and narrow.inf == 0 and narrow.seconds > 0
    json.dumps(evaluation.as_dict())  # JSON-ready


def test_committed_manifest_and_model():
    manifest = json.loads(MANIFEST.read_text())
    splits = [entry["split"] for entry in manifest["documents"].values()]
    assert (splits.count("test"), splits.count("validation"), len(splits)) == (4, 3, 42)
    assert sum(entry["bytes"] for entry in manifest["documents"].values()) > 4_000_000
    model = load_model()
    cfg = model.cfg
    assert cfg.d_model >= 256 and cfg.d_ff >= 1024 and cfg.context >= 256


@pytest.mark.skipif(not (DEFAULT_CACHE / ARCHIVE).is_file(), reason="the corpus archive is not fetched (.cache/lm)")
def test_pinned_corpus_matches_the_manifest():
    from lba_train.lm.corpus import load_corpus

    corpus = load_corpus()
    assert corpus.sizes()["test"]["documents"] == 4


@pytest.fixture
def runner(monkeypatch):
    import importlib
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "experiments"))
    return importlib.import_module("lm_zero_shot")


def test_runner_bias_rule_and_refusals(runner, tmp_path, capsys):
    fp32, fp16, e4m3 = runner.accumulator_configs("e4m3", ["fp32", "fp16", "e4m3"])
    assert (fp32.acc.bias, fp16.acc.bias) == (127, 15)  # standard formats keep their bias
    assert e4m3.acc.bias != MacConfig(input="e4m3", acc="e4m3").acc.bias  # the paper's rule
    for argv, message in ((["--accs", "e4m3,bogus"], "'bogus'"), (["--windows", "0"], "--windows"),
                          (["--model", str(tmp_path / "none.pt")], "--model")):
        with pytest.raises(SystemExit):
            runner.main(argv)
        assert message in capsys.readouterr().err


def test_runner_report_from_an_evaluation(runner):
    corpus = split_documents(tiny_text(6), test=2, validation=1)
    options = LMEvalOptions(windows=2, calibration_windows=1, batch=2, resamples=50)
    evaluation = evaluate_accumulators(tiny_model(), corpus.test, corpus.train, [FP32, NARROW], options)
    result = {"command": "c", "date": "d", "machine": "m", "load_before": (1.0, 1.0, 1.0),
              "load_after": (2.0, 2.0, 2.0), "seconds": 3.0, "model": "tiny", "context": TINY.context,
              "evaluation": evaluation.as_dict()}
    text = runner.markdown(result)
    assert text.count("\n| e4m3xe4m3-") == 2 and "| — |" in text


def test_margin_widens_every_operand_range():
    ids = torch.randint(0, 256, (2, TINY.context), generator=torch.Generator().manual_seed(3))
    plain, wide = (lbaify(tiny_model(), NARROW, intercept=False) for _ in range(2))
    freeze_operand_ranges(plain, ids)
    freeze_operand_ranges(wide, ids, margin_log2=2)
    for (name, a), (_, b) in zip(plain.named_modules(), wide.named_modules()):
        if hasattr(a, "input_quantizer"):
            assert torch.equal(b.input_quantizer.amax, 4 * a.input_quantizer.amax), name
            assert b.weight_quantizer.frozen
    with pytest.raises(ConfigError, match="margin_log2"):
        LMEvalOptions(margin_log2=-1)


# ------------------------------------------------------------------------------- two-stage fine-tuning (h5)
def test_finetune_options_and_batches():
    from lba_train.lm.finetune import LMFinetuneOptions, finetune_batches

    options = LMFinetuneOptions(steps=3, lr=1e-3, batch=2)
    assert options.steps == (3, 3) and options.lr == (1e-3, 1e-3)
    for bad in (dict(steps=(1, -1)), dict(steps=(1, 2, 3)), dict(lr=0), dict(batch=0), dict(warmup=-1)):
        with pytest.raises(ConfigError, match="LMFinetuneOptions"):
            LMFinetuneOptions(**bad)
    text = tiny_text(3)
    first, again = finetune_batches(text, TINY.context, options), finetune_batches(text, TINY.context, options)
    assert first.shape == (6, 2, TINY.context + 1) and torch.equal(first, again)  # the same data for every row
    assert not torch.equal(first, finetune_batches(text, TINY.context, LMFinetuneOptions(steps=3, batch=2, seed=1)))


@pytest.mark.slow  # ~20 s of CPU in a fresh process (make test-full); the doc snippet test runs the path in make test
def test_finetune_stages_flip_underflow_and_zero_shot_matches_evaluate_point():
    from lba_train.lm.evaluate import evaluate_point, model_outputs, test_windows
    from lba_train.lm.finetune import LMFinetuneOptions, finetune_batches, finetune_point

    corpus = split_documents(tiny_text(6), test=2, validation=1)
    model = tiny_model()
    windows = test_windows(model, corpus.test, 3)
    calibration = test_windows(model, corpus.train, 2)[:, :-1]
    reference = model_outputs(model, windows)
    evaluation = LMEvalOptions(windows=3, calibration_windows=2, batch=3, resamples=50)
    options = LMFinetuneOptions(steps=(1, 2), lr=(1e-2, 5e-3), batch=2, warmup=1)
    batches = finetune_batches(corpus.train, TINY.context, options)
    seen = []

    def record(entry):
        seen.append(entry["stage"])

    base = finetune_point(model, FP32, windows, calibration, reference, batches, evaluation, options, progress=record)
    narrow = finetune_point(model, NARROW, windows, calibration, reference, batches, evaluation, options, base)
    assert seen == [1, 2, 2] and [entry["step"] for entry in base.history] == [1, 1, 2]
    # zero-shot: the same conversion and fitting as a sweep row, bit for bit
    alone = evaluate_point(model, NARROW, windows, calibration, reference, None, evaluation)
    assert narrow.zero_shot.per_window["bpb"] == alone.per_window["bpb"] and narrow.name == alone.name
    # fine-tuning changed the model; the Δ is paired with the control's same stage
    assert narrow.finetuned.per_window["bpb"] != narrow.zero_shot.per_window["bpb"]
    tuned_delta = np.array(narrow.finetuned.per_window["bpb"]) - np.array(base.finetuned.per_window["bpb"])
    assert narrow.finetuned.delta_bpb.value == pytest.approx(tuned_delta.mean())
    assert narrow.finetuned.baseline == base.name and base.finetuned.delta_bpb is None
    assert narrow.skipped_steps == 0 and set(narrow.seconds) >= {"stage1", "stage2", "total"}
    assert sum(row["steps"] for row in narrow.finetuned.layers) > 0  # fresh event counts of the tuned model
    json.dumps(narrow.as_dict())


def test_finetune_stage_one_trains_without_underflow():
    from lba_train.convert import lba_layers
    from lba_train.lm.finetune import LMFinetuneOptions, finetune_batches, train_stages

    converted = lbaify(tiny_model(), NARROW, intercept=False)
    flags = []
    layer = lba_layers(converted)[0][1]
    layer.register_forward_pre_hook(lambda module, inputs: flags.append(module.cfg.underflow))
    options = LMFinetuneOptions(steps=(2, 1), batch=2)
    history, skipped, seconds = train_stages(converted, finetune_batches(tiny_text(3), TINY.context, options), options)
    assert flags == [False, False, True] and layer.cfg.underflow and not converted.training
    assert len(history) == 3 and skipped == 0 and len(seconds) == 2
    with pytest.raises(ConfigError, match="batches"):
        train_stages(converted, torch.zeros((1, 2, TINY.context + 1), dtype=torch.int64), options)


def _doc_snippet(heading: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "lm.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_docs_own_text_and_model_snippet_runs(capsys):
    """docs/lm.md "Your own text and model": a model that is not a ByteLM, on text not from the corpus."""
    exec(compile(_doc_snippet("Your own text and model"), "docs/lm.md", "exec"), {"__name__": "snippet"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all("e4m3xe4m3-" in line for line in lines)


def test_model_context_is_required():
    from lba_train.lm.evaluate import model_context

    assert model_context(tiny_model()) == TINY.context
    with pytest.raises(ConfigError, match="context"):
        model_context(torch.nn.Linear(2, 2))


@pytest.fixture
def finetune_runner(monkeypatch):
    import importlib
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "experiments"))
    return importlib.import_module("lm_finetune")


def _record(acc: str, width: int, zero_shot: list[float], tuned: list[float]) -> dict:
    def stage(values):
        return {"per_window": {"bpb": values}, "windows": len(values), "kl_bits": {"value": 0.0, "low": 0.0, "high": 0.0},
                "top1": {"value": 1.0, "low": 1.0, "high": 1.0}, "layers": [{"steps": 10, "swamp": 1}], "nan": 0, "inf": 0}

    return {"acc": acc, "width": width, "bias_mode": "calibrate", "seconds": 1.0, "date": "2026-12-02 19:00 UTC",
            "load_before": [1.0, 1.0, 1.0], "load_after": [2.0, 2.0, 2.0],
            "point": {"zero_shot": stage(zero_shot), "finetuned": stage(tuned), "skipped_steps": 0,
                      "config": MacConfig(input="e4m3", acc=acc).to_dict()}}


def test_finetune_report_names_the_narrowest_accumulator_within_noise(finetune_runner, tmp_path):
    base = [3.0, 3.5, 4.0, 3.2, 3.8, 3.1]
    noise = [0.01, -0.01, 0.02, -0.02, 0.0, 0.005]
    records = [_record("e8m23", 32, base, base),
               _record("e4m7_b-7", 12, [b + 0.3 for b in base], [b + n for b, n in zip(base, noise)]),
               _record("e4m3_b-5", 8, [b + 1.0 for b in base], [b + 0.5 + n for b, n in zip(base, noise)])]
    summaries = finetune_runner.row_summaries(records)
    settings = {"steps": (2, 3), "batch": 4}
    assert "no accumulator" in finetune_runner.narrowest_sentence(summaries, "zero_shot", settings)
    tuned = finetune_runner.narrowest_sentence(summaries, "finetuned", settings)
    assert "12 bits, e4m7_b-7" in tuned and "e4m3" not in tuned and "2 + 3 steps" in tuned
    finetune_runner.write_report(tmp_path, records, [], {"input": "e4m3", "windows": 6, "calibration_windows": 2,
                                                         "steps": (2, 3), "lr": (1e-4, 5e-5), "batch": 4, "warmup": 1})
    assert (tmp_path / "report.md").read_text().count("\n| ") == 4  # header and three rows
    assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["finetuned"]["delta"] is None


def test_finetune_runner_refuses_bad_options(finetune_runner, tmp_path, capsys):
    for argv, message in ((["--accs", "fp32,bogus"], "'bogus'"), (["--accs", "hopper-fp8,fp32"], "control"),
                          (["--windows", "0"], "--windows"), (["--steps", "1,2,3"], "--steps"),
                          (["--model", str(tmp_path / "none.pt")], "--model")):
        with pytest.raises(SystemExit):
            finetune_runner.main(argv + ["--out", str(tmp_path / "out")])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

"""The language-model workload of the sweep (hwmodel.workloads.lm): its settings, and rows plus a report section
from a tiny model on a tiny text (2 accumulators, seconds)."""

from __future__ import annotations

import math

import pytest
import torch

from hwmodel.sweep.spec import MAIN_JOB, LMSpec, SweepSpec, load_sweep_spec
from hwmodel.workloads import lm, registry
from hwmodel.workloads.base import PointRun
from lba_core import MacConfig
from lba_train.lm.evaluate import model_outputs
from lba_train.lm.model import ByteLM, LMConfig
from lba_train.lm.windows import evaluation_windows

from test_sweep import fails

TINY = LMConfig(d_model=16, heads=2, layers=1, d_ff=32, context=16)
TEXT = {"a": b"To be, or not to be, that is the question. " * 8, "b": b"Whether 'tis nobler in the mind to suffer " * 8}


def test_registered_and_on_in_the_main_job():
    assert any(isinstance(workload, lm.LMWorkload) for workload in registry.WORKLOADS)
    assert lm.uses_lm(MAIN_JOB) and not lm.uses_lm(SweepSpec())


def test_bias_rule_per_accumulator():
    spec = SweepSpec(lm=LMSpec(enabled=True))
    assert lm.bias_mode(spec, MacConfig("e4m3", "fp16")) == "margin"
    assert lm.bias_mode(spec, MacConfig("e4m3", "e5m6")) == spec.accuracy.bias
    ablation = SweepSpec(lm=LMSpec(enabled=True, standard_bias="format"))
    assert lm.bias_mode(ablation, MacConfig("e4m3", "bf16")) == "format"


def test_lm_toml_table_and_bad_key(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text('accumulators = ["e4m7"]\n[lm]\nenabled = true\nwindows = 12\nstandard_bias = "format"\n')
    spec = load_sweep_spec(good)
    assert spec.lm.windows == 12 and spec.lm.standard_bias == "format" and lm.uses_lm(spec)
    bad = tmp_path / "bad.toml"
    bad.write_text("[lm]\nwindow = 3\n")
    message = fails(["sweep", "--config", str(bad), "--reports", str(tmp_path / "r")], capsys)
    assert "unknown key(s) lm.window" in message and "bad.toml" in message, message


def test_rows_and_report_section_from_a_tiny_model(tmp_path):
    torch.manual_seed(0)
    model = ByteLM(TINY).eval()
    test = evaluation_windows(TEXT, TINY.context + 1, 4)
    calibration = evaluation_windows(TEXT, TINY.context + 1, 2)[:, :-1]
    reference = model_outputs(model, test, 4)
    spec = SweepSpec(accumulators=("fp32", "e4m3"), fixed_point=(), lm=LMSpec(enabled=True, windows=4, resamples=50))
    configs = spec.configs()
    run = PointRun()
    for cfg in configs:
        record = lm.point_record(model, test, calibration, reference, cfg, lm.bias_mode(spec, cfg), batch=4)
        run.records[cfg.name] = {**record, "seconds": record["point_seconds"], "key": "0" * 64}
    frame = lm.table(spec, configs, run)
    assert list(frame["requested"]) == [cfg.name for cfg in configs]
    assert list(frame["bias_mode"]) == ["margin", "calibrate"]
    fp32, narrow = frame.iloc[0], frame.iloc[1]
    assert math.isnan(fp32["diff_bpb"]) and fp32["bpb_low"] <= fp32["bpb"] <= fp32["bpb_high"]
    assert narrow["reference"] and narrow["diff_bpb_low"] <= narrow["diff_bpb"] <= narrow["diff_bpb_high"]
    assert narrow["swamp_rate"] + narrow["overflow_rate"] > 0  # a 4-bit-mantissa accumulator shows events
    lm.write_table(tmp_path, frame, None, {})
    section = lm.LMWorkload().report_section(tmp_path)
    assert "### Language model (bits per byte)" in section.markdown and "(reference)" in section.markdown
    assert 'id="lm"' in section.html

"""Per-layer accumulator events (issue #16 item 2): K per layer, per-layer counts that add up to the
whole-model rates, the report's heat map, and the long-accumulation knob (``--width``)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from hwmodel.report.heatmap import LAYER_EVENTS_FILE, LARGEST_K_MARK, layer_event_rows, largest_k_layers
from hwmodel.report.data import ReportError
from hwmodel.report.report import build_report, write_results
from hwmodel.sweep.spec import check_option
from lba_core import ConfigError, MacConfig
from lba_train import build_model, layer_dot_products, lbaify
from lba_train.models import MAX_WIDTH

CFG = MacConfig("e4m3", "e4m3")
DIGIT = (1, 8, 8)


def _shapes(name: str, width: int = 1) -> dict[str, tuple[int, int]]:
    model = lbaify(build_model(name, DIGIT, 10, seed=0, width=width), CFG)
    return {layer: (shape["k"], shape["macs"]) for layer, shape in layer_dot_products(model, torch.rand(1, *DIGIT)).items()}


def test_k_and_macs_of_known_layers():
    # MLP 64 -> 128w -> 64w -> 10: K is each layer's fan-in.
    assert _shapes("mlp", 2) == {"net.1": (64, 64 * 256), "net.3": (256, 256 * 128), "net.5": (128, 128 * 10)}
    resnet = _shapes("resnet")
    # 3x3 convolutions sum 9 x C_in products; block 1 runs at 4x4 positions after its stride-2 convolution.
    assert resnet["stem.0"] == (9, 9 * 8 * 64) and resnet["blocks.0.conv1"] == (72, 72 * 8 * 64)
    assert resnet["blocks.1.conv2"] == (144, 144 * 16 * 16) and resnet["blocks.1.shortcut.0"] == (8, 8 * 16 * 16)
    assert resnet["head"] == (16, 160) and largest_k_layers(_table(resnet)) == ["blocks.1.conv2"]
    transformer = _shapes("transformer", 2)  # dim 64, 2 heads of 32, 16 tokens (2x2 patches of 8x8)
    assert transformer["layers.0.attention.scores"] == (32, 32 * 2 * 16 * 16)  # Q.K^T sums over the head width
    assert transformer["layers.0.attention.mix"] == (16, 16 * 2 * 16 * 32)  # softmax.V sums over the tokens
    assert _shapes("resnet", 4)["blocks.1.conv2"][0] == 4 * 144


def _table(shapes: dict[str, tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame([{"layer": layer, "k": k} for layer, (k, _) in shapes.items()])


def _record(seed: int) -> dict:
    """An accuracy point's record as run_accuracy_point writes it (tests/test_sweep.py checks real ones)."""
    layers = [{"layer": "net.1", "type": "LBALinear", "k": 64, "macs_per_example": 640, "steps": 6400, "overflow": 0,
               "underflow": 3, "swamp": 100 + seed},
              {"layer": "net.3", "type": "LBALinear", "k": 128, "macs_per_example": 1280, "steps": 12800, "overflow": 1,
               "underflow": 0, "swamp": 900 - seed},
              {"layer": "lba_products", "type": "LBAProducts", "k": None, "macs_per_example": None, "steps": 0,
               "overflow": 0, "underflow": 0, "swamp": 0}]
    totals = {event: sum(row[event] for row in layers) for event in ("steps", "overflow", "underflow", "swamp")}
    return {"layer_events": layers, **{f"events_{event}": count for event, count in totals.items()}}


def test_layer_rows_sum_the_seeds_and_match_the_whole_model_rates():
    from hwmodel.workloads.digits import row_columns

    records = [_record(0), _record(1)]
    rows = layer_event_rows("c", "e4m3", records)
    assert [row["layer"] for row in rows] == ["net.1", "net.3"]  # a layer that never accumulated is left out
    assert [row["seeds"] for row in rows] == [2, 2] and rows[0]["swamp"] == 201 and rows[1]["steps"] == 25600
    assert rows[1]["swamp_rate"] == pytest.approx(1799 / 25600) and rows[0]["underflow_rate"] == pytest.approx(6 / 12800)
    whole = row_columns([{**record, **dict.fromkeys(("baseline", "zero_shot", "stage1", "stage2"), 0.9)}
                         for record in records])
    for event in ("overflow", "underflow", "swamp"):
        summed = sum(row[event] for row in rows) / sum(row["steps"] for row in rows)
        assert summed == pytest.approx(whole[f"{event}_rate"])


def _folder(tmp_path, layer_rows: list[dict] | None):
    results = pd.DataFrame([
        {"config": config, "input": "e4m3", "acc": acc, "rounding": "rne", "chunk": 0, "acc_bits": bits,
         "top1_baseline": 0.95, "top1_zero_shot": 0.9, "top1_stage2": 0.94, "seeds": 1}
        for config, acc, bits in (("c-fp32", "e8m23", 32), ("c-e4m3", "e4m3_b-4", 8))])
    if layer_rows is not None:
        pd.DataFrame(layer_rows).to_csv(tmp_path / LAYER_EVENTS_FILE, index=False)
    write_results(results, tmp_path, title="t")
    return tmp_path


def _layer_rows() -> list[dict]:
    rows = []
    for config, acc, swamp in (("c-fp32", "e8m23", 0), ("c-e4m3", "e4m3_b-4", 300)):
        for layer, k in (("stem", 9), ("body", 144), ("head", 16)):
            counts = {"steps": 1000, "overflow": 0, "underflow": 2, "swamp": swamp if layer != "stem" else 0}
            rows.append({"config": config, "acc": acc, "layer": layer, "type": "LBAConv2d", "k": k,
                         "macs_per_example": k * 10, "seeds": 1, **counts,
                         **{f"{event}_rate": counts[event] / 1000 for event in ("overflow", "underflow", "swamp")}})
    return rows


def test_heat_map_is_in_the_report(tmp_path):
    folder = _folder(tmp_path, _layer_rows())
    markdown, page = (folder / "results.md").read_text(), (folder / "index.html").read_text()
    assert "![per-layer accumulator events](layer_events.png)" in markdown
    assert "the largest K = 144: body (1,440 MACs per example)" in markdown
    assert "Highest swamp rate: 30% (e4m3_b-4, body, K = 144)" in markdown
    assert '<img src="layer_events.svg"' in page and (folder / "layer_events.png").stat().st_size > 5_000
    svg = (folder / "layer_events.svg").read_text()
    assert f"{LARGEST_K_MARK} body  K=144" in svg and f"{LARGEST_K_MARK} head" not in svg  # the text, as a comment
    # The data go away: the rebuilt report says so and drops the stale picture.
    (folder / LAYER_EVENTS_FILE).unlink()
    build_report(folder)
    assert "no per-layer event data" in (folder / "results.md").read_text()
    assert "no per-layer event data" in (folder / "index.html").read_text()
    assert not (folder / "layer_events.png").exists()


def test_damaged_layer_events_are_one_line(tmp_path):
    folder = _folder(tmp_path, _layer_rows())
    pd.read_csv(folder / LAYER_EVENTS_FILE).drop(columns="k").to_csv(folder / LAYER_EVENTS_FILE, index=False)
    with pytest.raises(ReportError, match=r"layer_events.csv: missing column\(s\) k$"):
        build_report(folder)


@pytest.mark.parametrize("value", [0, MAX_WIDTH + 1, 2.0, True, "8"])
def test_width_is_validated(value):
    with pytest.raises(ConfigError) as error:
        check_option("--width", value)
    assert str(error.value).startswith("--width: expected an integer from 1 to 64") and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="width must be an integer from 1 to 64"):
        build_model("mlp", DIGIT, 10, width=value)


def test_width_is_part_of_the_provenance():
    from dataclasses import replace

    from hwmodel.sweep.sweep import _identity, energy_streams
    from hwmodel.workloads.digits import accuracy_determinants
    from hwmodel.sweep.spec import SweepSpec

    spec = SweepSpec()
    wide = replace(spec, accuracy=replace(spec.accuracy, width=4))
    cfg = spec.configs()[0]
    assert accuracy_determinants(spec, cfg)["baseline"]["width"] == 1
    assert accuracy_determinants(spec, cfg) != accuracy_determinants(wide, cfg)
    assert _identity(spec) == {"kind": "area+accuracy", "model": "resnet", "data": "digits"}  # earlier folders match
    assert _identity(wide)["width"] == 4
    assert energy_streams(replace(wide, energy=True, targets=("sky130",))).width == 4  # energy on the same model
    assert math.prod(build_model("resnet", DIGIT, 10, width=1).head.weight.shape) == 160

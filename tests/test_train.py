"""Data loaders, models, accumulator bias selection and the fine-tuning recipe (small, fast instances)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from hwmodel import cli
from lba_core import ConfigError, FloatFormat, MacConfig
from lba_train.bias import (
    _chunked_cumsum,
    calibrated_bias,
    observe_partial_sums,
    paper_bias_config,
    product_bias,
    resolve_bias,
)
from lba_train.convert import lba_layers, lbaify
from lba_train.data import _split, load_data, load_digits_data, load_image_folder, load_mnist, make_bundle, read_idx
from lba_train.models import build_model
from lba_train.finetuning import ACCURACY_KEYS, FinetuneOptions, FinetuneResult, finetune, run_accuracy_point
from lba_train.train import TrainOptions, TrainResult, evaluate, train_baseline, train_float


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ data
def test_digits_split_is_deterministic_and_disjoint():
    first, second = load_digits_data(seed=3), load_digits_data(seed=3)
    assert first.input_shape == (1, 8, 8) and first.classes == 10
    train_x = first.train.dataset.tensors[0]
    val_x = first.val.dataset.tensors[0]
    assert len(train_x) + len(val_x) == 1797 and len(val_x) == 359
    assert torch.equal(train_x, second.train.dataset.tensors[0])
    assert not torch.equal(val_x, load_digits_data(seed=4).val.dataset.tensors[0])
    assert abs(float(train_x.mean())) < 1e-5 and abs(float(train_x.std()) - 1) < 1e-3  # standardised on train
    train_rows = {row.numpy().tobytes() for row in train_x}
    assert sum(row.numpy().tobytes() in train_rows for row in val_x) < 5  # digits has a few duplicate images


def _write_images(root: Path, counts: dict[str, int], size=(6, 5), rgb=False) -> dict[str, list[np.ndarray]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    written = {}
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        written[name] = []
        for index in range(count):
            shape = (size[0], size[1], 3) if rgb else size
            array = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(array).save(root / name / f"{index}.png")
            written[name].append(array)
    return written


def test_image_folder_reads_classes_and_pixels(tmp_path):
    written = _write_images(tmp_path, {"cat": 3, "dog": 4})
    bundle = load_image_folder(tmp_path, batch_size=2, val_fraction=0.3, seed=0)
    assert bundle.input_shape == (1, 6, 5) and bundle.classes == 2
    # Classes in sorted order, files in name order; standardised with the training split's statistics.
    raw = np.stack(written["cat"] + written["dog"])[:, None] / 255.0
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    train, val = _split(7, 0.3, 0)
    mean, std = raw[train].mean(), raw[train].std()
    for loader, index in ((bundle.train, train), (bundle.val, val)):
        images, got_labels = loader.dataset.tensors
        assert np.allclose(images.numpy(), (raw[index] - mean) / std, atol=1e-6)
        assert got_labels.tolist() == labels[index].tolist()


def test_image_folder_with_train_and_val_directories_and_rgb(tmp_path):
    _write_images(tmp_path / "train", {"a": 2, "b": 2}, rgb=True)
    _write_images(tmp_path / "val", {"a": 1, "b": 1}, rgb=True)
    bundle = load_data(f"imagefolder:{tmp_path}", batch_size=4)
    assert bundle.input_shape == (3, 6, 5)
    assert len(bundle.train.dataset) == 4 and bundle.val.dataset.tensors[1].tolist() == [0, 1]


def _write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10, 4, 4), dtype=np.uint8)
    labels = np.arange(10) % 3
    _write_idx(tmp_path / "train-images-idx3-ubyte", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, compress=True)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte"), images)
    assert np.array_equal(read_idx(tmp_path / "train-labels-idx1-ubyte.gz"), labels)
    bundle = load_mnist(tmp_path, batch_size=3)
    assert bundle.input_shape == (1, 4, 4) and bundle.classes == 3
    assert len(bundle.train.dataset) + len(bundle.val.dataset) == 10
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:2])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:2])
    bundle = load_data(f"mnist:{tmp_path}")
    assert len(bundle.train.dataset) == 10 and bundle.val.dataset.tensors[1].tolist() == [0, 1]
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ConfigError, match="IDX"):
        read_idx(tmp_path / "bad")


def test_bad_data_specs():
    with pytest.raises(ConfigError, match="data spec"):
        load_data("cifar")
    with pytest.raises(ConfigError, match="does not exist"):
        load_data("mnist:/nonexistent/path")


# ------------------------------------------------------------------------------------------------ models
@pytest.mark.parametrize("name", ["mlp", "resnet", "transformer"])
def test_models_build_deterministically_and_convert(name):
    model = build_model(name, (1, 8, 8), 10, seed=1)
    again = build_model(name, (1, 8, 8), 10, seed=1)
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    x = torch.randn(3, 1, 8, 8)
    assert model(x).shape == (3, 10)
    converted = lbaify(model, MacConfig("e4m3", "e5m10"))
    kinds = Counter(type(layer).__name__ for _, layer in lba_layers(converted))
    float_layers = sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())
    assert kinds["LBALinear"] + kinds["LBAConv2d"] == float_layers
    if name == "transformer":
        assert kinds["LBAMatMul"] == 4  # Q·K^T and softmax·V in each of the two encoder layers
    assert converted(x).shape == (3, 10)
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("vgg", (1, 8, 8), 10)


# ------------------------------------------------------------------------------------------------ bias
def test_product_and_paper_bias():
    cfg = MacConfig("e4m3", "e4m7")
    # 480 * 480 = 230400 lies in binade 17; a 4-bit exponent tops out at code 15 -> bias 15 - 17.
    assert product_bias(cfg) == -2
    assert paper_bias_config(cfg).acc == FloatFormat(4, 7, bias=-2)
    assert paper_bias_config(cfg.replace(chunk_size=16)).acc.bias == -4  # 1/2 log2(16) = 2 binades up
    assert product_bias(MacConfig("e4m3", "e5m6", product="e5m2")) == 31 - 16  # capped by the product format (max 1.75 * 2^16)
    assert resolve_bias(cfg, "format") is cfg
    with pytest.raises(ConfigError, match="bias mode"):
        resolve_bias(cfg, "median")
    with pytest.raises(ConfigError, match="calibrate"):
        resolve_bias(cfg, "calibrate")


def test_chunked_partial_sums_against_a_loop():
    products = torch.arange(1.0, 11.0, dtype=torch.float64).reshape(1, 10) * torch.tensor([[1.0], [-2.0]])
    for chunk in (None, 3, 10, 20):
        got = _chunked_cumsum(products, chunk)
        for row in range(2):
            expected, totals, running = [], [], 0.0
            size = chunk if chunk is not None and chunk < 10 else 10
            for k in range(10):
                running = products[row, k].item() + (0.0 if k % size == 0 else running)
                expected.append(running)
                if chunk is not None and chunk < 10 and (k % size == size - 1 or k == 9):
                    totals.append(running + (totals[-1] if totals else 0.0))
            assert got[row].tolist() == expected + totals


def test_calibrated_bias_from_histogram_and_observation():
    cfg = MacConfig("e4m3", "e4m7")
    histogram = Counter({3: 1000, 10: 5000, 12: 30})
    # The top binade holds the highest exponent once the allowed fraction (30 / 6030 ~ 0.5%) is left out.
    assert calibrated_bias(cfg, histogram, overflow_fraction=1e-3) == 15 - 12
    assert calibrated_bias(cfg, histogram, overflow_fraction=1e-2) == 15 - 10
    assert calibrated_bias(cfg, histogram, overflow_fraction=0.9) == 15 - 3
    layer = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        layer[0].weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 0.5]]))
    model = lbaify(layer, cfg)
    x = torch.tensor([[1.0, 1.0, 1.0]])  # scaled to 480s; weights scaled to 480 * w
    observed = observe_partial_sums(model, [x])["0"]
    # Row 0: products 230400 (binade 17) x3, partial sums 1, 2, 3 x 230400 (binades 17, 18, 19).
    # Row 1: products 230400, -230400, 115200 (17, 17, 16), partial sums 230400, 0 (not counted), 115200.
    assert observed == Counter({17: 3 + 1 + 2 + 1, 18: 1, 19: 1, 16: 2})
    assert not lba_layers(model)[0][1].exact_accumulation  # restored after the observation


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def tiny_digits():
    full = load_digits_data(seed=0)
    train_x, train_y = full.train.dataset.tensors
    val_x, val_y = full.val.dataset.tensors
    # Already standardised: make_bundle's own standardisation is then (almost) the identity.
    return make_bundle("tiny-digits", train_x[:192].numpy(), train_y[:192].numpy(), val_x[:96].numpy(),
                       val_y[:96].numpy(), batch_size=64)


@pytest.fixture(scope="module")
def tiny_baseline(tiny_digits):
    return train_baseline("mlp", tiny_digits, epochs=8, seed=0)


QUIET = FinetuneOptions(epochs=(1, 1), lr=(1e-3, 5e-4), bias="calibrate")


def test_baseline_training_learns_on_a_copy(tiny_digits, tiny_baseline):
    assert isinstance(tiny_baseline, TrainResult) and tiny_baseline.accuracy > 0.8
    assert evaluate(tiny_baseline.model, tiny_digits.val) == tiny_baseline.accuracy
    model = build_model("mlp", tiny_digits.input_shape, tiny_digits.classes, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained = train_float(model, tiny_digits.train, tiny_digits.val, options=TrainOptions(epochs=1))
    assert trained.model is not model and len(trained.history) == 1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "the caller's model is untouched"
    with pytest.raises(ConfigError, match="TrainOptions.epochs"):
        TrainOptions(epochs=-1)


def test_the_old_train_float_form_is_gone(tiny_digits):
    """The loose-argument form of earlier releases was dropped (no compatibility shims): it fails loudly."""
    model = build_model("mlp", tiny_digits.input_shape, tiny_digits.classes, seed=0)
    with pytest.raises(TypeError):
        train_float(model, tiny_digits, 1, progress=False)
    with pytest.raises(TypeError):
        train_float(model, tiny_digits.train, tiny_digits.val, 1)


def test_finetune_runs_both_stages_on_a_copy_quietly_and_resumes(tiny_digits, tiny_baseline, tmp_path, capsys):
    model = tiny_baseline.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = MacConfig("e4m3", "e4m3")
    straight = finetune(model, tiny_digits.train, tiny_digits.val, cfg, options=QUIET)
    assert isinstance(straight, FinetuneResult)
    assert capsys.readouterr() == ("", ""), "the library is quiet unless asked"
    for key, value in straight.accuracies().items():
        assert 0.0 <= value <= 1.0, key
    assert straight.baseline == tiny_baseline.accuracy
    assert straight.cfg.acc.bias != cfg.acc.bias and straight.cfg.underflow
    assert [(h["stage"], h["epoch"]) for h in straight.history] == [(1, 1), (2, 1)]
    assert all(type(m).__name__.startswith("LBA") for _, m in lba_layers(straight.model))
    assert straight.events[0]["steps"] > 0 and "overflow_rate" in straight.zero_shot_events[0]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), "the caller's model must stay untouched"

    def interrupt(message):
        if "stage1" in message:  # after stage 1 finished and was checkpointed
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(model, tiny_digits.train, tiny_digits.val, cfg,
                 options=QUIET.replace(checkpoint_dir=tmp_path, log=interrupt))
    saved = json.loads((tmp_path / "accuracy.json").read_text())
    assert set(saved) >= {"baseline", "zero_shot", "stage1_nouf"}
    messages = []
    resumed = finetune(model, tiny_digits.train, tiny_digits.val, cfg,
                       options=QUIET.replace(checkpoint_dir=tmp_path, log=messages.append))
    assert any("resuming" in message for message in messages)
    for key in ("zero_shot", "stage1_nouf", "stage1", "stage2"):
        assert getattr(resumed, key) == getattr(straight, key), key
    assert resumed.events == straight.events
    with pytest.raises(ConfigError, match="another configuration"):
        finetune(model, tiny_digits.train, tiny_digits.val, MacConfig("e4m3", "e5m2"),
                 options=QUIET.replace(checkpoint_dir=tmp_path))


def test_the_old_finetune_forms_are_gone(tiny_digits, tiny_baseline):
    cfg = MacConfig("e4m3", "e5m6")
    with pytest.raises(TypeError):
        finetune(tiny_baseline.model, tiny_digits.train, tiny_digits.val, cfg, (0, 1), bias="paper")
    with pytest.raises(TypeError):
        run_accuracy_point(cfg, "mlp", tiny_digits, (0, 1), 0, tiny_baseline.state)
    with pytest.raises(TypeError):
        tiny_baseline["accuracy"]  # results are dataclasses: attributes, not dict items


def test_finetune_options_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="bias mode"):
        FinetuneOptions(bias="x")
    with pytest.raises(ConfigError, match="FinetuneOptions.epochs"):
        FinetuneOptions(epochs=(1, -1))
    with pytest.raises(ConfigError, match="FinetuneOptions.lr"):
        FinetuneOptions(lr=(1e-3, 0))
    with pytest.raises(ConfigError, match="pair"):
        FinetuneOptions(epochs=(1, 1, 1))
    with pytest.raises(ConfigError, match="FinetuneOptions.layers"):
        FinetuneOptions(layers="ste")
    assert FinetuneOptions(epochs=2, lr=1e-3).epochs == (2, 2)


def test_run_accuracy_point_reuses_a_baseline(tiny_digits, tiny_baseline):
    options = FinetuneOptions(epochs=(0, 1), bias="calibrate")
    point = run_accuracy_point(MacConfig("e4m3", "e5m6"), "mlp", tiny_digits, options=options,
                               baseline_state=tiny_baseline.state)
    assert point["baseline"] == tiny_baseline.accuracy
    assert point["acc_format"].startswith("e5m6") and point["events_steps"] > 0
    labels = point["labels"]
    for phase in ("zero_shot", "stage2"):  # per-example predictions, for paired comparisons between formats
        predicted = point["predictions"][phase]
        assert len(predicted) == len(labels) == len(tiny_digits.val.dataset)
        assert sum(p == y for p, y in zip(predicted, labels)) / len(labels) == point[phase]
    json.dumps(point)
    assert set(ACCURACY_KEYS) <= set(point)


def test_cli_train_writes_reports(tmp_path, capsys):
    images = tmp_path / "images"
    _write_images(images, {"a": 6, "b": 6}, size=(4, 4))
    arguments = ["train", "--model", "mlp", "--data", f"imagefolder:{images}", "--acc", "e4m3", "--epochs-baseline",
                 "1", "--epochs", "1,0", "--bias", "calibrate", "--one-stage", "--name", "t", "--reports",
                 str(tmp_path / "reports"), "--quiet"]
    assert cli.main(arguments) == 0
    folder = tmp_path / "reports" / "t"
    assert str(folder / "accuracy.md") in capsys.readouterr().out
    table = pd.read_csv(folder / "accuracy.csv")
    assert len(table) == 2 and table["variant"].tolist() == ["two-stage", "one-stage"]
    assert table["acc_format"].str.startswith("e4m3_b").all()  # calibrated bias
    assert "layer events" in (folder / "accuracy.md").read_text()
    assert cli.main(arguments) == 0  # a second run reads the saved points back and trains nothing
    out = capsys.readouterr().out
    assert "reusing 2 of 2 points" in out and "float baseline" not in out, out
    assert pd.read_csv(folder / "accuracy.csv").equals(table)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments[:1] + ["--acc", "e1m2", "--reports", str(tmp_path)])
    assert exit_info.value.code == 2 and "exp_bits" in capsys.readouterr().err

"""Operand streams of real layers for the switching-activity simulation: what a MAC unit actually multiplies.

A small float model is trained on a packaged data set (the digits ResNet by default: scikit-learn's digits,
lba_train's SmallResNet, a few epochs, fixed seed), converted with ``lbaify`` to the configuration's input and
weight formats, and run on validation images. A forward hook on every LBA layer quantizes the layer's input
and weight exactly as the layer does and takes its dot products (``gemm_operands``: im2col for convolutions);
a fixed-seed sample of them becomes the layer's stream of input/weight codes. The layers accumulate exactly
(``exact_accumulation``) during the capture: the operands are the quantized ones the MAC sees, and the
streams depend on the input formats only, so one capture serves every accumulator (a narrow accumulator
would shift later layers' activations slightly; that second-order effect is left out). Uniformly random
codes of the same formats, the usual stand-in, are produced beside them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lba_core import FixedFormat, FloatFormat, MacConfig

from ...execution.cache import ResultCache, content_key


#: The pretrained Transformer (``StreamSpec(model=MINILM)``; needs the ``transformers`` extra): its operands
#: are those of the first ``images`` sentences of the repository's evaluation sentences.
MINILM = "minilm"
MINILM_SENTENCES = Path(__file__).resolve().parents[3] / "data" / "sentences" / "eval.txt"


@dataclass(frozen=True)
class StreamSpec:
    """Where the real operands come from, and how many dot products of each layer are kept."""

    model: str = "resnet"
    data: str = "digits"
    epochs: int = 3
    images: int = 16
    dots_per_layer: int = 48
    seed: int = 0
    #: The model's width multiplier (lba_train.models.build_model; the sweep's --width).
    width: int = 1

    def describe(self) -> str:
        if self.model == MINILM:
            return (f"all-MiniLM-L6-v2 (pretrained, lba_train.minilm), lbaify'd, the first {self.images} sentences of "
                    f"data/sentences/eval.txt in one padded batch, {self.dots_per_layer} sampled dot products per "
                    "layer (per inference = per sentence, padding included)")
        widened = f" at width {self.width}" if self.width != 1 else ""
        return (f"{self.model}{widened} on {self.data} ({self.epochs} float epochs, seed {self.seed}), lbaify'd, "
                f"{self.images} validation images, {self.dots_per_layer} sampled dot products per layer")


def value_codes(fmt: "FloatFormat | FixedFormat") -> tuple[np.ndarray, np.ndarray]:
    """Sorted representable values of ``fmt`` (floating-point, integer or fixed-point) and their codes (+0
    for zero)."""
    pairs: dict[float, int] = {}
    for code in fmt.codes():
        value = float(fmt.decode(code))
        if value not in pairs or code < pairs[value]:
            pairs[value] = code
    values = np.array(sorted(pairs))
    return values, np.array([pairs[value] for value in values])


def encode(values: np.ndarray, fmt: "FloatFormat | FixedFormat") -> np.ndarray:
    """Codes of values already on ``fmt``'s grid (what the layers' quantizers produce)."""
    grid, codes = value_codes(fmt)
    position = np.clip(np.searchsorted(grid, values), 0, len(grid) - 1)
    if not np.array_equal(grid[position], values):
        raise ValueError(f"operands off the {fmt.name} grid: the quantizers and the format disagree")
    return codes[position]


def _source_fingerprint() -> str:
    # find_spec locates the package without executing it: importing lba_train would load torch (~1.3 s)
    # on every warm synthesis whose operand streams are already cached.
    digest = hashlib.sha256()
    root = Path(importlib.util.find_spec("lba_train").origin).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def capture_streams(cfg: MacConfig, spec: StreamSpec) -> list[dict[str, Any]]:
    """Per LBA layer: ``{"layer", "length", "a": [[codes]], "b": [[codes]]}``, one row per sampled dot
    product (input codes in cfg.a_format, weight codes in cfg.b_format)."""
    import torch

    from lba_train.convert import lba_layers, lbaify, set_lba_config
    from lba_train.data import load_data
    from lba_train.train import train_baseline

    if spec.model == MINILM:
        from lba_train import minilm

        model = minilm.lbaify_minilm(minilm.load_minilm(), cfg)
        sentences = minilm.read_sentences(MINILM_SENTENCES)[: spec.images]
        tokens = minilm.tokenize(minilm.load_tokenizer(), sentences, batch_size=len(sentences))[0]
        examples, run = len(sentences), lambda: model(**tokens)
    else:
        bundle = load_data(spec.data, seed=spec.seed)
        model = lbaify(train_baseline(spec.model, bundle, spec.epochs, seed=spec.seed, width=spec.width).model.eval(),
                       cfg)
        images = torch.cat([batch[0] for batch in bundle.val])[: spec.images]
        examples, run = images.shape[0], lambda: model(images)
    set_lba_config(model, exact_accumulation=True)
    rng = np.random.default_rng(spec.seed)
    streams: list[dict[str, Any]] = []

    def hook(name):
        def capture(layer, inputs, output):
            with torch.no_grad():
                if hasattr(layer, "weight"):
                    first, second = inputs[0], layer.weight
                else:  # LBAMatMul: a product of two activations, broadcast as the layer does
                    batch = torch.broadcast_shapes(inputs[0].shape[:-2], inputs[1].shape[:-2])
                    first = inputs[0].expand(*batch, *inputs[0].shape[-2:])
                    second = inputs[1].expand(*batch, *inputs[1].shape[-2:])
                a, _ = layer.input_quantizer(first)
                b, _ = layer.weight_quantizer(second)
                pairs = [(rows.double().numpy(), columns.double().numpy())
                         for rows, columns in layer.gemm_operands(a, b)]
                # One stream per layer: dot products sampled over all its (M, K) @ (K, N) pairs (groups,
                # batch and heads of a matmul) alike.
                sizes = np.array([rows.shape[0] * columns.shape[1] for rows, columns in pairs])
                count = min(spec.dots_per_layer, int(sizes.sum()))
                picks = rng.choice(int(sizes.sum()), count, replace=False)
                pair_index = np.searchsorted(np.cumsum(sizes), picks, side="right")
                offsets = picks - np.concatenate([[0], np.cumsum(sizes)[:-1]])[pair_index]
                a_rows, b_columns = [], []
                for pair, offset in zip(pair_index, offsets):
                    rows, columns = pairs[pair]
                    row, column = divmod(int(offset), columns.shape[1])
                    a_rows.append(rows[row])
                    b_columns.append(columns[:, column])
                length = pairs[0][0].shape[1]
                streams.append({
                    "layer": name,
                    "length": int(length),
                    "macs_per_image": int(sizes.sum()) * length // examples,
                    "a": encode(np.array(a_rows), cfg.a_format).tolist(),
                    "b": encode(np.array(b_columns), cfg.b_format).tolist(),
                })
        return capture

    handles = [layer.register_forward_hook(hook(name)) for name, layer in lba_layers(model)]
    with torch.no_grad():
        run()
    for handle in handles:
        handle.remove()
    return streams


def streams_key(cfg: MacConfig, spec: StreamSpec) -> str:
    """The cache key of :func:`cached_streams`: input formats, spec and the lba_train sources."""
    return content_key("operand-streams", cfg.a_format.name, cfg.b_format.name,
                       json.dumps(asdict(spec), sort_keys=True), _source_fingerprint())


def cached_streams(cfg: MacConfig, spec: StreamSpec, cache: ResultCache) -> list[dict[str, Any]]:
    """:func:`capture_streams`, kept in ``cache`` under :func:`streams_key`."""
    key = streams_key(cfg, spec)
    streams = cache.get(key)
    if streams is None:
        streams = capture_streams(cfg, spec)
        cache.put(key, streams)
    return streams


def random_streams(cfg: MacConfig, like: list[dict[str, Any]], seed: int = 1) -> list[dict[str, Any]]:
    """Uniformly random codes (every code of the formats equally likely) with the shapes of ``like``."""
    rng = np.random.default_rng(seed)
    result = []
    for stream in like:
        shape = (len(stream["a"]), stream["length"])
        result.append({"layer": stream["layer"], "length": stream["length"],
                       "macs_per_image": stream["macs_per_image"],
                       "a": rng.integers(0, 1 << cfg.a_format.width, shape).tolist(),
                       "b": rng.integers(0, 1 << cfg.b_format.width, shape).tolist()})
    return result

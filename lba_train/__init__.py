"""lba_train: a bit-true PyTorch simulator of low-bit-width accumulation and the paper's training methods."""

from lba_core import FloatFormat, MacConfig

from .quantize import quantize
from .reference import reference_dot

__all__ = ["FloatFormat", "MacConfig", "quantize", "reference_dot"]

from .events import EventStats
from .gemm import lba_bmm, lba_conv2d, lba_linear, lba_matmul

__all__ += ["EventStats", "lba_bmm", "lba_conv2d", "lba_linear", "lba_matmul"]

from .convert import (
    accumulator_coverage, event_stats_table, layer_dot_products, lba_layers, lbaify, set_collect_stats, set_lba_config,
)
from .data import DataBundle, load_data, load_digits_data, load_image_folder, load_mnist
from .layers import LayerOptions, LBAConv1d, LBAConv2d, LBALinear, LBAMatMul, MatMul
from .products import AccumulatorCoverage, LBAProducts
from .models import MLP, SmallResNet, TinyTransformer, build_model
from .quantizers import TensorQuantizer
from .train import TrainOptions, TrainResult, evaluate, train_baseline, train_float
from .finetuning import FinetuneOptions, FinetuneResult, finetune, run_accuracy_point

__all__ += [
    "AccumulatorCoverage", "DataBundle", "FinetuneOptions", "FinetuneResult", "LBAConv1d", "LBAConv2d", "LBALinear",
    "LBAMatMul", "LBAProducts", "LayerOptions", "MLP", "MatMul", "SmallResNet", "TensorQuantizer", "TinyTransformer",
    "TrainOptions", "TrainResult", "accumulator_coverage", "build_model", "evaluate", "event_stats_table", "finetune",
    "layer_dot_products", "lba_layers", "lbaify", "load_data", "load_digits_data", "load_image_folder", "load_mnist", "run_accuracy_point",
    "set_collect_stats", "set_lba_config", "train_baseline", "train_float",
]

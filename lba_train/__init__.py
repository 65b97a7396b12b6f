"""lba_train: a bit-true PyTorch simulator of low-bit-width accumulation and the paper's training methods."""

from lba_core import FloatFormat, MacConfig

from .quantize import quantize
from .reference import reference_dot

__all__ = ["FloatFormat", "MacConfig", "quantize", "reference_dot"]

"""Kernels of the bit-true simulator: the GEMM backends and their dispatch (compiled on first use, cached on disk).

``estimators_numba`` holds the backward kernels of ``lba_train.estimators``.
"""

from .vector_width import import_numba_with_512_bit_vectors

import_numba_with_512_bit_vectors()  # before any kernel module imports Numba (process-wide: see vector_width)

from .dispatch import AUTO_ORDER, KERNELS, Kernel, available_kernels, check_config, gemm_values, select_kernel
from .plan import GemmPlan, RoundSpec, plan_gemm

__all__ = [
    "AUTO_ORDER",
    "KERNELS",
    "GemmPlan",
    "Kernel",
    "RoundSpec",
    "available_kernels",
    "check_config",
    "gemm_values",
    "plan_gemm",
    "select_kernel",
]

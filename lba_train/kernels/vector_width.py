"""512-bit vectors for the Numba kernels on AVX-512 CPUs: the one place that sets Numba's CPU features.

LLVM compiles for these CPUs with 256-bit vectors by default (its "prefer-256-bit" tuning for Intel cores,
against the clock slow-down that 512-bit instructions cost on older ones). The binary32-lane GEMM kernel is
bound by vector operations per MAC, and 512-bit registers hold twice the lanes: 1.3-1.8x faster at
256x1024x256 (docs/simulator.md, "Performance"). Numba has no per-function setting for this: its CPU features
(``NUMBA_CPU_FEATURES``) are read once per process, when Numba is imported. So this module, run by
``lba_train.kernels`` before any of its modules imports Numba, sets that variable for the import and puts the
environment back as it was (child processes decide for themselves), and only when all of these hold:

- Numba is not imported yet (afterwards the setting could no longer take effect; nothing is changed);
- the user has not set ``NUMBA_CPU_FEATURES`` themselves (their setting wins, whatever it is);
- the host CPU has AVX-512 (``avx512f``).

It then applies to every Numba function of the process, the user's own included. To keep LLVM's default,
set ``NUMBA_CPU_FEATURES`` yourself, e.g. to the host's features
(``python -c "import llvmlite.binding as ll; print(ll.get_host_cpu_features().flatten())"``).
"""

from __future__ import annotations

import os
import sys

FEATURES_VARIABLE = "NUMBA_CPU_FEATURES"
PREFER_512_BIT = "-prefer-256-bit"


def preferred_features() -> str | None:
    """The host's CPU features without the 256-bit preference on an AVX-512 CPU; None elsewhere."""
    try:
        import llvmlite.binding as llvm
    except ImportError:  # no Numba installed: nothing to set
        return None
    try:
        features = llvm.get_host_cpu_features()
    except RuntimeError:  # LLVM cannot read this host's features: keep its defaults
        return None
    if not features.get("avx512f", False):
        return None
    return f"{features.flatten()},{PREFER_512_BIT}"


def import_numba_with_512_bit_vectors() -> str | None:
    """Import Numba with 512-bit vectors preferred where the conditions above hold; returns the features set."""
    if "numba" in sys.modules or FEATURES_VARIABLE in os.environ:
        return None
    features = preferred_features()
    if features is None:
        return None
    os.environ[FEATURES_VARIABLE] = features
    try:
        import numba  # noqa: F401  (creates the CPU code generator with these features)
    except ImportError:  # llvmlite without Numba: the portable kernels run
        return None
    finally:
        del os.environ[FEATURES_VARIABLE]
    return features

"""lba_train.kernels.vector_width: 512-bit vectors for Numba on AVX-512 hosts, and the user's own setting wins.

Each case runs in a fresh interpreter: Numba's CPU features are fixed when Numba is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lba_train.kernels.vector_width import FEATURES_VARIABLE, PREFER_512_BIT, preferred_features

REPORT = """
import json, os, sys
{first}
from numba.core.registry import cpu_target
print(json.dumps({{"features": cpu_target.target_context.codegen().magic_tuple()[2],
                   "environment": os.environ.get("{variable}")}}))
"""


def codegen_features(first: str, environment: dict[str, str]) -> dict:
    """The features Numba's CPU code generator got, and NUMBA_CPU_FEATURES after the imports in ``first``."""
    script = REPORT.format(first=first, variable=FEATURES_VARIABLE)
    env = {key: value for key, value in os.environ.items() if key != FEATURES_VARIABLE} | environment
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_users_own_numba_cpu_features_win():
    import llvmlite.binding as llvm

    own = llvm.get_host_cpu_features().flatten()  # the host's features, 256-bit preference kept
    report = codegen_features("import lba_train", {FEATURES_VARIABLE: own})
    assert report == {"features": own, "environment": own}


def test_numba_imported_first_is_left_as_it_is():
    report = codegen_features("import numba, lba_train", {})
    assert PREFER_512_BIT not in report["features"]
    assert report["environment"] is None


def test_avx512_hosts_get_512_bit_vectors_and_the_environment_back():
    features = preferred_features()
    if features is None:
        pytest.skip("the host CPU has no AVX-512")
    report = codegen_features("import lba_train", {})
    assert report == {"features": features, "environment": None}

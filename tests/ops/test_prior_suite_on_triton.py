"""The core prior and regularizer tests, re-run with every op forced onto the Triton kernels.

Tests that compare against torch's own RNG stream opt out with the ``torch_backend``
fixture; everything else must hold whichever backend draws the noise.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]


def test_core_prior_suite_passes_on_the_triton_backend():
    files = sorted(str(p) for pattern in ("test_prior*.py", "test_regularizers*.py") for p in TESTS.glob(pattern))
    assert files, f"no core prior/regularizer tests found under {TESTS}"
    # the core tests use CPU tensors: the interpreter runs the kernels (set before the child imports triton)
    env = dict(os.environ, ADARAND_BACKEND="triton", TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                            cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (f"core suite failed on the triton backend:\n"
                                    f"{result.stdout[-6000:]}\n{result.stderr[-2000:]}")

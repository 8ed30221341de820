"""Kernel tests run the compiled kernels on CUDA, else Triton's interpreter on the CPU.

``TRITON_INTERPRET`` is read when ``@triton.jit`` decorates a function, so it is set
here, at import time, and the tests import the ``*_triton`` kernel modules only inside
the test functions. Triton's own jit helpers (``tl.randn``, ``tl.sum``, ...) are
decorated when ``triton`` is first imported; if that happened before this file ran
(``tests/conftest.py`` imports ``adarand``, which imports ``triton``), they are
re-decorated once in interpreter mode. Setting ``TRITON_INTERPRET=1`` in the
environment (or in ``tests/conftest.py`` before ``import adarand``) makes that a no-op.
"""
import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

ON_CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
if not ON_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

triton = pytest.importorskip("triton", reason="the fused kernels need triton")


def _interpret_triton_language():
    """Re-run the decorators of triton.language's jit helpers now that the interpreter is on."""
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    if not isinstance(tl.randn, JITFunction):
        return  # triton was imported with the interpreter already on
    for module_name in ("triton.language.random", "triton.language.standard"):
        module = importlib.reload(sys.modules[module_name])
        for name in dir(tl):
            if isinstance(getattr(tl, name), JITFunction) and hasattr(module, name):
                setattr(tl, name, getattr(module, name))


if not ON_CUDA:
    _interpret_triton_language()


@pytest.fixture
def device():
    return torch.device("cuda" if ON_CUDA else "cpu")


_COMPILE_FOR_SM90 = """
import importlib, json, sys
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

for module, kernel, signature, constexprs in json.loads(sys.argv[1]):
    fn = getattr(importlib.import_module(module), kernel)
    constexprs = {k: getattr(tl, v[3:]) if str(v).startswith("tl.") else v for k, v in constexprs.items()}
    triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
"""


@pytest.fixture
def compile_for_sm90():
    """Compile kernels ahead of time for an H100 (sm_90, Triton's bundled ptxas) with no GPU present.

    The interpreter never builds the compiled path; this does, down to a cubin, in a child
    process where TRITON_INTERPRET is off. Each job: (module, kernel, signature, constexprs),
    with dtype constexprs spelt ``"tl.float32"``.
    """
    def run(jobs):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        here = os.path.dirname(os.path.abspath(__file__))  # the tests' own kernels (noise_probe.py)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
        result = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90, json.dumps(jobs)], env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]

    return run

import os

import pytest
import torch

# Triton reads TRITON_INTERPRET when it first loads its language helpers, which happens on
# `import adarand`: set it first, so the kernel tests run under the interpreter on CPU-only
# machines. `auto` still sends CPU tensors to the torch path.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import adarand  # noqa: E402


# The core prior and regularizer tests run twice: on the default path, and with every op forced onto
# the Triton kernels (Triton's interpreter runs them on these CPU tensors; marked slow, and skipped,
# so that the gap shows, where the interpreter is off). Tests that compare against torch's own RNG
# stream ask for ``torch_backend`` and run once.
CORE_MODULES = ("test_prior", "test_prior_optim", "test_prior_step", "test_regularizers")
TRITON_RUN = pytest.param("triton", marks=[
    pytest.mark.slow, pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                         reason="the forced-Triton run of the core tests needs TRITON_INTERPRET=1")])


def pytest_generate_tests(metafunc):
    module = metafunc.module.__name__.rpartition(".")[2]
    if module in CORE_MODULES and "torch_backend" not in metafunc.fixturenames:
        metafunc.parametrize("backend_under_test", ["default", TRITON_RUN], indirect=True)


@pytest.fixture(autouse=True)
def backend_under_test(request):
    """``triton`` for the core tests' second run (see :data:`CORE_MODULES`), else the default dispatch."""
    backend = getattr(request, "param", "default")
    if backend == "triton":
        adarand.set_backend("triton")
        yield backend
        adarand.set_backend(None)
    else:
        yield backend


@pytest.fixture(params=["torch", pytest.param("triton", marks=pytest.mark.skipif(not adarand.ops.HAS_TRITON,
                                                                               reason="no triton"))])
def backend(request):
    """Every op forced onto each backend in turn (the fused kernels under Triton's interpreter on a CPU)."""
    adarand.set_backend(request.param)
    yield request.param
    adarand.set_backend(None)


@pytest.fixture
def torch_backend():
    """Force the PyTorch path: for tests that compare against torch's own RNG stream."""
    adarand.set_backend("torch")
    yield
    adarand.set_backend(None)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)

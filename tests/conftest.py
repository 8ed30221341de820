import os

import pytest
import torch

# Triton reads TRITON_INTERPRET when it first loads its language helpers, which happens on
# `import adarand`: set it first, so the kernel tests run under the interpreter on CPU-only
# machines. `auto` still sends CPU tensors to the torch path.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import adarand  # noqa: E402


@pytest.fixture
def torch_backend():
    """Force the PyTorch path: for tests that compare against torch's own RNG stream."""
    adarand.set_backend("torch")
    yield
    adarand.set_backend(None)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)

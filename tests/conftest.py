import pytest
import torch

import adarand


@pytest.fixture
def torch_backend():
    """Force the PyTorch path: for tests that compare against torch's own RNG stream."""
    adarand.set_backend("torch")
    yield
    adarand.set_backend(None)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)

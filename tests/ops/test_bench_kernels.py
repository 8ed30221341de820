"""tools/bench/bench_kernels.py off a GPU: the segmentation shapes are there, and every class-sums provider it
times computes the PyTorch path's sums (the kernels under Triton's interpreter, row blocks lowered to fit)."""
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "tools" / "bench" / "bench_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_segmentation_shapes(bench):
    seg = {v for k, v in bench.SHAPES.items() if k.startswith("seg")}
    assert seg == {(2**k, 21, dim, 0.7) for k in range(16, 21) for dim in (128, 256)}


def test_class_sums_providers_agree(bench, device, monkeypatch):
    import adarand.ops.class_ema_triton as class_ema_triton
    from adarand.ops.class_ema import _class_sums_ref

    monkeypatch.setattr(class_ema_triton, "SINGLE_BLOCK_ROWS", 32)
    monkeypatch.setattr(class_ema_triton, "ROWS_PER_BLOCK", 32)
    monkeypatch.setitem(bench.SHAPES, "seg_toy", (200, 21, 41, 0.7))
    problem = bench.make_problem("seg_toy", torch.float32, device)
    assert (problem["labels"] == 0).float().mean() > 0.6
    ref = _class_sums_ref(problem["features"], problem["labels"], 21)
    for provider in bench.PROVIDERS["class_sums"]:
        call, _ = bench.make_call("class_sums", provider, problem)
        torch.testing.assert_close(call(), ref, atol=1e-5, rtol=1e-5)

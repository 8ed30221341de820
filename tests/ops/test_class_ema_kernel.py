"""Fused per-class sums and EMA apply vs the PyTorch reference path."""
import pytest
import torch

from adarand.ops.class_ema import _class_sums_ref, _ema_apply_ref_, class_ema_

# (B, C, D, dominant): empty and single-row batches, one class, C > B, odd feature sizes, and
# detection-like batches where 90% of the rows are one class spread over many row blocks
_SHAPES = [(0, 3, 41, False), (1, 1, 129, False), (7, 10, 41, False), (100, 1, 5, False), (5, 40, 8, False),
           (300, 20, 41, True), (70, 10, 129, True)]
# (dtype, atol, rtol) of the running means, kept in the features' dtype
_DTYPES = [
    (torch.float32, 1e-6, 1e-5),
    (torch.bfloat16, 1e-2, 1.6e-2),
    (torch.float16, 1e-3, 2e-3),
    (torch.float64, 1e-12, 1e-12),
]


def _batch(batch, num_classes, dim, dtype, device, dominant=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, dim, generator=g).to(device, dtype)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    if dominant:
        labels[torch.rand(batch, generator=g) < 0.9] = num_classes // 2
    return features, labels.to(device)


@pytest.mark.parametrize("dtype, atol, rtol", _DTYPES)
@pytest.mark.parametrize("batch, num_classes, dim, dominant", _SHAPES)
def test_class_sums_match_reference(device, batch, num_classes, dim, dominant, dtype, atol, rtol):
    from adarand.ops.class_ema_triton import class_sums_triton

    f, y = _batch(batch, num_classes, dim, dtype, device, dominant)
    out = class_sums_triton(f, y, num_classes)
    ref = _class_sums_ref(f, y, num_classes)
    assert out.shape == (num_classes, dim + 1) and out.dtype == ref.dtype
    assert torch.equal(out[:, -1], ref[:, -1])  # counts are exact
    torch.testing.assert_close(out, ref, atol=1e-5 if dtype != torch.float64 else 1e-12, rtol=1e-5)


@pytest.mark.parametrize("dtype, atol, rtol", _DTYPES)
@pytest.mark.parametrize("batch, num_classes, dim, dominant", _SHAPES)
def test_ema_apply_matches_reference_and_leaves_absent_classes(device, batch, num_classes, dim, dominant, dtype,
                                                               atol, rtol):
    from adarand.ops.class_ema_triton import ema_apply_triton_

    f, y = _batch(batch, num_classes, dim, dtype, device, dominant)
    sums = _class_sums_ref(f, y, num_classes)
    start = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    ours, ref = start.clone(), start.clone()
    ema_apply_triton_(ours, sums, 0.3)
    _ema_apply_ref_(ref, sums, 0.3)
    torch.testing.assert_close(ours, ref, atol=atol, rtol=rtol)
    absent = sums[:, -1] == 0
    assert torch.equal(ours[absent], start[absent])  # bit-for-bit untouched


def test_class_ema_through_public_op_matches_explicit_loop(device):
    """Eq. 14-15 against a per-class loop in float64, through class_ema_(impl='triton')."""
    f, y = _batch(300, 20, 41, torch.float32, device, dominant=True)
    running = torch.randn(20, 41, generator=torch.Generator().manual_seed(2)).to(device, torch.float64)
    expected = running.clone()
    for c in range(20):
        rows = f.double()[y == c]
        if len(rows):
            expected[c] = 0.5 * expected[c] + 0.5 * rows.mean(0)
    class_ema_(running, f, y, 0.5, impl="triton")
    torch.testing.assert_close(running, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("local, other_rank", [("finite", "finite"), ("nan", "finite"), ("finite", "inf")])
def test_distributed_fused_path_equals_the_torch_path_from_one_flag(device, monkeypatch, local, other_rank):
    """Two ranks simulated (the all-reduce adds the other rank's sums): the all-reduced sums decide, the fused path
    skips a non-finite batch as the torch path does, and its apply kernel reads one flag, not C x (D + 1)."""
    import importlib

    import adarand.ops.class_ema_triton as class_ema_triton

    class_ema = importlib.import_module("adarand.ops.class_ema")  # the module: adarand.ops re-exports class_ema_
    f, y = _batch(30, 4, 41, torch.float32, device)
    if local == "nan":
        f[3, 5] = float("nan")
    other = _class_sums_ref(*_batch(30, 4, 41, torch.float32, device, seed=1), 4)
    if other_rank == "inf":
        other[2, 7] = float("inf")
    monkeypatch.setattr(class_ema, "world_size", lambda: 2)
    monkeypatch.setattr(class_ema, "all_reduce_sum_", lambda sums: sums.add_(other))
    flags_read, apply = [], class_ema_triton.ema_apply_triton_
    monkeypatch.setattr(class_ema_triton, "ema_apply_triton_",
                        lambda *args: flags_read.append(args[3].numel()) or apply(*args))
    start = torch.randn(4, 41, generator=torch.Generator().manual_seed(3)).to(device)
    ours, ref = start.clone(), start.clone()
    applied = class_ema_(ours, f, y, 0.5, impl="triton")
    expected = class_ema_(ref, f, y, 0.5, impl="torch")
    assert bool(applied) == bool(expected) == (local == other_rank == "finite")
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    assert bool(applied) or torch.equal(ours, start)
    assert flags_read == [1]


def test_single_class_filling_the_batch(device):
    from adarand.ops.class_ema_triton import class_sums_triton, ema_apply_triton_

    f, _ = _batch(257, 5, 129, torch.float32, device)
    y = torch.full((257,), 4, device=device)
    out = class_sums_triton(f, y, 5)
    torch.testing.assert_close(out[4, :-1], f.double().sum(0).float(), atol=1e-4, rtol=1e-5)
    assert out[4, -1].item() == 257 and not out[:4].any()
    running = torch.zeros(5, 129, device=device)
    ema_apply_triton_(running, out, 0.0)
    torch.testing.assert_close(running[4], f.mean(0), atol=1e-6, rtol=1e-5)
    assert not running[:4].any()


def test_int32_labels_and_non_contiguous_inputs(device):
    from adarand.ops.class_ema_triton import class_sums_triton, ema_apply_triton_

    f, y = _batch(40, 6, 82, torch.float32, device)
    f = f[:, ::2]  # 40 x 41, strided
    out = class_sums_triton(f, y.int(), 6)
    torch.testing.assert_close(out, _class_sums_ref(f, y, 6))
    storage = torch.randn(6, 82, device=device)
    running, ref = storage[:, ::2], storage[:, ::2].clone()
    ema_apply_triton_(running, out, 0.5)
    _ema_apply_ref_(ref, out, 0.5)
    torch.testing.assert_close(storage[:, ::2], ref)


def test_deterministic_mode_is_bit_identical(device):
    from adarand.ops.class_ema_triton import class_sums_triton, ema_apply_triton_

    f, y = _batch(300, 20, 129, torch.float32, device, dominant=True)
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        runs = []
        for _ in range(2):
            sums = class_sums_triton(f, y, 20)
            running = torch.ones(20, 129, device=device)
            runs.append((sums, ema_apply_triton_(running, sums, 0.5)))
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA every other test runs the compiled kernels")
@pytest.mark.parametrize("dtype, acc", [("bf16", "fp32"), ("fp64", "fp64")])
@pytest.mark.slow
def test_kernels_compile_for_sm90(compile_for_sm90, dtype, acc):
    module = "adarand.ops.class_ema_triton"
    acc_tl = "tl.float64" if acc == "fp64" else "tl.float32"
    const = {"ACC": "constexpr", "BLOCK_D": "constexpr"}
    compile_for_sm90([
        (module, "_class_sums_kernel",
         {"f_ptr": f"*{dtype}", "labels_ptr": "*i64", "out_ptr": f"*{acc}", "flags_ptr": "*i32", "B": "i32",
          "D": "i32", "ACC": "constexpr", "BLOCK_R": "constexpr", "BLOCK_D": "constexpr"},
         {"ACC": acc_tl, "BLOCK_R": 32, "BLOCK_D": 128}),
        (module, "_ema_apply_kernel",
         {"mean_ptr": f"*{dtype}", "sums_ptr": f"*{acc}", "flags_ptr": "*i32", "applied_ptr": "*i1", "D": "i32",
          "NFLAGS": "i32", "alpha_hi": "fp32", "alpha_lo": "fp32", **const, "BLOCK_F": "constexpr"},
         {"ACC": acc_tl, "BLOCK_D": 128, "BLOCK_F": 1024}),
        (module, "_ema_apply_kernel",  # one bool flag: under torch.distributed, or none (``applied`` stands in)
         {"mean_ptr": f"*{dtype}", "sums_ptr": f"*{acc}", "flags_ptr": "*i1", "applied_ptr": "*i1", "D": "i32",
          "NFLAGS": "i32", "alpha_hi": "fp32", "alpha_lo": "fp32", **const, "BLOCK_F": "constexpr"},
         {"ACC": acc_tl, "BLOCK_D": 128, "BLOCK_F": 1024}),
    ])


def test_bad_shapes_name_the_problem(device):
    from adarand.ops.class_ema_triton import class_sums_triton, ema_apply_triton_

    f, y = _batch(4, 3, 8, torch.float32, device)
    with pytest.raises(ValueError, match="B labels"):
        class_sums_triton(f, y[:3], 3)
    with pytest.raises(ValueError, match="sums_and_counts must be 3 x 9"):
        ema_apply_triton_(torch.zeros(3, 8, device=device), torch.zeros(3, 8, device=device), 0.5)

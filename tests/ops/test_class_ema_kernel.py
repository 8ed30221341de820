"""Fused per-class sums and EMA apply vs the PyTorch reference path."""
import pytest
import torch

from adarand import IGNORE_INDEX
from adarand.ops.class_ema import _class_sums_ref, _ema_apply_ref_, _nonfinite_flags_ref, class_ema_

# (B, C, D, dominant share): empty and single-row batches, one class, C > B, odd feature sizes, and
# detection-like batches where 90% of the rows are one class spread over many BLOCK_R steps
_SHAPES = [(0, 3, 41, None), (1, 1, 129, None), (7, 10, 41, None), (100, 1, 5, None), (5, 40, 8, None),
           (300, 20, 41, 0.9), (70, 10, 129, 0.9)]
# (B, C, D, row blocks asked, dominant share): segmentation-like batches cut into row blocks (the two-level sum),
# ~70 % of the rows one class (background); C = 1, B = 0 and 1, odd D, D over one column block, more row
# blocks asked than the rows fill
_ROW_BLOCK_SHAPES = [(300, 21, 41, 4, 0.7), (257, 21, 129, 3, 0.7), (200, 1, 5, 5, None), (0, 3, 41, 4, None),
                     (1, 4, 7, 3, None), (96, 5, 8, 100, 0.7)]
# (dtype, atol, rtol) of the running means, kept in the features' dtype
_DTYPES = [
    (torch.float32, 1e-6, 1e-5),
    (torch.bfloat16, 1e-2, 1.6e-2),
    (torch.float16, 1e-3, 2e-3),
    (torch.float64, 1e-12, 1e-12),
]


def _batch(batch, num_classes, dim, dtype, device, dominant=None, seed=0):
    """Features and labels; ``dominant``: the share of the rows given class C // 2."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, dim, generator=g).to(device, dtype)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    if dominant:
        labels[torch.rand(batch, generator=g) < dominant] = num_classes // 2
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


def _pixel_batch(batch, num_classes, dim, dtype, device, dominant):
    """A batch as :func:`_batch` with ignored rows and labels out of range on both sides."""
    f, y = _batch(batch, num_classes, dim, dtype, device, dominant)
    y[::11] = IGNORE_INDEX
    y[5::23] = num_classes + 3
    y[7::29] = -7
    return f, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("batch, num_classes, dim, row_blocks, dominant", _ROW_BLOCK_SHAPES)
def test_sums_over_row_blocks_match_reference(device, batch, num_classes, dim, row_blocks, dominant, dtype):
    from adarand.ops.class_ema_triton import class_sums_and_flags_triton

    f, y = _pixel_batch(batch, num_classes, dim, dtype, device, dominant)
    out, flags = class_sums_and_flags_triton(f, y, num_classes, row_blocks)
    ref = _class_sums_ref(f, y, num_classes)
    assert out.shape == (num_classes, dim + 1) and out.dtype == ref.dtype
    assert torch.equal(out[:, -1], ref[:, -1])  # counts are exact
    torch.testing.assert_close(out, ref, atol=1e-5 if dtype != torch.float64 else 1e-12, rtol=1e-5)
    assert flags.shape == (num_classes, -(-dim // 128)) and not flags.any()


def test_two_row_blocks_add_each_blocks_one_launch_sums_exactly(device):
    """The two-level sum is the one-row-block kernel on each block of rows, then the blocks' sums added."""
    from adarand.ops.class_ema_triton import class_sums_triton

    f, y = _pixel_batch(300, 21, 41, torch.float32, device, 0.7)
    first, second = class_sums_triton(f[:160], y[:160], 21, 1), class_sums_triton(f[160:], y[160:], 21, 1)
    assert torch.equal(class_sums_triton(f, y, 21, row_blocks=2), first + second)  # 160 rows (5 x BLOCK_R), 140


def test_row_blocks_follow_the_batch_and_bound_the_partials():
    from adarand.ops.class_ema_triton import MAX_PARTIALS, MAX_ROW_BLOCKS, SINGLE_BLOCK_ROWS, num_row_blocks

    assert num_row_blocks(64, 196, 2048) == 1  # classification: one launch, as before
    assert num_row_blocks(SINGLE_BLOCK_ROWS, 21, 1024) == 1  # 8192 detection ROIs: the same
    assert num_row_blocks(2**16, 21, 128) == 64 and num_row_blocks(2**20, 21, 128) == MAX_ROW_BLOCKS
    assert num_row_blocks(2**20, 21, 256) == MAX_PARTIALS // (21 * 257)  # the partials' bound
    for batch, num_classes, dim in ((2**20, 21, 256), (2**20, 196, 2048), (2**17, 1000, 4096), (2**20, 1, 1)):
        blocks = num_row_blocks(batch, num_classes, dim)
        assert 1 <= blocks <= MAX_ROW_BLOCKS
        assert blocks == 1 or blocks * num_classes * (dim + 1) <= MAX_PARTIALS


def _row_blocks_for_small_batches(monkeypatch):
    """Make the default path cut batches of over 32 rows into row blocks of 32 (the interpreter is slow)."""
    import adarand.ops.class_ema_triton as class_ema_triton

    monkeypatch.setattr(class_ema_triton, "SINGLE_BLOCK_ROWS", 32)
    monkeypatch.setattr(class_ema_triton, "ROWS_PER_BLOCK", 32)


def test_row_blocks_flag_non_finite_sums_and_the_ema_skips_the_batch(device, monkeypatch):
    """The finishing kernel flags the final sums: inf in one row block and -inf in another give NaN, flagged."""
    from adarand.ops.class_ema_triton import class_sums_and_flags_triton

    _row_blocks_for_small_batches(monkeypatch)
    f, y = _pixel_batch(200, 4, 200, torch.float32, device, 0.7)
    y[[3, 150, 100]] = torch.tensor([1, 1, 2], device=device)
    f[3, 5], f[150, 5], f[100, 140] = float("inf"), float("-inf"), float("nan")
    sums, flags = class_sums_and_flags_triton(f, y, 4)
    assert torch.equal(flags, _nonfinite_flags_ref(_class_sums_ref(f, y, 4)))
    assert flags[1, 0] == 1 and flags[2, 1] == 1 and flags.sum() == 2
    start = torch.randn(4, 200, generator=torch.Generator().manual_seed(4)).to(device)
    running = start.clone()
    assert not bool(class_ema_(running, f, y, 0.5, impl="triton"))
    assert torch.equal(running, start)
    f = torch.nan_to_num(f, nan=0.0, posinf=0.0, neginf=0.0)
    ref = start.clone()
    assert bool(class_ema_(running, f, y, 0.5, impl="triton")) and bool(class_ema_(ref, f, y, 0.5, impl="torch"))
    torch.testing.assert_close(running, ref, atol=1e-6, rtol=1e-5)


def test_row_blocks_issue_no_host_sync(device, monkeypatch):
    from sync_audit import SyncAudit

    _row_blocks_for_small_batches(monkeypatch)
    f, y = _pixel_batch(200, 21, 41, torch.float32, device, 0.7)
    running = torch.zeros(21, 41, device=device)
    with SyncAudit() as audit:
        class_ema_(running, f, y, 0.5, impl="triton")
    audit.assert_none_ours()


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
    f, y = _batch(300, 20, 41, torch.float32, device, dominant=0.9)
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


@pytest.mark.parametrize("row_blocks", [None, 5])
def test_deterministic_mode_is_bit_identical(device, row_blocks):
    from adarand.ops.class_ema_triton import class_sums_triton, ema_apply_triton_

    f, y = _batch(300, 20, 129, torch.float32, device, dominant=0.9)
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        runs = []
        for _ in range(2):
            sums = class_sums_triton(f, y, 20, row_blocks)
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
        *((module, "_class_sums_kernel",
           {"f_ptr": f"*{dtype}", "labels_ptr": "*i64", "out_ptr": f"*{acc}", "flags_ptr": "*i32", "B": "i32",
            "D": "i32", "ROWS": "i32", "ACC": "constexpr", "BLOCK_R": "constexpr", "BLOCK_D": "constexpr",
            "FINAL": "constexpr"},
           {"ACC": acc_tl, "BLOCK_R": 32, "BLOCK_D": 128, "FINAL": final}) for final in (True, False)),
        (module, "_class_sums_finish_kernel",
         {"partial_ptr": f"*{acc}", "out_ptr": f"*{acc}", "flags_ptr": "*i32", "R": "i32", "D": "i32", **const,
          "BLOCK_P": "constexpr"},
         {"ACC": acc_tl, "BLOCK_P": 32, "BLOCK_D": 128}),
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

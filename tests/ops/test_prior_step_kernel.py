"""The fused prior update (adarand.ops.prior_step_triton) against the PyTorch path, and its custom op."""
import pytest
import torch

from adarand.ops.prior_step import _prior_step_ref_, prior_step_

SHAPES = [(1, 5), (3, 1), (6, 9), (13, 4), (7, 600)]  # C = 1, D = 1, C <= D, C > D, D over one column block


def _state(num_classes, dim, dtype, device, zero_row=False):
    g = torch.Generator().manual_seed(num_classes * 100 + dim)
    mu = torch.randn(num_classes, dim, generator=g, dtype=dtype)
    running = torch.randn(num_classes, dim, generator=g, dtype=dtype)
    if zero_row:
        mu[0] = 0
        running[-1] = 0
    moments = torch.rand(2, num_classes, dim, generator=g, dtype=dtype) * 1e-3
    state = [mu, running, moments[0].clone(), moments[1].clone(), torch.tensor(2, dtype=torch.int64)]
    return [t.to(device) for t in state]


PRECISIONS = [(torch.float32, 1e-5), (torch.float64, 1e-10)]
CASES = [(shape, precision, terms, ("cosine_7_16", 5)) for shape in SHAPES for precision in PRECISIONS
         for terms in [(True, True), (False, True), (True, False)]]
CASES += [((6, 9), PRECISIONS[1], (True, True), schedule) for schedule in [("half_cosine", 3), ("constant", None)]]


@pytest.mark.parametrize("shape,precision,terms,schedule", CASES)
def test_fused_update_equals_the_torch_path_over_steps(device, shape, precision, terms, schedule):
    (num_classes, dim), (dtype, rtol), (use_mean, use_dist), (schedule, total_steps) = shape, precision, terms, schedule
    from adarand.ops.prior_step_triton import prior_step_triton_

    ours, ref = _state(num_classes, dim, dtype, device, zero_row=True), _state(num_classes, dim, dtype, device, True)
    for k in range(3):
        applied = torch.tensor(k != 1, device=device) if use_mean else None  # step 1 skipped
        args = (applied, 3e-2, 0.9, 0.999, 1e-8, schedule, total_steps, use_mean, use_dist)
        loss = prior_step_triton_(*ours, *args)
        expected = _prior_step_ref_(*ref, *args)
        torch.testing.assert_close(loss, expected, rtol=rtol, atol=rtol)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))
    assert int(ours[4]) == 5


def test_fused_update_is_bit_reproducible(device):
    from adarand.ops.prior_step_triton import prior_step_triton_

    runs = []
    for _ in range(2):
        state = _state(13, 40, torch.float32, device)
        for _ in range(3):
            prior_step_triton_(*state, None, 1e-2, 0.9, 0.999, 1e-8, "cosine_7_16", 10, True, True)
        runs.append(state)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("total_steps", [10, None])
@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_custom_op_passes_opcheck(device, impl, total_steps, monkeypatch):
    """adarand::prior_step_: schema, fake kernel, functionalization and dispatch checks, on both of its kernels."""
    import adarand.ops.prior_step as prior_step

    if impl == "torch" and device.type == "cpu":  # outside the interpreter the op's CPU kernel is the reference
        monkeypatch.setattr(prior_step, "triton_interpreter_on", lambda: False)
    state = _state(5, 7, torch.float32, device)
    args = (*state, torch.tensor(True, device=device), 1e-2, 0.9, 0.999, 1e-8, "cosine_7_16", total_steps, True, True)
    torch.library.opcheck(torch.ops.adarand.prior_step_.default, args)


def test_dispatch_reaches_the_custom_op_on_the_triton_backend(device):
    state, ref = _state(4, 6, torch.float32, device), _state(4, 6, torch.float32, device)
    loss = prior_step_(*state, lr=1e-2, total_steps=5, impl="triton")
    expected = prior_step_(*ref, lr=1e-2, total_steps=5, impl="torch")
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(state[0], ref[0])


@pytest.mark.parametrize("dtype,acc", [("fp32", "fp32"), ("fp64", "fp64")])
@pytest.mark.slow
def test_kernels_compile_for_sm90(compile_for_sm90, dtype, acc):
    module = "adarand.ops.prior_step_triton"
    acc_tl = "tl.float64" if acc == "fp64" else "tl.float32"
    flags = {"USE_MEAN": True, "USE_DIST": True, "ACC": acc_tl, "BLOCK_D": 512}
    compile_for_sm90([
        (module, "_prior_rows_kernel",
         {"mu_ptr": f"*{dtype}", "rm_ptr": f"*{dtype}", "unit_ptr": f"*{acc}", "stats_ptr": f"*{acc}",
          "row_loss_ptr": f"*{acc}", "C": "i32", "D": "i32", "eps_hi": "fp32", "eps_lo": "fp32",
          **{k: "constexpr" for k in flags}}, flags),
        (module, "_prior_adam_kernel",
         {"mu_ptr": f"*{dtype}", "rm_ptr": f"*{dtype}", "unit_ptr": f"*{acc}", "gram_unit_ptr": f"*{acc}",
          "stats_ptr": f"*{acc}", "row_loss_ptr": f"*{acc}", "avg_ptr": f"*{dtype}", "avg_sq_ptr": f"*{dtype}",
          "steps_ptr": "*i64",
          "applied_ptr": "*i1", "C": "i32", "D": "i32", "norm_eps_hi": "fp32", "norm_eps_lo": "fp32",
          **{name: "fp32" for name in ("lr_hi", "lr_lo", "log_b1_hi", "log_b1_lo", "log_b2_hi", "log_b2_lo",
                                       "one_b1_hi", "one_b1_lo", "b2_hi", "b2_lo", "one_b2_hi", "one_b2_lo",
                                       "eps_hi", "eps_lo")},
          "TOTAL": "i32", "WARMUP": "i32", "SCHEDULE": "constexpr", "HAS_APPLIED": "constexpr", **{k: "constexpr" for k in flags}},
         {"SCHEDULE": 1, "HAS_APPLIED": True, **flags}),
        (module, "_prior_finish_kernel",
         {"row_loss_ptr": f"*{acc}", "loss_ptr": f"*{dtype}", "steps_ptr": "*i64", "C": "i32", "BLOCK_C": "constexpr"},
         {"BLOCK_C": 1024}),
    ])


def _opcheck_cases(device):
    g = torch.Generator().manual_seed(5)
    f = torch.randn(7, 6, generator=g).to(device)
    y = torch.tensor([0, 2, 1, -100, 2, 2, 0], device=device)
    mu, sigma = torch.randn(3, 6, generator=g).to(device), torch.rand(3, 6, generator=g).to(device)
    seed = torch.tensor([1234], device=device)
    sums = torch.randn(3, 7, generator=g).abs().to(device)
    leaf = f.clone().requires_grad_(True)
    return {
        "target_loss_fwd": (leaf, y, mu, sigma, seed, "normal", 3),
        "target_loss_fwd (FNP)": (leaf, None, None, None, None, "normal", 2**31 - 1),
        "target_loss_bwd": (torch.tensor(2.0, device=device), f, y, mu, sigma, seed,
                            torch.tensor(6, device=device), "normal", 3),
        "class_sums": (f, y, 3),
        # 70 rows, cut into three row blocks under the test's thresholds: the two-kernel sum
        "class_sums (row blocks)": (torch.randn(70, 6, generator=g).to(device), torch.arange(70, device=device) % 4, 3),
        "ema_apply_": (mu.clone(), sums, 0.25),
    }


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("case", ["target_loss_fwd", "target_loss_fwd (FNP)", "target_loss_bwd", "class_sums",
                                  "class_sums (row blocks)", "ema_apply_"])
def test_loss_and_ema_custom_ops_pass_opcheck(device, impl, case, monkeypatch):
    """The fused loss (with its autograd formula) and the EMA kernels as custom ops, on both of their kernels."""
    import importlib

    class_ema = importlib.import_module("adarand.ops.class_ema")  # the modules: adarand.ops re-exports functions
    target_loss = importlib.import_module("adarand.ops.target_loss")
    if impl == "torch" and device.type == "cpu":
        monkeypatch.setattr(target_loss, "triton_interpreter_on", lambda: False)
        monkeypatch.setattr(class_ema, "triton_interpreter_on", lambda: False)
    if case == "class_sums (row blocks)":
        class_ema_triton = importlib.import_module("adarand.ops.class_ema_triton")
        monkeypatch.setattr(class_ema_triton, "SINGLE_BLOCK_ROWS", 32)
        monkeypatch.setattr(class_ema_triton, "ROWS_PER_BLOCK", 32)
    op = getattr(torch.ops.adarand, case.split(" ")[0]).default
    torch.library.opcheck(op, _opcheck_cases(device)[case])

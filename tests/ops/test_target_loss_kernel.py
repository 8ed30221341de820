"""Fused target loss vs the PyTorch reference fed the same in-kernel noise."""
import pytest
import torch

from adarand.ops.target_loss import _target_loss_ref, target_loss

# (B, C, D): empty and single-row batches, one class, C > B, odd feature sizes
_SHAPES = [(0, 3, 41), (1, 1, 129), (7, 10, 41), (33, 1, 5), (5, 40, 8), (20, 10, 129)]
# (dtype, atol, rtol) of the gradient, which is returned in the features' dtype
_DTYPES = [
    (torch.float32, 1e-7, 1e-5),
    (torch.bfloat16, 1e-6, 1.6e-2),
    (torch.float16, 1e-7, 2e-3),
    (torch.float64, 1e-15, 1e-12),
]


def _problem(batch, num_classes, dim, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, dim, generator=g).to(device, dtype).requires_grad_(True)
    labels = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    mu = torch.randn(num_classes, dim, generator=g).to(device)
    sigma = (torch.rand(num_classes, dim, generator=g) + 0.1).to(device)
    return features, labels, mu, sigma


def _seed(device, value=1234):
    return torch.tensor([value], dtype=torch.int64, device=device)


@pytest.mark.parametrize("noise", ["normal", "uniform"])
@pytest.mark.parametrize("dtype, atol, rtol", _DTYPES)
@pytest.mark.parametrize("batch, num_classes, dim", _SHAPES)
def test_forward_and_grad_match_reference(device, batch, num_classes, dim, dtype, atol, rtol, noise):
    from adarand.ops.target_loss import target_loss_triton
    from noise_probe import noise_from_seed

    f, y, mu, sigma = _problem(batch, num_classes, dim, dtype, device)
    seed = _seed(device)
    loss = target_loss_triton(f, y, mu, sigma, noise=noise, seed=seed)
    ref = _target_loss_ref(f, y, mu, sigma, noise_from_seed(seed, (batch, dim), noise))
    assert loss.dtype == ref.dtype
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-5)
    grad_out = torch.tensor(-2.5, dtype=loss.dtype, device=device)  # not the last layer
    (grad,) = torch.autograd.grad(loss, f, grad_out)
    (grad_ref,) = torch.autograd.grad(ref, f, grad_out)
    assert grad.dtype == dtype and grad.shape == f.shape
    torch.testing.assert_close(grad, grad_ref, atol=atol, rtol=rtol)


@pytest.mark.parametrize("noise", ["normal", "uniform"])
def test_backward_regenerates_the_forward_noise(device, noise):
    """grad = g * 2 (f - r) / (B D) with r = mu_y + sigma_y eps, eps the debug helper's draw (float64 check)."""
    from adarand.ops.target_loss import target_loss_triton
    from noise_probe import noise_from_seed

    f, y, mu, sigma = _problem(9, 4, 41, torch.float32, device)
    seed = _seed(device, 99)
    loss = target_loss_triton(f, y, mu, sigma, noise=noise, seed=seed)
    (grad,) = torch.autograd.grad(3.0 * loss, f)
    eps = noise_from_seed(seed, (9, 41), noise).double()
    r = mu.double()[y] + sigma.double()[y] * eps
    diff = f.detach().double() - r
    torch.testing.assert_close(loss.double(), diff.pow(2).mean(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad.double(), 3.0 * 2 * diff / diff.numel(), atol=1e-9, rtol=1e-5)


def test_zero_target_is_feature_norm_penalty(device):
    from adarand.ops.target_loss import target_loss_triton

    f = torch.randn(6, 129, device=device, requires_grad=True)
    loss = target_loss_triton(f, None, None, None)
    torch.testing.assert_close(loss, f.detach().pow(2).mean())
    (grad,) = torch.autograd.grad(loss, f)
    torch.testing.assert_close(grad, 2 * f.detach() / f.numel())


def test_empty_batch_gives_zero_loss_and_empty_grad(device):
    from adarand.ops.target_loss import target_loss_triton

    f, y, mu, sigma = _problem(0, 3, 41, torch.float32, device)
    loss = target_loss_triton(f, y, mu, sigma)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, f)
    assert grad.shape == (0, 41)


def test_zero_sigma_is_distance_to_class_mean(device):
    """Degenerate case independent of the noise: sigma = 0 regresses onto mu_y."""
    from adarand.ops.target_loss import target_loss_triton

    f, y, mu, sigma = _problem(11, 5, 41, torch.float64, device)
    loss = target_loss_triton(f, y, mu.double(), torch.zeros_like(mu, dtype=torch.float64))
    torch.testing.assert_close(loss, (f.detach() - mu.double()[y]).pow(2).mean())


@pytest.mark.parametrize("noise", ["normal", "uniform"])
def test_noise_moments(device, noise):
    from noise_probe import noise_from_seed

    eps = noise_from_seed(_seed(device, 7), (64, 64), noise).double().cpu()
    if noise == "normal":
        assert abs(eps.mean().item()) < 0.07 and abs(eps.var().item() - 1.0) < 0.1
    else:
        assert eps.min() >= -0.5 and eps.max() < 0.5
        assert abs(eps.mean().item()) < 0.02 and abs(eps.var().item() - 1 / 12) < 0.005
    neighbours = torch.corrcoef(torch.stack([eps.flatten()[:-1], eps.flatten()[1:]]))[0, 1]
    assert abs(neighbours.item()) < 0.07  # consecutive Philox offsets are uncorrelated


def test_seed_fixes_the_noise_and_generator_fixes_the_seed(device):
    from adarand.ops.target_loss import draw_seed
    from noise_probe import noise_from_seed

    a, b = noise_from_seed(_seed(device, 5), (4, 33)), noise_from_seed(_seed(device, 5), (4, 33))
    assert torch.equal(a, b)
    assert not torch.equal(a, noise_from_seed(_seed(device, 6), (4, 33)))
    seeds = [draw_seed(device, torch.Generator(device=device).manual_seed(3)) for _ in range(2)]
    assert seeds[0].device.type == torch.device(device).type and torch.equal(seeds[0], seeds[1])


def test_public_op_dispatches_to_the_kernel_and_honours_generator(device):
    from adarand.ops.target_loss import draw_seed
    from noise_probe import noise_from_seed

    f, y, mu, sigma = _problem(7, 10, 41, torch.float32, device)
    loss = target_loss(f, y, mu, sigma, generator=torch.Generator(device=device).manual_seed(11), impl="triton")
    seed = draw_seed(device, torch.Generator(device=device).manual_seed(11))
    ref = _target_loss_ref(f, y, mu, sigma, noise_from_seed(seed, (7, 41)))
    torch.testing.assert_close(loss, ref)
    again = target_loss(f, y, mu, sigma, generator=torch.Generator(device=device).manual_seed(11), impl="triton")
    assert torch.equal(loss, again)


def test_mu_and_sigma_get_no_gradient(device):
    from adarand.ops.target_loss import target_loss_triton

    f, y, mu, sigma = _problem(5, 3, 8, torch.float32, device)
    mu.requires_grad_(True)
    loss = target_loss_triton(f, y, mu, sigma)
    loss.backward()
    assert mu.grad is None and f.grad is not None


def test_deterministic_mode_is_bit_identical(device):
    from adarand.ops.target_loss import target_loss_triton

    f, y, mu, sigma = _problem(20, 10, 129, torch.float32, device)
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        runs = []
        for _ in range(2):
            loss = target_loss_triton(f, y, mu, sigma, seed=_seed(device, 42))
            runs.append((loss.detach(), torch.autograd.grad(loss, f)[0]))
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA every other test runs the compiled kernels")
@pytest.mark.slow
def test_kernels_compile_for_sm90(compile_for_sm90):
    module = "adarand.ops.target_loss_triton"
    args = {"f_ptr": "*bf16", "labels_ptr": "*i64", "mu_ptr": "*fp32", "sigma_ptr": "*fp32", "seed_ptr": "*i64"}
    tiles = {"ACC": "tl.float32", "BLOCK_B": 4, "BLOCK_D": 512}
    jobs = []
    sizes = {"B": "i32", "D": "i32", "C": "i32"}
    for noise in (0, 1):
        for has_labels, has_mu in ((True, True), (True, False), (False, False)):
            flags = {"HAS_LABELS": has_labels, "HAS_MU": has_mu, "NOISE": noise, **tiles}
            jobs.append((module, "_target_loss_fwd_kernel",
                         {**args, "partial_ptr": "*fp32", "count_ptr": "*i32", "bad_ptr": "*i32", **sizes,
                          **dict.fromkeys(flags, "constexpr")}, flags))
            jobs.append((module, "_target_loss_bwd_kernel",
                         {**args, "grad_out_ptr": "*fp32", "count_ptr": "*i64", "grad_f_ptr": "*bf16", **sizes,
                          **dict.fromkeys(flags, "constexpr")}, flags))
    jobs.append((module, "_target_loss_finish_kernel",
                 {"partial_ptr": "*fp32", "count_ptr": "*i32", "bad_ptr": "*i32", "loss_ptr": "*fp32", "n_ptr": "*i64",
                  "bad_total_ptr": "*i64", "P": "i32", "D": "i32", "ACC": "constexpr", "BLOCK_P": "constexpr"},
                 {"ACC": "tl.float32", "BLOCK_P": 1024}))
    jobs.append(("noise_probe", "_noise_kernel", {"seed_ptr": "*i64", "out_ptr": "*fp32", "B": "i32", "D": "i32",
                                           "NOISE": "constexpr", "BLOCK_B": "constexpr", "BLOCK_D": "constexpr"},
                 {"NOISE": 0, "BLOCK_B": 4, "BLOCK_D": 512}))
    compile_for_sm90(jobs)


def test_bad_input_names_the_problem(device):
    from adarand.ops.target_loss import target_loss_triton

    f, y, mu, sigma = _problem(3, 2, 8, torch.float32, device)
    with pytest.raises(ValueError, match="unknown noise"):
        target_loss_triton(f, y, mu, sigma, noise="laplace")
    with pytest.raises(ValueError, match="B x D"):
        target_loss_triton(f[0], y, mu, sigma)
    with pytest.raises(ValueError, match="mu and sigma"):
        target_loss_triton(f, y, mu[:, :4], sigma[:, :4])

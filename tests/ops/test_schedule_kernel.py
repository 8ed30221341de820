"""The prior kernel's lr schedule against the one definition, ``adarand.schedules.lr_factor``, step by step."""
import pytest
import torch

from adarand.ops.prior_step import _prior_step_ref_
from adarand.schedules import SCHEDULES, lr_factor

# (schedule, total, warmup): every schedule, short and long runs, warm-ups of 1 step, a few and most of the run
CASES = [(schedule, total, 0) for schedule in SCHEDULES for total in (1, 7, 1000)]
CASES += [("cosine_7_16", total, warmup) for total, warmup in ((7, 1), (7, 3), (1000, 50), (1000, 999), (5, 9))]


def test_every_schedule_has_a_kernel_code():
    """The kernel's codes name exactly the schedules (a schedule added to one place and not the other fails)."""
    from adarand.ops.prior_step_triton import SCHEDULE_CODES

    assert set(SCHEDULE_CODES) == set(SCHEDULES)
    assert len(set(SCHEDULE_CODES.values())) == len(SCHEDULE_CODES)


@pytest.mark.parametrize("schedule,total,warmup", CASES)
def test_kernel_schedule_equals_the_definition_at_every_step(device, schedule, total, warmup):
    from schedule_probe import kernel_lr_factor

    steps = torch.arange(total + warmup + 25, dtype=torch.int64)  # past the end of the run: the factor stays put
    expected = torch.tensor([lr_factor(schedule, int(t), total, warmup) for t in steps], dtype=torch.float64)
    factor = kernel_lr_factor(schedule, steps.to(device), total, warmup).cpu()
    torch.testing.assert_close(factor, expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("schedule,total,warmup", CASES)
def test_tensor_schedule_equals_the_definition_at_every_step(schedule, total, warmup):
    """The device-side PyTorch path (``lr_factor`` on a float64 tensor) gives the numbers of the scalar one."""
    steps = torch.arange(total + warmup + 25, dtype=torch.float64)
    expected = torch.tensor([lr_factor(schedule, int(t), total, warmup) for t in steps], dtype=torch.float64)
    torch.testing.assert_close(lr_factor(schedule, steps, total, warmup), expected, rtol=1e-14, atol=1e-15)


def test_fused_update_follows_the_warm_up(device):
    """The warm-up reaches the fused update: its steps equal the PyTorch path's, through and past the warm-up."""
    from adarand.ops.prior_step_triton import prior_step_triton_

    g = torch.Generator().manual_seed(3)
    state = [torch.randn(5, 7, generator=g, dtype=torch.float64) for _ in range(2)]
    state += [torch.zeros(5, 7, dtype=torch.float64), torch.zeros(5, 7, dtype=torch.float64),
              torch.tensor(0, dtype=torch.int64)]
    ours, ref = [t.clone().to(device) for t in state], [t.clone().to(device) for t in state]
    args = (None, 3e-2, 0.9, 0.999, 1e-8, "cosine_7_16", 8, True, True, 3)
    for _ in range(5):
        torch.testing.assert_close(prior_step_triton_(*ours, *args), _prior_step_ref_(*ref, *args), rtol=1e-10,
                                   atol=1e-10)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    unwarmed = [t.clone().to(device) for t in state]
    for _ in range(5):
        _prior_step_ref_(*unwarmed, *args[:-1])
    assert not torch.allclose(unwarmed[0], ref[0])  # the warm-up changed the steps


def test_a_warm_up_is_refused_on_the_other_schedules():
    from adarand.ops.prior_step import prior_step_

    state = [torch.zeros(2, 3) for _ in range(4)] + [torch.tensor(0)]
    with pytest.raises(ValueError, match="warm-up"):
        prior_step_(*state, lr=1e-2, schedule="half_cosine", total_steps=5, warmup=2)

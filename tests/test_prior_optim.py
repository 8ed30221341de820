import pytest
import torch

from adarand import PriorAdam


@pytest.mark.parametrize("total_steps", [None, 10])
def test_matches_torch_adam_with_cosine_schedule(total_steps):
    g = torch.Generator().manual_seed(0)
    start = torch.randn(3, 5, generator=g, dtype=torch.float64)
    grads = [torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(10)]
    ours, opt_param = start.clone(), torch.nn.Parameter(start.clone())
    optim = PriorAdam((3, 5), lr=1e-2, total_steps=total_steps).double()
    reference = torch.optim.Adam([opt_param], lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=total_steps) if total_steps else None
    for grad in grads:
        optim.step(ours, grad)
        opt_param.grad = grad.clone()
        reference.step()
        if schedule:
            schedule.step()
        torch.testing.assert_close(ours, opt_param.detach())


def test_learning_rate_holds_at_zero_after_the_run():
    """Unlike CosineAnnealingLR, which climbs again past T_max, the prior stops moving."""
    optim, param = PriorAdam((2, 2), total_steps=3), torch.zeros(2, 2)
    for _ in range(3):
        optim.step(param, torch.ones(2, 2))
    after_run = param.clone()
    optim.step(param, torch.ones(2, 2))
    assert optim.current_lr() == 0.0 and torch.equal(param, after_run)


def test_state_dict_resume_continues_exactly():
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(2, 4, generator=g) for _ in range(6)]
    straight, param = PriorAdam((2, 4), total_steps=6), torch.zeros(2, 4)
    for grad in grads:
        straight.step(param, grad)
    first, resumed_param = PriorAdam((2, 4), total_steps=6), torch.zeros(2, 4)
    for grad in grads[:3]:
        first.step(resumed_param, grad)
    second = PriorAdam((2, 4), total_steps=6)
    second.load_state_dict(first.state_dict())
    assert second.steps_taken == 3
    for grad in grads[3:]:
        second.step(resumed_param, grad)
    assert torch.equal(resumed_param, param)


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="learning rate"):
        PriorAdam((2, 2), lr=0)
    with pytest.raises(ValueError, match="total_steps"):
        PriorAdam((2, 2), total_steps=0)

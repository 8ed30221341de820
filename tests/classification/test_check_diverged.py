"""check_diverged reads the last step's terms back for its advice only when a weight went non-finite."""
import math

import pytest
import torch

from adarand.classification.steps import check_diverged, new_guard


def test_advice_is_built_only_for_the_error(monkeypatch):
    guard = new_guard("cpu")
    big, one = torch.tensor(1e30), torch.tensor(1.0)
    guard.update(0, big, one, big, torch.tensor(0.0))
    built = []
    advice = guard.last_step_advice
    monkeypatch.setattr(guard, "last_step_advice", lambda: built.append(1) or advice())
    net = torch.nn.Linear(2, 2)
    check_diverged(guard, "epoch 1", net, net)
    assert not built
    with torch.no_grad():
        net.weight[0, 0] = math.nan
    with pytest.raises(FloatingPointError, match=r"weight 'weight' .* NaN/Inf.*at iteration 0, the last one "
                                                 r"recorded \(ce 1, regularizer 1e\+30, baseline 0\), regularizer "
                                                 r"was the largest term, lower what scales it: MODEL.ADARAND.LAMBDA"):
        check_diverged(guard, "epoch 2", net)
    assert built == [1]


def test_without_a_recorded_step_the_advice_is_the_learning_rate():
    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        net.bias[1] = math.inf
    with pytest.raises(FloatingPointError, match=r"'bias'.*Nothing was saved from this point; lower the learning "
                                                 r"rate\.$"):
        check_diverged(new_guard("cpu"), "epoch 1", net)

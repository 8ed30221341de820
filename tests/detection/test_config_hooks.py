"""Config keys, config files, the prior hook's period (via mocks) and DDP unwrapping."""
import glob
import os
from unittest import mock

import pytest
import torch
from detectron2.config import get_cfg
from tiny import REPO

import adarand
from adarand.detection import AdaRandPriorHook, add_adarand_config, regularizations
from adarand.detection.hooks import aligned_period


def _cfg():
    cfg = get_cfg()
    add_adarand_config(cfg)
    return cfg


def test_defaults_are_the_papers():
    a = _cfg().MODEL.ADARAND
    assert (a.METHOD, a.LAMBDA, a.ALPHA, a.PRIOR_LR, a.STATS_FILE, a.REGULARIZE_BACKGROUND) == (
        "adarand", 1.0, 0.5, 1e-2, "", False)
    assert (a.LABELS, a.CASCADE_STAGES, a.STATS_ROIS) == ("roi", "last", "proposals")
    assert (a.NORMALIZER, a.PRIOR_LR_SCHEDULE) == ("sampled", "cosine_7_16")


def test_wrong_key_is_detectron2s_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{REPO}/configs/detection/Base-AdaRand-RCNN-FPN.yaml"\nMODEL:\n  ADARAND:\n    LAMDA: 2.0\n')
    with pytest.raises(KeyError, match="Non-existent config key: MODEL.ADARAND.LAMDA"):
        _cfg().merge_from_file(str(bad))
    with pytest.raises(AssertionError, match="Non-existent key: MODEL.ADARAND.LAMDA"):  # yacs, for opts
        _cfg().merge_from_list(["MODEL.ADARAND.LAMDA", "2.0"])


@pytest.mark.parametrize("method", adarand.available_regularizers())
def test_every_method_gets_only_accepted_options(method):
    cfg = _cfg()
    cfg.merge_from_list(["MODEL.ADARAND.METHOD", method, "SOLVER.MAX_ITER", "77"])
    kwargs = adarand.regularizer_options_from_config(cfg.MODEL.ADARAND, cfg.SOLVER.MAX_ITER)
    accepted = adarand.regularizer_options(method)
    assert set(kwargs) <= set(accepted)
    if "total_steps" in accepted:
        assert kwargs["total_steps"] == 77
    adarand.build_regularizer(method, 21, 8, **kwargs)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "detection", "*_*.yaml"))))
def test_shipped_configs_merge(path):
    cfg = _cfg()
    cfg.merge_from_file(path)
    assert cfg.MODEL.ROI_HEADS.NAME in ("AdaRandROIHeads", "AdaRandCascadeROIHeads")
    assert cfg.MODEL.ADARAND.METHOD in adarand.available_regularizers()
    assert cfg.INPUT.MASK_FORMAT == "bitmask"


class _FakeHeads(torch.nn.Module):
    """A regularized head (the protocol of adarand.detection.regularized) with mocked methods."""

    def __init__(self, branches):
        super().__init__()
        self.regularizations = mock.Mock(return_value=branches)
        self.take_sampled_rows = mock.Mock(side_effect=lambda: {branch: ("f", "y") for branch in branches})


def _fake_trainer(branches):
    trainer = mock.Mock()
    trainer.model = mock.Mock(spec=["module"])  # a DDP-wrapped model
    trainer.model.module = torch.nn.Module()
    trainer.model.module.roi_heads = _FakeHeads(branches)
    return trainer


def _branch():
    branch = mock.Mock(spec=adarand.detection.BoxRegularization)
    branch.regularizer = mock.Mock()
    branch.regularizer.step.return_value = None
    return branch


@pytest.mark.parametrize("period, epoch_iters, steps, epochs", [(1, 0, 10, 0), (3, 0, 3, 0), (0, 4, 0, 2)])
def test_hook_period(period, epoch_iters, steps, epochs):
    branches = [_branch(), _branch()]  # e.g. two cascade stages
    hook = AdaRandPriorHook(period, epoch_iters, log_period=0)
    hook.trainer = _fake_trainer(branches)
    assert regularizations(hook.trainer.model) == branches
    hook.before_train()
    for it in range(10):
        hook.trainer.iter = it
        hook.after_step()
    assert hook.trainer.model.module.roi_heads.take_sampled_rows.call_count == 10  # every step takes its rows
    for branch in branches:
        assert branch.regularizer.step.call_count == steps
        assert branch.regularizer.on_epoch_end.call_count == epochs
        if steps:
            branch.regularizer.step.assert_called_with("f", "y")


def test_hook_finds_the_branches_once():
    """before_train looks the box branches up; the steps only take the heads' record."""
    branches = [_branch()]
    hook = AdaRandPriorHook(log_period=0)
    hook.trainer = _fake_trainer(branches)
    hook.before_train()
    heads = hook.trainer.model.module.roi_heads
    lookups = heads.regularizations.call_count
    for it in range(5):
        hook.trainer.iter = it
        hook.after_step()
    assert heads.regularizations.call_count == lookups
    assert branches[0].regularizer.step.call_count == 5


@pytest.mark.parametrize("log, prior, aligned", [(20, 1, 20), (20, 3, 21), (5, 5, 5), (0, 2, 0), (7, 0, 7)])
def test_scale_log_period_is_aligned_with_the_prior_period(log, prior, aligned):
    assert aligned_period(log, prior) == aligned


def test_hook_ignores_models_without_box_regularizers():
    """Heads that apply no regularizer: the hook finds no branch, steps nothing and logs no adarand scalar
    (only the loss ratio it reads from the trainer's own losses)."""
    hook = AdaRandPriorHook(log_period=1)
    hook.trainer = _fake_trainer([])
    hook.trainer.iter, hook.trainer.max_iter = 0, 10
    hook.trainer.storage.latest.return_value = {}
    hook.before_train()
    hook.after_step()
    assert hook._branches == [] and hook._sums == {}
    hook.trainer.storage.put_scalar.assert_not_called()

"""Config keys, config files, the prior hook's period (via mocks) and DDP unwrapping."""
import glob
import os
from unittest import mock

import pytest
import torch
from detectron2.config import get_cfg
from tiny import REPO

import adarand
from adarand.detection import AdaRandPriorHook, add_adarand_config, adarand_roi_heads, regularizer_kwargs


def _cfg():
    cfg = get_cfg()
    add_adarand_config(cfg)
    return cfg


def test_defaults_are_the_papers():
    a = _cfg().MODEL.ADARAND
    assert (a.METHOD, a.LAMBDA, a.ALPHA, a.PRIOR_LR, a.STATS_FILE, a.REGULARIZE_BACKGROUND) == (
        "adarand", 1.0, 0.5, 1e-2, "", False)


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
    kwargs = regularizer_kwargs(cfg)
    accepted = adarand.regularizer_options(method)
    assert set(kwargs) <= set(accepted)
    if "total_steps" in accepted:
        assert kwargs["total_steps"] == 77
    adarand.build_regularizer(method, 21, 8, **kwargs)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "detection", "*_*.yaml"))))
def test_shipped_configs_merge(path):
    cfg = _cfg()
    cfg.merge_from_file(path)
    assert cfg.MODEL.ROI_HEADS.NAME == "AdaRandROIHeads"
    assert cfg.MODEL.ADARAND.METHOD in adarand.available_regularizers()
    assert cfg.INPUT.MASK_FORMAT == "bitmask"


def _fake_trainer(model, iters):
    trainer = mock.Mock()
    trainer.model = model
    return trainer


@pytest.mark.parametrize("period, epoch_iters, steps, epochs", [(1, 0, 10, 0), (3, 0, 3, 0), (0, 4, 0, 2)])
def test_hook_period(period, epoch_iters, steps, epochs):
    heads = mock.Mock()
    heads.regularizer.step.return_value = None
    kept = (torch.ones(2, 3), torch.tensor([0, -100]))
    heads.pop_regularized.return_value = kept
    heads.regularizer.num_classes = 2
    model = mock.Mock(spec=["module"])
    model.module = mock.Mock(roi_heads=heads)  # a DDP-wrapped model
    hook = AdaRandPriorHook(period, epoch_iters)
    hook.trainer = _fake_trainer(model, 10)
    for it in range(10):
        hook.trainer.iter = it
        hook.after_step()
    assert heads.pop_regularized.call_count == 10  # every step forgets its rows
    assert heads.regularizer.step.call_count == steps
    assert heads.regularizer.on_epoch_end.call_count == epochs
    if steps:
        heads.regularizer.step.assert_called_with(*kept)


def test_hook_ignores_models_without_adarand_heads():
    model = mock.Mock(spec=["roi_heads"])
    model.roi_heads = object()
    assert adarand_roi_heads(model) is None
    hook = AdaRandPriorHook()
    hook.trainer = _fake_trainer(model, 1)
    hook.trainer.iter = 0
    hook.after_step()

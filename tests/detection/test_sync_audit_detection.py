"""Sync audit of the detection and semantic-segmentation steps: the ROI heads' and the sem-seg head's
training forward (and its loss's backward) plus the prior hook issue no op that would stall a CUDA stream from adarand's own code.

Detectron2's own syncs (proposal sampling, its box losses) are recorded but not ours.
Value checks are off, as they are by default on CUDA.
"""
from unittest import mock

import pytest
import torch
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from sync_audit import SyncAudit, values_unchecked
from tiny import tiny_cfg, tiny_sem_seg_cfg

from adarand.detection import AdaRandPriorHook, box_regularizations, regularizations


CASCADE = {"MODEL.ROI_HEADS.NAME": "AdaRandCascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
           "MODEL.ADARAND.CASCADE_STAGES": "all"}



def audited_steps(model, batch, hook, regularizer_loss, steps=2):
    """``steps`` training steps of ``model`` on ``batch`` (the backward of ``regularizer_loss(losses)``, then the
    prior hook) under a SyncAudit that finds no sync of ours; returns the audit."""
    hook.trainer = mock.Mock(model=model, max_iter=100, iter=0)
    hook.before_train()
    with EventStorage() as storage:
        hook.trainer.storage = storage
        with SyncAudit() as audit:
            for it in range(steps):
                hook.trainer.iter = it
                regularizer_loss(model(batch)).backward()
                hook.after_step()
    audit.assert_none_ours()
    return audit

@pytest.mark.parametrize("method, extra", [("adarand", {}), ("adarand", {"MODEL.ADARAND.REGULARIZE_BACKGROUND": True}),
                                           ("ptr", {}), ("fnp", {}), ("adarand", {"MODEL.ADARAND.LABELS": "image"}),
                                           ("adarand", CASCADE)])
def test_roi_heads_forward_and_prior_hook_issue_no_sync(fake_voc, tmp_path, method, extra):
    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.METHOD": method, **extra})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    regs = [values_unchecked(branch.regularizer) for branch in box_regularizations(model)]
    for reg in regs:
        if reg.needs_stats:
            reg.prior.init_normal()
    batch = next(iter(build_detection_train_loader(cfg)))
    audit = audited_steps(model, batch, AdaRandPriorHook(period=1, epoch_iters=2, log_period=20),
                          lambda losses: sum(v for k, v in losses.items() if k.startswith("loss_adarand")))
    assert audit.records  # Detectron2's own syncs were seen, so the audit was on
    if method == "adarand":
        for reg in regs:
            assert int(reg.prior.optimizer.num_steps) == 2  # the hook did step the prior under the audit


@pytest.mark.parametrize("balance", ["class", "uniform"])
def test_semantic_fpn_step_and_prior_hook_issue_no_sync(fake_voc, tmp_path, balance):
    """The sem-seg head's pixel draw, loss_adarand_sem_seg and its backward, and the prior step."""
    cfg = tiny_sem_seg_cfg(tmp_path, **{"MODEL.ADARAND.PIXEL_BALANCE": balance})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    (reg,) = [values_unchecked(branch.regularizer) for branch in regularizations(model)]
    reg.prior.init_normal()
    batch = next(iter(build_detection_train_loader(cfg)))
    audited_steps(model, batch, AdaRandPriorHook(period=1, log_period=20), lambda losses: losses["loss_adarand_sem_seg"])
    assert int(reg.prior.optimizer.num_steps) == 2

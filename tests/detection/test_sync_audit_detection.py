"""Sync audit of the detection step: the ROI heads' training forward (and its loss's backward)
plus the prior hook issue no op that would stall a CUDA stream from adarand's own code.

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
from tiny import tiny_cfg

from adarand.detection import AdaRandPriorHook


@pytest.mark.parametrize("method, background", [("adarand", False), ("adarand", True), ("ptr", False),
                                                ("fnp", False)])
def test_roi_heads_forward_and_prior_hook_issue_no_sync(fake_voc, tmp_path, method, background):
    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.METHOD": method, "MODEL.ADARAND.REGULARIZE_BACKGROUND": background})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    reg = values_unchecked(model.roi_heads.regularizer)
    if reg.needs_stats:
        reg.prior.init_normal()
    batch = next(iter(build_detection_train_loader(cfg)))
    hook = AdaRandPriorHook(period=1, epoch_iters=2, log_period=20)
    hook.trainer = mock.Mock(model=model, max_iter=100, iter=0)
    with EventStorage() as storage:
        hook.trainer.storage = storage
        with SyncAudit() as audit:
            for it in range(2):
                hook.trainer.iter = it
                losses = model(batch)
                losses["loss_adarand"].backward()
                hook.after_step()
    audit.assert_none_ours()
    assert audit.records  # Detectron2's own syncs were seen, so the audit was on
    if method == "adarand":
        assert int(reg.prior_optimizer.num_steps) == 2  # the hook did step the prior under the audit

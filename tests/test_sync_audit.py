"""Sync audit of the training step: adarand issues no op that would stall a CUDA stream.

Runs on CPU tensors under :class:`sync_audit.SyncAudit`, with value checks at their CUDA
default (off), on both backends (the fused kernels under Triton's interpreter): every
regularizer's forward, backward, ``step`` and ``on_epoch_end``. (The classification trainer's
step is audited in ``tests/classification/test_trainer_step.py``, the detection side in
``tests/detection/test_sync_audit_detection.py``.)
"""
import os
import sys

import pytest
import torch

import adarand
from adarand import IGNORE_INDEX
from sync_audit import SyncAudit, values_unchecked
from regularizer_cases import NAMES, C, D, enable_ptr, make_stats


def _regularizer(name, feat_dim=D):
    options = {"total_steps": 10} if "total_steps" in adarand.regularizer_options(name) else {}
    reg = values_unchecked(adarand.build_regularizer(name, C, feat_dim, **options))
    if reg.needs_stats and feat_dim == D:
        reg.init_from_stats(make_stats())
    return enable_ptr(reg)


@pytest.mark.parametrize("name", NAMES)
def test_library_step_issues_no_sync(backend, name):
    reg = _regularizer(name)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(12, D, generator=g, requires_grad=True)
    labels = torch.randint(0, C, (12,), generator=g)
    labels[[2, 7]] = IGNORE_INDEX
    head = torch.randn(C, D, generator=g)
    with SyncAudit() as audit:
        for _ in range(2):
            loss = reg(features, labels, logits=features.detach() @ head.T, classifier_weight=head)
            if loss.requires_grad:
                loss.backward()
            reg.step(features.detach(), labels)
            reg.on_epoch_end()
    audit.assert_none_ours()


def test_audit_catches_each_kind_of_sync():
    """The helper itself: every listed op is recorded, attributed to the line that issued it."""
    t = torch.randn(8)
    first = sys._getframe().f_lineno + 2  # the line of .item() below; one syncing line each up to new_tensor
    with SyncAudit() as audit:
        t.sum().item()
        bool(t.sum() > 0)
        t[t > 0]
        t.clone()[t > 0] = 1.0
        torch.nonzero(t)
        torch.masked_select(t, t > 0)
        torch.unique(t)
        torch.bincount(torch.tensor([1, 2]))
        torch.repeat_interleave(torch.arange(3), torch.tensor([1, 2, 3]))
        torch.equal(t, t)
        t.tolist()
        t.new_tensor(3)
        torch.repeat_interleave(torch.arange(3), torch.ones(3, dtype=torch.int64), output_size=3)  # fine
        torch.where(t > 0, t, 0.0)  # fine
    lines = {line for _, _, _, line, _ in audit.records}
    assert lines == set(range(first, first + 12)), audit.report(audit.records)
    assert all(path == os.path.realpath(__file__) for _, _, path, _, _ in audit.records)
    assert audit.ours() == []  # issued by this test file, not by the adarand package

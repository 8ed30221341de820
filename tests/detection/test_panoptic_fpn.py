"""PanopticFPN with both AdaRand heads: the ROI box head and the semantic head each regularized with its own prior,
both priors initialised from statistics and adapted by the prior hook in a few training steps."""
import itertools
import math

import torch
from detectron2.engine import SimpleTrainer
from detectron2.modeling import build_model
from tiny import STUFF, THINGS, panoptic_cfg, tiny_batch

from adarand.detection import (
    AdaRandPriorHook, AdaRandROIHeads, AdaRandSemSegFPNHead, BoxRegularization, DenseRegularization,
    collect_box_head_stats, regularizations,
)


def test_panoptic_fpn_trains_both_heads_each_with_its_own_prior(tmp_path):
    cfg = panoptic_cfg(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.roi_heads, AdaRandROIHeads) and isinstance(model.sem_seg_head, AdaRandSemSegFPNHead)
    box, dense = regularizations(model)
    assert isinstance(box, BoxRegularization) and isinstance(dense, DenseRegularization)
    assert box is model.roi_heads.adarand["0"] and dense is model.sem_seg_head.adarand
    assert box.regularizer.prior is not dense.regularizer.prior
    assert (box.regularizer.num_classes, dense.regularizer.num_classes) == (THINGS, STUFF)

    batch = tiny_batch()
    stats = collect_box_head_stats(model, [batch])  # one statistics pass gives both branches' (Eq. 9-10)
    for branch, st in zip((box, dense), stats):
        assert st.count.gt(0).all()  # every class seen
        branch.regularizer.init_from_stats(st)
    before = {b: b.regularizer.prior.mu.clone() for b in (box, dense)}

    record = []  # what each head hands the prior hook after each step
    for head in (model.roi_heads, model.sem_seg_head):
        head.take_sampled_rows = lambda take=head.take_sampled_rows: record.append(take()) or record[-1]
    hook = AdaRandPriorHook(period=1, log_period=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005)
    trainer = SimpleTrainer(model, itertools.cycle([batch]), optimizer)
    trainer.register_hooks([hook])
    trainer.train(0, 3)

    for name in ("loss_adarand", "loss_adarand_sem_seg"):
        values = [v for v, _ in trainer.storage.history(name).values()]
        assert len(values) == 3 and all(math.isfinite(v) for v in values) and any(v > 0 for v in values), name
    assert [set(r) for r in record] == [{box}, {dense}] * 3  # each head's record, keyed by its branch, every step
    for rows in record[:2]:
        ((b, (features, labels)),) = rows.items()
        assert features.shape == (len(labels), b.regularizer.feat_dim) and not features.requires_grad
    for b in (box, dense):
        prior = b.regularizer.prior
        assert int(prior.optimizer.num_steps) == 3  # each prior stepped by its own optimizer, once a step
        assert not torch.equal(prior.mu, before[b]) and torch.isfinite(prior.mu).all()
    storage = trainer.storage.latest()
    assert "adarand/num_rois" in storage and "adarand/sem_seg/num_pixels" in storage

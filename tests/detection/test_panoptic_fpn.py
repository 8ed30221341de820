"""PanopticFPN with both AdaRand heads: the ROI box head and the semantic head each regularized with its own prior,
both priors initialised from statistics and adapted by the prior hook in a few training steps."""
import itertools
import math

import torch
from detectron2.engine import SimpleTrainer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from tiny import tiny_cfg

from adarand.detection import (
    AdaRandPriorHook, AdaRandROIHeads, AdaRandSemSegFPNHead, BoxRegularization, DenseRegularization,
    collect_box_head_stats, regularizations,
)

SIZE = (64, 96)
THINGS, STUFF = 3, 4  # box classes; semantic classes (PanopticFPN's: the stuff classes and one for all things)


def _panoptic_cfg(tmp_path):
    return tiny_cfg(tmp_path, **{
        "MODEL.META_ARCHITECTURE": "PanopticFPN", "MODEL.MASK_ON": False,
        "MODEL.ROI_HEADS.NAME": "AdaRandROIHeads", "MODEL.ROI_HEADS.NUM_CLASSES": THINGS,
        "MODEL.SEM_SEG_HEAD.NAME": "AdaRandSemSegFPNHead", "MODEL.SEM_SEG_HEAD.NUM_CLASSES": STUFF,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32, "MODEL.SEM_SEG_HEAD.NORM": "GN", "MODEL.ADARAND.PIXELS_PER_IMAGE": 32,
        "MODEL.ADARAND.LAMBDA": 1.0, "SOLVER.MAX_ITER": 4})


def _batch(seed=0):
    """Two images as a dataset mapper gives them: ``image``, ``instances`` (every box class) and ``sem_seg`` (every
    semantic class, an ignore band)."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for i in range(2):
        instances = Instances(SIZE)
        instances.gt_boxes = Boxes(torch.tensor([[4.0, 4.0, 40.0, 36.0], [44.0, 20.0, 90.0, 60.0]]) + i)
        instances.gt_classes = torch.tensor([i, 2])
        sem_seg = torch.zeros(SIZE, dtype=torch.long)
        sem_seg[:, 24:48], sem_seg[:, 48:72], sem_seg[:, 72:] = 1, 2, 3
        sem_seg[:6] = 255
        batch.append({"image": torch.randint(0, 256, (3,) + SIZE, generator=g, dtype=torch.uint8).float(),
                      "instances": instances, "sem_seg": sem_seg, "height": SIZE[0], "width": SIZE[1]})
    return batch


def test_panoptic_fpn_trains_both_heads_each_with_its_own_prior(tmp_path):
    cfg = _panoptic_cfg(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.roi_heads, AdaRandROIHeads) and isinstance(model.sem_seg_head, AdaRandSemSegFPNHead)
    box, dense = regularizations(model)
    assert isinstance(box, BoxRegularization) and isinstance(dense, DenseRegularization)
    assert box is model.roi_heads.box_predictor.adarand and dense is model.sem_seg_head.adarand
    assert box.regularizer.prior is not dense.regularizer.prior
    assert (box.regularizer.num_classes, dense.regularizer.num_classes) == (THINGS, STUFF)

    batch = _batch()
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

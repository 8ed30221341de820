"""AdaRandROIHeads: loss on the sampled foreground ROIs, checked against the kept rows.

The head keeps every sampled ROI and labels the unregularized ones IGNORE_INDEX; the
losses must equal those of the regularizer on the compacted rows (what the head computed
when it still selected them with a boolean mask).
"""
import pytest
import torch
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from tiny import tiny_cfg

import adarand
from adarand import IGNORE_INDEX
from adarand.detection import AdaRandPriorHook


def _model_and_batch(tmp_path, **extra):
    cfg = tiny_cfg(tmp_path, **extra)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = next(iter(build_detection_train_loader(cfg)))
    return model, batch


def test_fnp_loss_is_mean_square_of_foreground_rows(fake_voc, tmp_path):
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.METHOD": "fnp", "MODEL.ADARAND.LAMBDA": 0.5})
    with EventStorage() as storage:
        losses = model(batch)
    features, labels = model.roi_heads.pop_regularized()
    assert model.roi_heads.pop_regularized() is None
    assert features.shape == (labels.numel(), 64) and (labels == IGNORE_INDEX).any()
    kept = labels != IGNORE_INDEX
    features, labels = features[kept], labels[kept]
    assert labels.numel() > 0 and (labels < 20).all()
    gt = torch.cat([x["instances"].gt_classes for x in batch])
    assert set(labels.tolist()) <= set(gt.tolist())
    torch.testing.assert_close(losses["loss_adarand"], 0.5 * features.pow(2).mean())
    assert "adarand/num_rois" not in storage.latest()  # logged by the hook, on its period
    # Gradient reaches the box head.
    losses["loss_adarand"].backward()
    assert model.roi_heads.box_head.fc2.weight.grad.abs().sum() > 0


def test_adarand_loss_with_zero_sigma_is_distance_to_class_means(fake_voc, tmp_path):
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.REGULARIZE_BACKGROUND": True})
    reg = model.roi_heads.regularizer
    assert reg.num_classes == 21
    mean = torch.randn(21, 64)
    reg.prior.init_from_stats(mean, torch.zeros(21, 64))
    with EventStorage():
        losses = model(batch)
    features, labels = model.roi_heads.pop_regularized()
    assert (labels == 20).any() and (labels < 20).any()  # background rows are regularized too
    assert not (labels == IGNORE_INDEX).any()
    reference = (features.double() - mean.double()[labels]).pow(2).mean()
    torch.testing.assert_close(losses["loss_adarand"].double(), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["adarand", "fnp", "ptr"])
def test_no_foreground_roi_gives_zero_loss(fake_voc, tmp_path, method):
    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.METHOD": method})
    heads = build_model(cfg).roi_heads
    if heads.regularizer.needs_stats:
        heads.regularizer.prior.init_normal()
    proposal = Instances((64, 96), proposal_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]])),
                         gt_classes=torch.tensor([20, 20]))
    features = torch.randn(2, 64, requires_grad=True)
    with EventStorage():
        loss = heads.regularization_loss(features, torch.randn(2, 21), [proposal])
    assert float(loss) == 0.0
    assert (heads.pop_regularized()[1] == IGNORE_INDEX).all()


def test_regularizer_state_is_in_the_model_but_not_trained(fake_voc, tmp_path):
    cfg = tiny_cfg(tmp_path)
    model = build_model(cfg)
    keys = [k for k in model.state_dict() if k.startswith("roi_heads.regularizer.")]
    assert {"roi_heads.regularizer.prior.mu", "roi_heads.regularizer.prior.running_mean",
            "roi_heads.regularizer.prior_optimizer.exp_avg", "roi_heads.regularizer.prior_optimizer.num_steps"} <= set(keys)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and "regularizer" in n]
    assert trainable == []
    assert isinstance(model.roi_heads.regularizer, adarand.AdaRand)


@pytest.mark.parametrize("method", ["adarand", "fnp", "ptr", "randreg-uniform"])
def test_losses_equal_the_boolean_mask_selection(fake_voc, tmp_path, method):
    """Same batch, same losses as regularizing the compacted foreground rows (sigma = 0: no noise)."""
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.METHOD": method})
    reg = model.roi_heads.regularizer
    if reg.needs_stats:
        reg.prior.init_from_stats(torch.randn(20, 64), torch.ones(20, 64))
    if hasattr(reg, "prior"):
        reg.prior.sigma.zero_()
    if method == "ptr":
        reg.enabled.fill_(True)
    torch.manual_seed(1)
    with EventStorage():
        losses = model(batch)
    features, labels = model.roi_heads.pop_regularized()
    keep = labels != IGNORE_INDEX
    weight = model.roi_heads.box_predictor.cls_score.weight
    logits = model.roi_heads.box_predictor(features)[0]
    compacted = reg(features[keep], labels[keep], logits=logits[keep], classifier_weight=weight)
    torch.testing.assert_close(losses["loss_adarand"], compacted, rtol=1e-6, atol=1e-7)
    assert losses["loss_adarand"] > 0


def test_hook_logs_roi_count_and_norm_on_its_period(fake_voc, tmp_path):
    from unittest import mock

    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.METHOD": "fnp"})
    trainer = mock.Mock(model=model, max_iter=100)
    hook = AdaRandPriorHook(log_period=2)
    hook.trainer = trainer
    expected = []
    with EventStorage() as storage:
        trainer.storage = storage
        for it in range(2):
            model(batch)
            features, labels = model.roi_heads._kept
            kept = labels != IGNORE_INDEX
            expected.append((kept.sum().item(), features[kept].norm(dim=1).sum().item()))
            trainer.iter = it
            storage.iter = it
            hook.after_step()
            assert ("adarand/num_rois" in storage.latest()) == (it == 1)
    rois = sum(n for n, _ in expected)
    assert storage.latest()["adarand/num_rois"][0] == pytest.approx(rois / 2)
    assert storage.latest()["adarand/feature_norm"][0] == pytest.approx(sum(s for _, s in expected) / rois)

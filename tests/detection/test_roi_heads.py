"""AdaRandROIHeads: loss on the sampled foreground ROIs, checked against the kept rows."""
import pytest
import torch
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from tiny import tiny_cfg

import adarand


def _model_and_batch(tmp_path, **extra):
    cfg = tiny_cfg(tmp_path, **extra)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = next(iter(build_detection_train_loader(cfg)))
    return model, batch


def test_fnp_loss_is_mean_square_of_foreground_rows(fake_voc, tmp_path):
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.METHOD": "fnp", "MODEL.ADARAND.LAMBDA": 0.5,
                                                 "MODEL.ADARAND.NORMALIZER": "regularized"})
    with EventStorage() as storage:
        losses = model(batch)
    features, labels = model.roi_heads.pop_regularized()
    assert model.roi_heads.pop_regularized() is None
    assert labels.numel() > 0 and (labels < 20).all()
    gt = torch.cat([x["instances"].gt_classes for x in batch])
    assert set(labels.tolist()) <= set(gt.tolist())
    assert features.shape == (labels.numel(), 64)
    torch.testing.assert_close(losses["loss_adarand"], 0.5 * features.pow(2).mean())
    assert storage.latest()["adarand/num_rois"][0] == labels.numel()
    # Gradient reaches the box head.
    losses["loss_adarand"].backward()
    assert model.roi_heads.box_head.fc2.weight.grad.abs().sum() > 0


def test_sampled_normalizer_divides_the_sum_by_all_sampled_rois(fake_voc, tmp_path):
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.METHOD": "fnp", "MODEL.ADARAND.LAMBDA": 0.5})
    assert model.roi_heads.normalizer == "sampled"  # the default
    sampled = []
    model.roi_heads.box_head.register_forward_hook(lambda m, i, out: sampled.append(out.shape[0]))
    torch.manual_seed(1)
    with EventStorage():
        loss = model(batch)["loss_adarand"]
    features, _ = model.roi_heads.pop_regularized()
    assert 0 < features.shape[0] < sampled[0]
    reference = 0.5 * features.double().pow(2).sum() / (sampled[0] * 64)
    torch.testing.assert_close(loss.double(), reference, rtol=1e-5, atol=1e-8)


def test_adarand_loss_with_zero_sigma_is_distance_to_class_means(fake_voc, tmp_path):
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.REGULARIZE_BACKGROUND": True,
                                                 "MODEL.ADARAND.NORMALIZER": "regularized"})
    reg = model.roi_heads.regularizer
    assert reg.num_classes == 21
    mean = torch.randn(21, 64)
    reg.prior.init_from_stats(mean, torch.zeros(21, 64))
    with EventStorage():
        losses = model(batch)
    features, labels = model.roi_heads.pop_regularized()
    assert (labels == 20).any() and (labels < 20).any()  # background rows are regularized too
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
    assert heads.pop_regularized()[1].numel() == 0


def test_regularizer_state_is_in_the_model_but_not_trained(fake_voc, tmp_path):
    cfg = tiny_cfg(tmp_path)
    model = build_model(cfg)
    keys = [k for k in model.state_dict() if k.startswith("roi_heads.regularizer.")]
    assert {"roi_heads.regularizer.prior.mu", "roi_heads.regularizer.prior.running_mean",
            "roi_heads.regularizer.prior_optimizer.exp_avg", "roi_heads.regularizer.prior_optimizer.num_steps"} <= set(keys)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and "regularizer" in n]
    assert trainable == []
    assert isinstance(model.roi_heads.regularizer, adarand.AdaRand)


def test_unknown_normalizer_is_an_error_naming_the_key(fake_voc, tmp_path):
    with pytest.raises(ValueError, match="MODEL.ADARAND.NORMALIZER"):
        build_model(tiny_cfg(tmp_path, **{"MODEL.ADARAND.NORMALIZER": "per_image"}))

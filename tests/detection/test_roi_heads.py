"""AdaRand ROI heads: loss on the sampled ROIs (checked against the kept rows), labels, refusals."""
import os
from unittest import mock

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from tiny import tiny_cfg

import adarand
from adarand.detection import (
    AdaRandPriorHook, AdaRandDetectionTrainer, BoxRegularization, box_regularizations, check_method_has_heads, compute_box_head_stats,
    init_prior,
)
from adarand.detection.box_branch import IGNORE_INDEX
from adarand.detection.mapper import SingleCategoryMapper

CASCADE = {"MODEL.ROI_HEADS.NAME": "AdaRandCascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True}


def _model_and_batch(tmp_path, **extra):
    cfg = tiny_cfg(tmp_path, **extra)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = next(iter(build_detection_train_loader(cfg)))
    return model, batch


def _branch(model):
    (branch,) = box_regularizations(model)
    return branch


def _rows(model):
    """The (features, labels) the one box branch regularized in the last training forward (the hook's record)."""
    ((branch, rows),) = model.roi_heads.take_sampled_rows().items()
    assert branch is _branch(model)  # the record names its branch
    return rows


def test_fnp_loss_is_mean_square_of_foreground_rows(fake_voc, tmp_path):
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.METHOD": "fnp", "MODEL.ADARAND.LAMBDA": 0.5,
                                                 "MODEL.ADARAND.NORMALIZER": "regularized"})
    with EventStorage():
        losses = model(batch)
    features, labels = _rows(model)
    assert model.roi_heads.take_sampled_rows() == {}
    # Every sampled ROI is kept in place; the background ones are labelled IGNORE_INDEX.
    assert features.shape == (labels.numel(), 64) and (labels == IGNORE_INDEX).any()
    kept = labels != IGNORE_INDEX
    features, labels = features[kept], labels[kept]
    assert labels.numel() > 0 and (labels < 20).all()
    gt = torch.cat([x["instances"].gt_classes for x in batch])
    assert set(labels.tolist()) <= set(gt.tolist())
    torch.testing.assert_close(losses["loss_adarand"], 0.5 * features.pow(2).mean())
    # Gradient reaches the box head.
    losses["loss_adarand"].backward()
    assert model.roi_heads.box_head.fc2.weight.grad.abs().sum() > 0


def test_adarand_loss_with_zero_sigma_is_distance_to_class_means(fake_voc, tmp_path):
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.REGULARIZE_BACKGROUND": True,
                                                 "MODEL.ADARAND.NORMALIZER": "regularized"})
    reg = _branch(model).regularizer
    assert reg.num_classes == 21
    mean = torch.randn(21, 64)
    reg.prior.init_from_stats(mean, torch.zeros(21, 64))
    with EventStorage():
        losses = model(batch)
    features, labels = _rows(model)
    assert (labels == 20).any() and (labels < 20).any()  # background rows are regularized too
    assert not (labels == IGNORE_INDEX).any()
    reference = (features.double() - mean.double()[labels]).pow(2).mean()
    torch.testing.assert_close(losses["loss_adarand"].double(), reference, rtol=1e-5, atol=1e-6)


def _sampled(classes, image_sizes=(64, 96)):
    return Instances(image_sizes, proposal_boxes=Boxes(torch.zeros(len(classes), 4)),
                     gt_classes=torch.tensor(classes))


@pytest.mark.parametrize("method", ["adarand", "fnp", "ptr"])
def test_no_foreground_roi_gives_zero_loss(fake_voc, tmp_path, method):
    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.METHOD": method})
    branch = _branch(build_model(cfg))
    if branch.regularizer.needs_stats:
        branch.regularizer.prior.init_normal()
    features = torch.randn(2, 64, requires_grad=True)
    labels = branch.roi_labels([_sampled([20, 20])])
    loss = branch.loss(features, labels, logits=torch.randn(2, 21), classifier_weight=torch.randn(21, 64))
    assert float(loss) == 0.0
    assert (labels == IGNORE_INDEX).all()


def test_roi_and_image_labels(fake_voc, tmp_path):
    """roi: matched foreground classes only; image: every ROI gets its image's category."""
    proposals = [_sampled([3, 20, 3, 20]), _sampled([20, 7])]
    targets = [Instances((64, 96), gt_classes=torch.tensor([3, 3])), Instances((64, 96), gt_classes=torch.tensor([7]))]
    roi = _branch(build_model(tiny_cfg(tmp_path)))
    assert roi.roi_labels(proposals).tolist() == [3, IGNORE_INDEX, 3, IGNORE_INDEX, IGNORE_INDEX, 7]
    image = _branch(build_model(tiny_cfg(tmp_path, **{"MODEL.ADARAND.LABELS": "image"})))
    assert image.roi_labels(proposals, targets).tolist() == [3, 3, 3, 3, 7, 7]
    no_box = [targets[0], Instances((64, 96), gt_classes=torch.tensor([], dtype=torch.long))]
    assert image.roi_labels(proposals, no_box).tolist() == [3, 3, 3, 3, IGNORE_INDEX, IGNORE_INDEX]  # no box: no label
    with pytest.raises(RuntimeError, match="single-category"):
        image.roi_labels([_sampled([3, 5])], [Instances((64, 96), gt_classes=torch.tensor([3, 5]))])
    with pytest.raises(ValueError, match="REGULARIZE_BACKGROUND"):
        build_model(tiny_cfg(tmp_path, **{"MODEL.ADARAND.LABELS": "image", "MODEL.ADARAND.REGULARIZE_BACKGROUND": True}))


def test_image_labels_train_on_single_category_images(fake_voc, tmp_path):
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.LABELS": "image", "MODEL.ADARAND.METHOD": "fnp",
                                                 "MODEL.ADARAND.NORMALIZER": "regularized"})
    with EventStorage():
        losses = model(batch)
    features, labels = _rows(model)
    images = [set(x["instances"].gt_classes.tolist()) for x in batch]
    assert set(labels.tolist()) == set().union(*images)
    assert labels.numel() == 2 * 32  # every sampled ROI, background ones too
    torch.testing.assert_close(losses["loss_adarand"], features.pow(2).mean())


def test_image_labels_refuse_a_multi_category_image_by_name(fake_voc, tmp_path):
    multi = next(d for d in DatasetCatalog.get("voc_2012_seg_train") if len({a["category_id"] for a in d["annotations"]}) > 1)
    mapper = SingleCategoryMapper(lambda d: d)
    with pytest.raises(ValueError, match=f"LABELS 'image' needs single-category images; {multi['file_name']}"):
        mapper(multi)
    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.LABELS": "image", "DATASETS.TRAIN": ("voc_2012_seg_train",)})
    with pytest.raises(ValueError, match="needs single-category images; .*2012_0000"):
        init_prior(cfg, build_model(cfg))  # the statistics pass reads every image first
    assert not os.path.exists(tmp_path / "adarand_stats.pt")
    loader = AdaRandDetectionTrainer.build_train_loader(cfg)
    with pytest.raises(ValueError, match="needs single-category images; .*2012_0000"):
        for _ in zip(range(20), loader):
            pass


def test_weights_without_the_prior_refuse_to_train(fake_voc, tmp_path):
    """Detectron2 loads non-strictly: pre-trained weights without prior keys leave it uninitialised."""
    model, batch = _model_and_batch(tmp_path)
    plain = {k: v for k, v in model.state_dict().items() if ".adarand." not in k}
    torch.save({"model": plain}, tmp_path / "pretrained.pth")
    fresh = build_model(tiny_cfg(tmp_path)).train()
    DetectionCheckpointer(fresh).load(str(tmp_path / "pretrained.pth"))
    assert not _branch(fresh).regularizer.prior.initialized
    with EventStorage(), pytest.raises(RuntimeError, match="not initialised.*tools/compute_prior.py.*init_prior"):
        fresh(batch)


def test_training_without_the_prior_hook_is_an_error_naming_it(fake_voc, tmp_path):
    """Issue 28, item 10: a trainer that never takes the rows (no AdaRandPriorHook) would keep a fixed prior: the
    next training forward raises. Evaluation and PreciseBN-style forwards (no_grad) in between do not."""
    model, batch = _model_and_batch(tmp_path)
    _branch(model).regularizer.prior.init_from_stats(torch.randn(20, 64), torch.ones(20, 64))
    with EventStorage():
        model(batch)
        with torch.no_grad():
            model(batch)  # training mode without gradients (PreciseBN): neither records nor checks
            model.eval()(batch)
        model.train()
        with pytest.raises(RuntimeError, match="never taken.*AdaRandPriorHook"):
            model(batch)
        assert model.roi_heads.take_sampled_rows()
        model(batch)  # rows taken: trains on


def test_method_without_a_capable_head_is_an_error(fake_voc, tmp_path):
    cfg = tiny_cfg(tmp_path, **{"MODEL.ROI_HEADS.NAME": "StandardROIHeads"})
    with pytest.raises(ValueError, match="METHOD is 'adarand' but no head of the model \\({'roi_heads': 'StandardROIHeads'}\\)"):
        AdaRandDetectionTrainer.build_model(cfg)
    check_method_has_heads("none", build_model(cfg))  # plain fine-tuning needs no such head


@pytest.mark.parametrize("stages, names", [("all", ["stage0", "stage1", "stage2"]), ("last", ["stage2"])])
def test_cascade_regularizes_the_chosen_stages(fake_voc, tmp_path, stages, names):
    model, batch = _model_and_batch(tmp_path, **CASCADE, **{"MODEL.ADARAND.METHOD": "fnp",
                                                            "MODEL.ADARAND.CASCADE_STAGES": stages,
                                                            "MODEL.ADARAND.NORMALIZER": "regularized"})
    assert [b.name for b in box_regularizations(model)] == names
    with EventStorage():
        losses = model(batch)
    assert sorted(k for k in losses if k.startswith("loss_adarand")) == [f"loss_adarand_{n}" for n in names]
    rows = model.roi_heads.take_sampled_rows()
    assert list(rows) == box_regularizations(model)  # keyed by branch, not paired by position
    for branch, (features, labels) in rows.items():
        features, labels = features[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX]
        torch.testing.assert_close(losses[f"loss_adarand_{branch.name}"], features.pow(2).mean())
        assert labels.numel() > 0 and (labels < 20).all()


def test_regularizer_state_is_in_the_model_but_not_trained(fake_voc, tmp_path):
    model = build_model(tiny_cfg(tmp_path))
    prefix = "roi_heads.adarand.0.regularizer."
    keys = [k for k in model.state_dict() if k.startswith(prefix)]
    assert {prefix + k for k in ("prior.mu", "prior.running_mean", "prior.optimizer.exp_avg",
                                 "prior.optimizer.num_steps")} <= set(keys)
    # Detectron2's own keys are unchanged, so its checkpoints load as they are.
    assert {"roi_heads.box_predictor.cls_score.weight", "roi_heads.box_head.fc1.weight"} <= set(model.state_dict())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and ".adarand." in n]
    assert trainable == []
    assert isinstance(_branch(model).regularizer, adarand.AdaRand)


@pytest.mark.parametrize("method", ["adarand", "fnp", "ptr", "randreg-uniform"])
def test_losses_equal_the_boolean_mask_selection(fake_voc, tmp_path, method):
    """Same batch, same losses as regularizing the compacted foreground rows (sigma = 0: no noise)."""
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.METHOD": method, "MODEL.ADARAND.NORMALIZER": "regularized"})
    reg = _branch(model).regularizer
    if reg.needs_stats:
        reg.prior.init_from_stats(torch.randn(20, 64), torch.ones(20, 64))
    if hasattr(reg, "prior"):
        reg.prior.sigma.zero_()
    if method == "ptr":
        reg.enabled.fill_(True)
    with EventStorage():
        losses = model(batch)
    features, labels = _rows(model)
    keep = labels != IGNORE_INDEX
    weight = model.roi_heads.box_predictor.cls_score.weight
    logits = model.roi_heads.box_predictor(features)[0]
    compacted = reg(features[keep], labels[keep], logits=logits[keep], classifier_weight=weight)
    torch.testing.assert_close(losses["loss_adarand"], compacted, rtol=1e-6, atol=1e-7)
    assert losses["loss_adarand"] > 0


def test_hook_logs_means_over_its_period(fake_voc, tmp_path):
    """ROI count, feature norm, prior-mean norm and prior loss: means over the period, read once."""
    model, batch = _model_and_batch(tmp_path)
    mu = torch.randn(20, 64)
    _branch(model).regularizer.prior.init_from_stats(mu, torch.ones(20, 64))
    trainer = mock.Mock(model=model, max_iter=100)
    hook = AdaRandPriorHook(log_period=2)
    hook.trainer = trainer
    hook.before_train()
    rois, feature_norms, prior_norms = 0, 0.0, 0.0
    with EventStorage() as storage:
        trainer.storage = storage
        for it in range(2):
            storage.iter = trainer.iter = it
            model(batch)  # a training step's forward (with gradients): the heads record its rows
            features, labels = model.roi_heads.sampled_rows[_branch(model)]  # the record the hook takes
            kept = labels != IGNORE_INDEX
            rois += int(kept.sum())
            feature_norms += float(features[kept].double().norm(dim=1).sum())
            prior_norms += float(_branch(model).regularizer.prior.mu[labels[kept]].double().norm(dim=1).sum())
            hook.after_step()
            assert ("adarand/num_rois" in storage.latest()) == (it == 1)
    latest = storage.latest()
    assert latest["adarand/num_rois"][0] == pytest.approx(rois / 2)
    assert latest["adarand/feature_norm"][0] == pytest.approx(feature_norms / rois, rel=1e-5)
    assert latest["adarand/prior_norm"][0] > 0
    assert "adarand/prior_loss" in latest


def test_sampled_normalizer_divides_the_sum_by_all_sampled_rois(fake_voc, tmp_path):
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.METHOD": "fnp", "MODEL.ADARAND.LAMBDA": 0.5})
    with EventStorage():
        losses = model(batch)
    features, labels = _rows(model)
    kept = labels != IGNORE_INDEX
    assert 0 < int(kept.sum()) < labels.numel()  # some sampled ROIs are background: the normalisers differ
    reference = 0.5 * features[kept].double().pow(2).sum() / (labels.numel() * features.shape[1])
    torch.testing.assert_close(losses["loss_adarand"].double(), reference, rtol=1e-5, atol=1e-7)


def test_unknown_normalizer_is_an_error_naming_the_key(fake_voc, tmp_path):
    with pytest.raises(ValueError, match="MODEL.ADARAND.NORMALIZER"):
        build_model(tiny_cfg(tmp_path, **{"MODEL.ADARAND.NORMALIZER": "per_image"}))


@pytest.mark.parametrize("extra", [{}, {**CASCADE, "MODEL.ADARAND.CASCADE_STAGES": "all"}])
def test_heads_hand_over_what_they_regularized(fake_voc, tmp_path, extra):
    """The predictors keep Detectron2's class; the loss dict holds only loss terms; the rows go to a record."""
    model, batch = _model_and_batch(tmp_path, **{"MODEL.ADARAND.METHOD": "fnp", **extra})
    heads = model.roi_heads
    predictors = list(heads.box_predictor) if extra else [heads.box_predictor]
    assert {type(p) for p in predictors} == {FastRCNNOutputLayers}
    assert heads.sampled_rows == {}
    with EventStorage():
        losses = model(batch)
    assert all(k.startswith("loss_") and torch.is_tensor(v) for k, v in losses.items())
    rows = heads.sampled_rows
    assert list(rows) == box_regularizations(model) and len(rows) == (3 if extra else 1)
    for features, labels in rows.values():
        assert features.shape == (labels.numel(), 64) and not features.requires_grad
        assert ((labels == IGNORE_INDEX) | ((labels >= 0) & (labels < 20))).all() and (labels >= 0).any()
    assert heads.take_sampled_rows() is rows and heads.sampled_rows == {}


@pytest.mark.parametrize("extra", [{"MODEL.ADARAND.STATS_ROIS": "proposals"},
                                   {"MODEL.ADARAND.STATS_ROIS": "gt", "MODEL.ADARAND.REGULARIZE_BACKGROUND": True},
                                   {**CASCADE, "MODEL.ADARAND.CASCADE_STAGES": "all",
                                    "MODEL.ADARAND.STATS_ROIS": "proposals"}])
def test_statistics_pass_computes_no_loss(fake_voc, tmp_path, extra):
    """The prior statistics run the box branch on the sampled ROIs, not the training loss path."""
    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.STATS_MAX_IMAGES": 2, "MODEL.ADARAND.ALLOW_MISSING_CLASSES": True,
                                **extra})
    model = build_model(cfg)
    refuse = mock.Mock(side_effect=AssertionError("a loss was computed"))
    with mock.patch.object(FastRCNNOutputLayers, "losses", refuse), mock.patch.object(BoxRegularization, "loss", refuse):
        stats = compute_box_head_stats(cfg, model)
    assert len(stats) == len(box_regularizations(model)) and all(int(st.count.sum()) > 0 for st in stats)
    assert refuse.call_count == 0

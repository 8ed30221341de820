"""The identity recorded with the detection priors' statistics (Detectron2 YAML and LazyConfig),
pinned: a cached or given statistics file is accepted only when its identity equals the run's, so any
change to these dicts makes existing files stale or refused (written against the identity as it stood
before issue 31)."""
import importlib.util
import os
from types import SimpleNamespace

import pytest
import torch
from detectron2.config import LazyConfig
from detectron2.data import MetadataCatalog
from tiny import REPO, tiny_cfg, write_tiny_lazy_config
from torch import nn

from adarand.detection import prior_init
from adarand.detection.prior_init import branch_identity, weights_identity

RPN = {"RPN.BATCH_SIZE_PER_IMAGE": 256, "RPN.BBOX_REG_LOSS_TYPE": "smooth_l1", "RPN.BBOX_REG_LOSS_WEIGHT": 1.0,
       "RPN.BBOX_REG_WEIGHTS": [1.0, 1.0, 1.0, 1.0], "RPN.BOUNDARY_THRESH": -1, "RPN.CONV_DIMS": [-1],
       "RPN.HEAD_NAME": "StandardRPNHead", "RPN.IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"],
       "RPN.IOU_LABELS": [0, -1, 1], "RPN.IOU_THRESHOLDS": [0.3, 0.7], "RPN.LOSS_WEIGHT": 1.0,
       "RPN.NMS_THRESH": 0.7, "RPN.POSITIVE_FRACTION": 0.5, "RPN.POST_NMS_TOPK_TEST": 32,
       "RPN.POST_NMS_TOPK_TRAIN": 64, "RPN.PRE_NMS_TOPK_TEST": 200, "RPN.PRE_NMS_TOPK_TRAIN": 200,
       "RPN.SMOOTH_L1_BETA": 0.0}
YAML_SETTINGS = {
    "meta_architecture": "GeneralizedRCNN", "backbone": "build_resnet_fpn_backbone", "roi_heads": "AdaRandROIHeads",
    "box_head": "FastRCNNConvFCHead", "weights": "", "datasets": ["voc_2012_seg_train_single"], "max_images": 0,
    "stats_rois": "proposals", "labels": "roi", "regularize_background": False,
    "transform": "ResizeShortestEdge(64, 96) BGR mean=[103.53, 116.28, 123.675] std=[1.0, 1.0, 1.0]",
    "roi_sampler": {
        "ANCHOR_GENERATOR.ANGLES": [[-90, 0, 90]], "ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
        "ANCHOR_GENERATOR.NAME": "DefaultAnchorGenerator", "ANCHOR_GENERATOR.OFFSET": 0.0,
        "ANCHOR_GENERATOR.SIZES": [[32], [64], [128], [256], [512]], "PROPOSAL_GENERATOR": "RPN",
        "ROI_BOX_CASCADE_HEAD.IOUS": [0.5, 0.6, 0.7], "ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
        "ROI_HEADS.IOU_LABELS": [0, 1], "ROI_HEADS.IOU_THRESHOLDS": [0.5], "ROI_HEADS.NUM_CLASSES": 20,
        "ROI_HEADS.POSITIVE_FRACTION": 0.25, "ROI_HEADS.PROPOSAL_APPEND_GT": True, **RPN}}
PROPOSAL_GENERATOR = (
    "in_features:\n- p2\n- p3\n- p4\n- p5\n- p6\nhead:\n  in_channels: 32\n  num_anchors: 3\n"
    "  _target_: !!python/name:detectron2.modeling.proposal_generator.rpn.StandardRPNHead ''\n"
    "anchor_generator:\n  sizes:\n  - - 32\n  - - 64\n  - - 128\n  - - 256\n  - - 512\n  aspect_ratios:\n"
    "  - 0.5\n  - 1.0\n  - 2.0\n  strides:\n  - 4\n  - 8\n  - 16\n  - 32\n  - 64\n  offset: 0.0\n"
    "  _target_: !!python/name:detectron2.modeling.anchor_generator.DefaultAnchorGenerator ''\n"
    "anchor_matcher:\n  thresholds:\n  - 0.3\n  - 0.7\n  labels:\n  - 0\n  - -1\n  - 1\n"
    "  allow_low_quality_matches: true\n  _target_: !!python/name:detectron2.modeling.matcher.Matcher ''\n"
    "box2box_transform:\n  weights:\n  - 1.0\n  - 1.0\n  - 1.0\n  - 1.0\n"
    "  _target_: !!python/name:detectron2.modeling.box_regression.Box2BoxTransform ''\n"
    "batch_size_per_image: 256\npositive_fraction: 0.5\npre_nms_topk:\n- 200\n- 200\npost_nms_topk:\n- 64\n- 32\n"
    "nms_thresh: 0.7\n_target_: !!python/name:detectron2.modeling.proposal_generator.rpn.RPN ''\n")
LAZY_SETTINGS = {
    "weights": "", "stats_rois": "proposals", "labels": "roi", "regularize_background": False,
    "stats_loader": "dataset_names: ${..train.dataset.names}\nmin_size: 64\nmax_size: 96\n"
                    "image_format: ${..train.mapper.image_format}\nmax_images: ${...model.roi_heads.adarand.STATS_MAX_IMAGES}\n"
                    "labels: ${...model.roi_heads.adarand.LABELS}\n"
                    "_target_: !!python/name:adarand.detection.prior_init.stats_loader ''\n",
    "roi_sampler": {"batch_size_per_image": 32, "num_classes": 20, "positive_fraction": 0.25,
                    "proposal_append_gt": None, "proposal_generator": PROPOSAL_GENERATOR,
                    "proposal_matcher": "thresholds:\n- 0.5\nlabels:\n- 0\n- 1\nallow_low_quality_matches: false\n"
                                        "_target_: !!python/name:detectron2.modeling.matcher.Matcher ''\n"}}
# the digest of fixed_model()'s weights without its regularizer's state
WEIGHTS = {"trainer": "detection", "weights_sha256": "4216c7cae0e46cbf3516f75b80a17b2dcf27f7d8d83aa76ffaf0873c98bf0453"}


def fixed_model():
    """A detector stand-in: weights, and a regularizer's state under ``.adarand.`` (left out of the digest)."""
    model = nn.Module()
    model.body, model.head = nn.Linear(2, 2), nn.Module()
    model.head.adarand = nn.Linear(2, 2)
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) + i)
    return model


def settings_passed(module, init_prior, cfg, monkeypatch):
    """The ``identity`` that ``init_prior`` hands to ``init_prior_from`` (which adds the weights and branch)."""
    seen = {}
    monkeypatch.setattr(module, "init_prior_from", lambda *args, **kwargs: seen.update(kwargs))
    init_prior(cfg, None)
    return seen["identity"]


@pytest.mark.parametrize("branch, name", [(None, "box"), ("stage2", "stage2"), ("sem_seg", "sem_seg")])
def test_branch_identity_is_unchanged(branch, name):
    assert weights_identity(fixed_model()) == WEIGHTS
    assert branch_identity(weights_identity(fixed_model()), {"a": 1}, SimpleNamespace(name=branch)) == \
        {**WEIGHTS, "a": 1, "branch": name}


def test_yaml_statistics_identity_is_unchanged(tmp_path, monkeypatch):
    settings = settings_passed(prior_init, prior_init.init_prior, tiny_cfg(tmp_path), monkeypatch)
    dirs = [os.path.abspath(str(MetadataCatalog.get("voc_2012_seg_train_single").get("dirname", "")))]
    assert settings == {**YAML_SETTINGS, "dataset_dirs": dirs}


def test_lazy_statistics_identity_is_unchanged(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("lazyconfig_train_net",
                                                  os.path.join(REPO, "tools", "lazyconfig_train_net.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = LazyConfig.load(write_tiny_lazy_config(tmp_path / "tiny.py", tmp_path / "out"))
    assert settings_passed(tool, tool.init_prior, cfg, monkeypatch) == LAZY_SETTINGS

"""Every paper config (a leaf whose _BASE_ chain reaches Base-ResNet50.yaml or Base-ViT-B.yaml)
against the official AdaRand code's settings, written out here from its files (public repository
yshinya6/adarand; each row names the file it was read from). Differences we keep on purpose
(split, validation transforms, subset sampling) are in docs/fidelity.md, not in this table."""
import glob
import os

import pytest
import torch
from torchvision import transforms as T

from adarand.classification import build
from adarand.classification.config import load_cfg
from adarand.classification.transforms import build_transforms

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "classification")

# Shared by every row: batchsize 64, epoch 200, train loader drop_last=True
# (util/train_util.py setup_dataloaders), inputs normalised with mean = std = 0.5 for every backbone,
# train RandomResizedCrop(224) + flip, test Resize(2^ceil(log2 224) = 256) + CenterCrop(224)
# (data/generic.py), fp32 (no autocast in updater/*.py), train_val_split_ratio 0.9, lambda 1,
# alpha 0.5 (config/04_adarand/*.yaml updater args), prior: optimizer_g Adam lr 1e-2 with
# lr_milestone cosine, i.e. the per-iteration 7/16 cosine without warm-up (util/train_util.py).
COMMON = {
    "SOLVER.BATCH_SIZE": 64, "SOLVER.EPOCHS": 200, "DATALOADER.DROP_LAST": True,
    "INPUT.SIZE": 224, "INPUT.MEAN": [0.5, 0.5, 0.5], "INPUT.STD": [0.5, 0.5, 0.5], "INPUT.AUGMENT": True,
    "AMP": "off", "DATASET.VAL_FRACTION": 0.1, "REGULARIZER.LAMBDA": 1.0, "REGULARIZER.ALPHA": 0.5,
    "REGULARIZER.PRIOR_LR": 0.01, "REGULARIZER.PRIOR_LR_SCHEDULE": "cosine_7_16", "MODEL.FREEZE_BN": False,
}
OFFICIAL = {
    # config/04_adarand/rn50.yaml (same optimizer_c in 00_finetuning .. 03_randreg-pre/rn50.yaml):
    # SGD lr 0.01, momentum 0.9, nesterov, no weight_decay (torch default 0), lr_milestone
    # [60, 120, 160] x lr_drop_rate 0.1 on EPOCH_STARTED (per epoch); model/resnet.py: torchvision V1 weights.
    "resnet50": {
        "MODEL.WEIGHTS": "IMAGENET1K_V1", "SOLVER.OPTIMIZER": "sgd", "SOLVER.BASE_LR": 0.01,
        "SOLVER.MOMENTUM": 0.9, "SOLVER.NESTEROV": True, "SOLVER.WEIGHT_DECAY": 0.0,
        "SOLVER.LR_SCHEDULE": "multistep", "SOLVER.MILESTONES": [60, 120, 160], "SOLVER.GAMMA": 0.1,
        "SOLVER.WARMUP_ITERS": 0,
    },
    # config/04_adarand/vit_b_16.yaml (also 01_randreg-uni, 03_randreg-pre): AdamW lr 3e-5,
    # weight_decay 0.1, lr_milestone cosine (per iteration, 7/16 cycle) with warmup 30;
    # model/vit.py: torchvision vit_b_16 V1 weights.
    "vit_b_16": {
        "MODEL.WEIGHTS": "IMAGENET1K_V1", "SOLVER.OPTIMIZER": "adamw", "SOLVER.BASE_LR": 3e-5,
        "SOLVER.WEIGHT_DECAY": 0.1, "SOLVER.LR_SCHEDULE": "cosine_7_16", "SOLVER.WARMUP_ITERS": 30,
    },
    # config/00_finetuning/vit_b_16.yaml (also 02_randreg-std): as above with warmup 50.
    "vit_b_16/ft": {"SOLVER.WARMUP_ITERS": 50},
}


def _paper_configs():
    found = []
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml"))):
        chain, current = [], path
        while current:
            chain.append(os.path.basename(current))
            with open(current) as f:
                base = next((line.split(":", 1)[1].strip().strip('"') for line in f if line.startswith("_BASE_")), "")
            current = os.path.join(os.path.dirname(current), base) if base else ""
        if {"Base-ResNet50.yaml", "Base-ViT-B.yaml"} & set(chain[1:]):  # leaf configs (the Base files hold no method)
            found.append(path)
    return found


PAPER_CONFIGS = _paper_configs()


def _value(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return list(cfg) if isinstance(cfg, (list, tuple)) else cfg


def _expected(cfg):
    expected = dict(COMMON, **OFFICIAL[cfg.MODEL.BACKBONE])
    method = "ft" if cfg.REGULARIZER.NAME == "none" and not cfg.BASELINE.NAME else cfg.REGULARIZER.NAME
    expected.update(OFFICIAL.get(f"{cfg.MODEL.BACKBONE}/{method}", {}))
    return expected


def test_every_base_recipe_has_paper_configs():
    assert len(PAPER_CONFIGS) >= 39  # 5 methods x 6 datasets, Cars subsets and baselines, CIFAR-10, ViT-B
    assert {load_cfg(p).MODEL.BACKBONE for p in PAPER_CONFIGS} == {"resnet50", "vit_b_16"}


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=os.path.basename)
def test_paper_config_matches_the_official_settings(path):
    cfg = load_cfg(path)
    mismatches = {key: (_value(cfg, key), want) for key, want in _expected(cfg).items() if _value(cfg, key) != want}
    assert not mismatches, f"{os.path.basename(path)}: (ours, official) {mismatches}"


@pytest.mark.parametrize("backbone", ["resnet50", "vit_b_16"])
def test_built_optimizer_and_eval_transforms_are_the_official_ones(backbone):
    path = next(p for p in PAPER_CONFIGS if load_cfg(p).MODEL.BACKBONE == backbone)
    cfg = load_cfg(path)
    optimizer = build.build_optimizer(cfg, torch.nn.Linear(2, 2))
    group = optimizer.param_groups[0]
    if backbone == "resnet50":
        assert type(optimizer) is torch.optim.SGD
        assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"], group["dampening"]) == \
            (0.01, 0.9, True, 0.0, 0)
    else:
        assert type(optimizer) is torch.optim.AdamW
        assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (3e-5, 0.1, (0.9, 0.999), 1e-8)
    steps = build_transforms(False, size=cfg.INPUT.SIZE, mean=cfg.INPUT.MEAN, std=cfg.INPUT.STD).transforms
    resize, crop = steps[0], steps[1]
    assert isinstance(resize, T.Resize) and resize.size == 256
    assert isinstance(crop, T.CenterCrop) and list(crop.size) == [224, 224]
    normalize = steps[-1]
    assert list(normalize.mean) == [0.5] * 3 and list(normalize.std) == [0.5] * 3

"""Every paper config (a leaf whose _BASE_ chain reaches Base-ResNet50.yaml or Base-ViT-B.yaml)
against the official AdaRand code's settings, written out here from its files (public repository
yshinya6/adarand, config/<method directory>/<pre-training>.yaml; each row names the files it was
read from). Each leaf is checked against the row of its pre-training (derived from MODEL.BACKBONE
and MODEL.CHECKPOINT_FORMAT) and of its method. Differences we keep on purpose (split, validation
transforms, subset sampling, the recipe of methods the official code does not publish) are in
docs/fidelity.md, not in this table."""
import glob
import math
import os

import pytest
import torch
from torchvision import transforms as T

from adarand.classification import solver
from adarand.classification.config import load_cfg
from adarand.classification.transforms import build_transforms

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "classification")

# Shared by every row: batchsize 64, epoch 200, train loader drop_last=True
# (util/train_util.py setup_dataloaders), inputs normalised with mean = std = 0.5 for every backbone,
# train RandomResizedCrop(224) + flip, test Resize(2^ceil(log2 224) = 256) + CenterCrop(224)
# (data/generic.py), fp32 (no autocast in updater/*.py), train_val_split_ratio 0.9, lambda_reg 1
# (every config/0[1-4]_*/*.yaml), alpha 0.5 (config/04_adarand/*.yaml updater args), prior:
# optimizer_g Adam lr 1e-2 with lr_milestone cosine, i.e. the per-iteration 7/16 cosine without
# warm-up (config/04_adarand/*.yaml, util/train_util.py).
COMMON = {
    "SOLVER.BATCH_SIZE": 64, "SOLVER.EPOCHS": 200, "DATALOADER.DROP_LAST": True,
    "INPUT.SIZE": 224, "INPUT.MEAN": [0.5, 0.5, 0.5], "INPUT.STD": [0.5, 0.5, 0.5], "INPUT.AUGMENT": True,
    "AMP": "off", "DATASET.VAL_FRACTION": 0.1, "MODEL.ADARAND.LAMBDA": 1.0, "MODEL.ADARAND.ALPHA": 0.5,
    "MODEL.ADARAND.PRIOR_LR": 0.01, "MODEL.ADARAND.PRIOR_LR_SCHEDULE": "cosine_7_16", "MODEL.FREEZE_BN": False,
}
# optimizer_c of config/0[0-4]_*/rn50.yaml: SGD lr 0.01, momentum 0.9, nesterov, no weight_decay
# (torch default 0), lr_milestone [60, 120, 160] x lr_drop_rate 0.1 on EPOCH_STARTED (per epoch), no warm-up.
SGD_RECIPE = {
    "SOLVER.OPTIMIZER": "sgd", "SOLVER.BASE_LR": 0.01, "SOLVER.MOMENTUM": 0.9, "SOLVER.NESTEROV": True,
    "SOLVER.WEIGHT_DECAY": 0.0, "SOLVER.LR_SCHEDULE": "multistep", "SOLVER.MILESTONES": [60, 120, 160],
    "SOLVER.GAMMA": 0.1,
}
# optimizer_c of every other official config: AdamW lr 3e-5, weight_decay 0.1, lr_milestone cosine
# (per iteration, 7/16 cycle, util/train_util.py CosineAnnealingLR) after `warmup` iterations (WARMUP below).
ADAMW_RECIPE = {
    "SOLVER.OPTIMIZER": "adamw", "SOLVER.BASE_LR": 3e-5, "SOLVER.WEIGHT_DECAY": 0.1,
    "SOLVER.LR_SCHEDULE": "cosine_7_16",
}
# The official method directories, by our method name (MODEL.ADARAND.METHOD; "ft" = none, no baseline).
METHOD_DIRS = {"ft": "00_finetuning", "randreg-uniform": "01_randreg-uni", "randreg-normal": "02_randreg-std",
               "randreg-pretrained": "03_randreg-pre", "adarand": "04_adarand"}
# One row per pre-training, keyed by our tag (as in tools/reproduce.py): the official file of that name in
# every METHOD_DIRS directory, the model it loads (MODEL.WEIGHTS only where it names published weights;
# the others are user-supplied files), the recipe, and optimizer_c `warmup` per method directory
# (0 where the config has none).
PRETRAININGS = {
    # rn50.yaml; model/resnet.py: torchvision resnet50-19c8e357.pth (IMAGENET1K_V1)
    "r50": dict(
        MODEL={"MODEL.BACKBONE": "resnet50", "MODEL.CHECKPOINT_FORMAT": "torchvision",
               "MODEL.WEIGHTS": "IMAGENET1K_V1"},
        RECIPE=SGD_RECIPE,
        WARMUP={"ft": 0, "randreg-uniform": 0, "randreg-normal": 0, "randreg-pretrained": 0, "adarand": 0}),
    # rn50_simclr.yaml: ResNet50Feat from pretrained/ssl/rn50_simclr.pt
    "r50simclr": dict(
        MODEL={"MODEL.BACKBONE": "resnet50", "MODEL.CHECKPOINT_FORMAT": "simclr"},
        RECIPE=ADAMW_RECIPE,
        WARMUP={"ft": 30, "randreg-uniform": 30, "randreg-normal": 30, "randreg-pretrained": 30, "adarand": 30}),
    # rn50_barlow_twins.yaml: ResNet50Feat from pretrained/ssl/rn50_barlow_twins.pt
    "r50barlowtwins": dict(
        MODEL={"MODEL.BACKBONE": "resnet50", "MODEL.CHECKPOINT_FORMAT": "barlowtwins"},
        RECIPE=ADAMW_RECIPE,
        WARMUP={"ft": 30, "randreg-uniform": 30, "randreg-normal": 30, "randreg-pretrained": 30, "adarand": 30}),
    # rn50_clip.yaml: CLIP's ResNet50 (model/clip.py) from ./pretrained/clip/rn50.pt
    "r50clip": dict(
        MODEL={"MODEL.BACKBONE": "clip:RN50", "MODEL.CHECKPOINT_FORMAT": "torchvision"},
        RECIPE=ADAMW_RECIPE,
        WARMUP={"ft": 30, "randreg-uniform": 30, "randreg-normal": 30, "randreg-pretrained": 30, "adarand": 30}),
    # vit_b_16.yaml; model/vit.py: torchvision vit_b_16-c867db91.pth (IMAGENET1K_V1)
    "vitb16": dict(
        MODEL={"MODEL.BACKBONE": "vit_b_16", "MODEL.CHECKPOINT_FORMAT": "torchvision",
               "MODEL.WEIGHTS": "IMAGENET1K_V1"},
        RECIPE=ADAMW_RECIPE,
        WARMUP={"ft": 50, "randreg-uniform": 30, "randreg-normal": 50, "randreg-pretrained": 30, "adarand": 30}),
    # vit_b_32.yaml; model/vit.py: torchvision vit_b_32-d86f8d99.pth (IMAGENET1K_V1)
    "vitb32": dict(
        MODEL={"MODEL.BACKBONE": "vit_b_32", "MODEL.CHECKPOINT_FORMAT": "torchvision",
               "MODEL.WEIGHTS": "IMAGENET1K_V1"},
        RECIPE=ADAMW_RECIPE,
        WARMUP={"ft": 50, "randreg-uniform": 30, "randreg-normal": 50, "randreg-pretrained": 30, "adarand": 30}),
    # vit_b_16_clip.yaml: CLIP's ViT_B_16 (model/clip.py) from ./pretrained/clip/vit-b-16.pt
    "vitb16clip": dict(
        MODEL={"MODEL.BACKBONE": "clip:ViT-B-16", "MODEL.CHECKPOINT_FORMAT": "torchvision"},
        RECIPE=ADAMW_RECIPE,
        WARMUP={"ft": 50, "randreg-uniform": 30, "randreg-normal": 50, "randreg-pretrained": 30, "adarand": 30}),
    # vit_b_32_clip.yaml: CLIP's ViT_B_32 (model/clip.py) from ./pretrained/clip/vit-b-32.pt
    "vitb32clip": dict(
        MODEL={"MODEL.BACKBONE": "clip:ViT-B-32", "MODEL.CHECKPOINT_FORMAT": "torchvision"},
        RECIPE=ADAMW_RECIPE,
        WARMUP={"ft": 50, "randreg-uniform": 30, "randreg-normal": 50, "randreg-pretrained": 30, "adarand": 30}),
}
# Methods with no official config (the official code publishes only METHOD_DIRS): the official row
# whose recipe our config follows. Deliberate, listed in docs/fidelity.md ("recipe of methods the
# official code does not publish"): FNP and PtR follow AdaRand's (warm-up 30 on the AdamW
# pre-trainings, not the 50 of FT / RandReg N(0,1)); the ablations are AdaRand; RandReg-CP is a fixed
# pre-trained prior like RandReg N(mu, sigma); L2-SP, DELTA and BSS are FT plus a penalty.
UNPUBLISHED_METHODS = {"fnp": "adarand", "ptr": "adarand", "adarand-no-mean": "adarand",
                       "adarand-no-dist": "adarand", "randreg-cp": "randreg-pretrained",
                       "l2sp": "ft", "delta": "ft", "bss": "ft"}


def _paper_configs():
    found = []
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml"))):
        if os.path.basename(path).startswith("Base-"):  # the Base files hold no method
            continue
        chain, current = [], path
        while current:
            chain.append(os.path.basename(current))
            with open(current) as f:
                base = next((line.split(":", 1)[1].strip().strip('"') for line in f if line.startswith("_BASE_")), "")
            current = os.path.join(os.path.dirname(current), base) if base else ""
        if {"Base-ResNet50.yaml", "Base-ViT-B.yaml"} & set(chain[1:]):
            found.append(path)
    return found


PAPER_CONFIGS = _paper_configs()


def _value(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return list(cfg) if isinstance(cfg, (list, tuple)) else cfg


def _pretraining(cfg):
    """The tag of the PRETRAININGS row with the config's MODEL.BACKBONE and MODEL.CHECKPOINT_FORMAT."""
    model = (cfg.MODEL.BACKBONE, cfg.MODEL.CHECKPOINT_FORMAT)
    tags = [tag for tag, row in PRETRAININGS.items()
            if (row["MODEL"]["MODEL.BACKBONE"], row["MODEL"]["MODEL.CHECKPOINT_FORMAT"]) == model]
    assert len(tags) == 1, f"no official pre-training for (MODEL.BACKBONE, MODEL.CHECKPOINT_FORMAT) {model}"
    return tags[0]


def _method(cfg):
    if cfg.MODEL.ADARAND.METHOD != "none":
        return cfg.MODEL.ADARAND.METHOD
    return cfg.BASELINE.METHOD or "ft"


def _expected(cfg):
    row = PRETRAININGS[_pretraining(cfg)]
    method = _method(cfg)
    official_method = method if method in METHOD_DIRS else UNPUBLISHED_METHODS[method]
    return dict(COMMON, **row["MODEL"], **row["RECIPE"], **{"SOLVER.WARMUP_ITERS": row["WARMUP"][official_method]})


def test_every_base_recipe_has_paper_configs():
    assert len(PAPER_CONFIGS) >= 39  # 5 methods x 6 datasets, Cars subsets and baselines, CIFAR-10, ViT-B
    covered = {(_pretraining(cfg), _method(cfg)) for cfg in map(load_cfg, PAPER_CONFIGS)}
    assert {tag for tag, _ in covered} == set(PRETRAININGS)
    # every official config (method directory x pre-training file) has a leaf of ours (Tables 1-2 on Cars)
    assert {(tag, method) for tag in PRETRAININGS for method in METHOD_DIRS} <= covered
    assert {method for _, method in covered} <= set(METHOD_DIRS) | set(UNPUBLISHED_METHODS)


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=os.path.basename)
def test_paper_config_matches_the_official_settings(path):
    cfg = load_cfg(path)
    mismatches = {key: (_value(cfg, key), want) for key, want in _expected(cfg).items() if _value(cfg, key) != want}
    assert not mismatches, f"{os.path.basename(path)}: (ours, official) {mismatches}"


@pytest.mark.parametrize("tag", list(PRETRAININGS))
def test_built_optimizer_and_eval_transforms_are_the_official_ones(tag):
    path = next(p for p in PAPER_CONFIGS if _pretraining(load_cfg(p)) == tag)
    cfg = load_cfg(path)
    optimizer = solver.build_optimizer(cfg, torch.nn.Linear(2, 2))
    group = optimizer.param_groups[0]
    if tag == "r50":
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


@pytest.mark.parametrize("name, warmup", [("cars_vitb32clip_ft.yaml", 50), ("cars_vitb32clip_adarand.yaml", 30)])
def test_built_schedule_warms_up_for_the_official_iterations(name, warmup):
    """The lr climbs linearly to BASE_LR over exactly `warmup` iterations, then follows the 7/16 cosine."""
    cfg = load_cfg(os.path.join(CONFIG_DIR, name))
    optimizer = solver.build_optimizer(cfg, torch.nn.Linear(2, 2))
    scheduler = solver.build_scheduler(cfg, optimizer, iters_per_epoch=10)
    lrs = []
    for _ in range(warmup + 2):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and lrs[warmup - 1] == pytest.approx(3e-5 * (warmup - 1) / warmup, rel=1e-12)
    total = cfg.SOLVER.EPOCHS * 10
    assert lrs[warmup] == pytest.approx(3e-5, rel=1e-12)
    assert lrs[warmup + 1] == pytest.approx(3e-5 * math.cos(math.pi * 7 / 16 / (total - warmup)), rel=1e-12)


@pytest.mark.parametrize("key, build_fn", [("SOLVER.OPTIMIZER", lambda cfg: solver.build_optimizer(cfg, torch.nn.Linear(2, 2))),
                                           ("SOLVER.LR_SCHEDULE", lambda cfg: solver.build_scheduler(
                                               cfg, torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1), 10))])
def test_unknown_optimizer_or_schedule_names_the_key_and_the_choices(key, build_fn):
    """Optimizers and schedules are chosen through the one Registry: an unknown name lists what exists."""
    cfg = load_cfg(os.path.join(CONFIG_DIR, "cars_vitb32clip_ft.yaml"))  # load_cfg refuses "nope" itself
    cfg.defrost()
    cfg.merge_from_list([key, "nope"])
    with pytest.raises(ValueError, match=rf"{key}\) 'nope'; available: "):
        build_fn(cfg)
    assert set(solver.OPTIMIZERS.names()) == {"sgd", "adamw"}
    assert set(solver.SCHEDULERS.names()) == {"multistep", "cosine", "cosine_7_16"}

"""Configuration of the classification trainer: an fvcore ``CfgNode`` of defaults.

``get_cfg()`` returns a fresh copy; YAML files may name a ``_BASE_`` file (resolved
relative to themselves) and may only set keys defined here: an unknown key is an error
that names the file and the key. The paper configs (configs/classification/Base-*.yaml) set
the official code's values; docs/fidelity.md lists them against the paper and these defaults.
"""
from collections.abc import Sequence

from fvcore.common.config import CfgNode as CN

from adarand.regularizer_config import REGULARIZER_KEYS, check_regularizer_keys

from .baselines import DELTA, DELTA_BN_STATS, DELTA_SCALES, available_baselines
from .solver import OPTIMIZERS, SCHEDULERS

_C = CN()

_C.MODEL = CN()
_C.MODEL.BACKBONE = "resnet50"  # resnet50 | vit_b_32 | vit_b_16 | mobilenet_v2 | resnet18 | timm:<x> | clip:<x> (backbones.CLIP)
_C.MODEL.WEIGHTS = ""  # pre-trained weights: torchvision name, "imagenet-offline", or a local file ("" = random init)
_C.MODEL.CHECKPOINT_FORMAT = "torchvision"  # key layout of a local WEIGHTS file (torchvision | simclr | barlowtwins ...)
_C.MODEL.FREEZE_BN = False  # BatchNorm layers stay in eval mode (pre-trained statistics; affine weights still train)
# The regularizer: the keys both trainers share, documented in adarand.regularizer_config.REGULARIZER_KEYS
# (METHOD, LAMBDA, ALPHA, PRIOR_LR, PRIOR_LR_SCHEDULE, PTR_*); here plain fine-tuning by default.
_C.MODEL.ADARAND = CN(REGULARIZER_KEYS)
_C.MODEL.ADARAND.METHOD = "none"

_C.DATASET = CN()
_C.DATASET.NAME = ""  # aircraft | cub | cars | dtd | flowers | pets | cifar10 | imagenet | digits | imagefolder ...
_C.DATASET.ROOT = "datasets"  # directory holding the dataset in its official layout
_C.DATASET.FRACTION = 1.0  # per-class fraction of the training set kept (Cars 10 % as Sec. 6.4; 25 / 50 % ours: docs/fidelity.md)
# Held-out share of the (kept) training set: round(VAL_FRACTION * N) images, stratified (largest
# remainder), evaluated with eval transforms; selects the best epoch. 0 = no validation, the last epoch counts.
_C.DATASET.VAL_FRACTION = 0.1
_C.DATASET.SEED = 0  # seed of the subset and of the train/val split (fixed across training seeds)
_C.DATASET.TEST_SPLIT = "test"  # split the best-validation checkpoint is evaluated on
# More test sets for the selected model, after TEST_SPLIT: "name" (read from <dirname(ROOT)>/<name>, e.g.
# imagenet-a next to datasets/imagenet) or "name=ROOT"; results.json: test_top1@name, test_mean_class_acc@name
_C.DATASET.EXTRA_TESTS = []

_C.INPUT = CN()
_C.INPUT.SIZE = 224  # square crop side in pixels
_C.INPUT.AUGMENT = True  # training images: random resized crop + flip (False: the eval transforms)
_C.INPUT.MEAN = []  # normalisation mean; empty = the loaded weights' own (model.input_mean); official: 0.5
_C.INPUT.STD = []  # normalisation std; empty = the loaded weights' own (model.input_std); official: 0.5

_C.BASELINE = CN()
_C.BASELINE.METHOD = ""  # "" | l2sp | delta | bss (added to any regularizer)
_C.BASELINE.ALPHA = 0.01  # L2-SP: alpha/2 ||w - w0||^2 on the backbone; DELTA: weight of the feature-map distance
_C.BASELINE.BETA = 0.01  # L2-SP / DELTA: beta/2 ||w_head||^2 on the new head
# DELTA: names of backbone submodules whose outputs are compared ("" = the penultimate features);
# [] = DELTA's layers (baselines.delta_layers): on a ResNet the last block's conv3 of each stage, as DELTA's code
_C.BASELINE.DELTA_LAYERS = []
# DELTA: channel attention W_jc, computed once before training from the starting network:
# supervised-standardized (DELTA's code: the loss increases when filter c of layer j is removed, z-scored per
# layer, C_j softmax(z / 5)) | supervised (the DELTA paper's equation as written: C_j softmax of the raw
# increases, near-uniform where they are small) | none (every channel weighs 1). docs/fidelity.md
_C.BASELINE.DELTA_ATTENTION = "supervised-standardized"
# DELTA: distance normalisation: delta (DELTA's code: 0.5 * sum over the batch, each layer over its H*W) |
# mean (mean over the batch, no 1/(H*W))
_C.BASELINE.DELTA_SCALE = "delta"
# DELTA: BatchNorm statistics the attention is measured with: target (DELTA's code: re-estimated on the
# training images, as its probe head trains in train mode) | pretrained (the starting network's; our
# earlier default)
_C.BASELINE.DELTA_ATTENTION_BN = "target"
_C.BASELINE.DELTA_ATTENTION_IMAGES = 256  # DELTA: training images the loss increases are averaged over (DELTA's code: 4 x 64)
_C.BASELINE.BSS_ETA = 0.001  # BSS: eta
_C.BASELINE.BSS_K = 1  # BSS: number of smallest singular values penalised

_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "sgd"  # sgd | adamw
_C.SOLVER.BASE_LR = 0.01
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = True
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.EPOCHS = 200
# multistep, cosine: stepped once per epoch (cosine: CosineAnnealingLR to 0 over EPOCHS);
# cosine_7_16: stepped every iteration, lr * max(0, cos(pi 7/16 t/T)) after WARMUP_ITERS (official AdamW runs)
_C.SOLVER.LR_SCHEDULE = "multistep"
_C.SOLVER.WARMUP_ITERS = 0  # cosine_7_16 only: linear warm-up lr * t / WARMUP_ITERS over the first iterations
_C.SOLVER.MILESTONES = [60, 120, 160]  # epochs at which multistep multiplies the lr by GAMMA
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.BATCH_SIZE = 64  # total over all processes

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
# Drop each epoch's last incomplete training batch, as the official code's loaders do (drop_last=True).
# True (earlier releases: False): a last batch of a few images hurt FT and more AdaRand on the digits
# demo (docs/classification.md, "A tiny last batch"); False keeps it.
_C.DATALOADER.DROP_LAST = True

_C.TEST = CN()
_C.TEST.WEIGHTS = ""  # --eval-only: checkpoint of this trainer to evaluate ("" = OUTPUT_DIR/best.pth)
_C.TEST.BATCH_SIZE = 128  # per process

_C.AMP = "off"  # precision: off (fp32, official) | bf16 | fp16 (autocast, CUDA only)
_C.CHANNELS_LAST = True  # channels-last memory format (CUDA only)
# Fig. 2 every epoch: the paper's pairwise entropy, mean-feature norm and classifier gradient norm
# on training batches (train_*), and our Gaussian entropy / MI on validation features (val_gaussian_*)
_C.DIAGNOSTICS = True
_C.LOG_PERIOD = 20  # steps between progress-bar updates (each one reads values back from the device)
_C.OUTPUT_DIR = "output/classification"
_C.SEED = 0  # training seed: data order, augmentation, noise, init; rank r draws with SEED + r

# Keys of earlier releases: an error naming the new key (both trainers now share MODEL.ADARAND's names).
_RENAMED = {"REGULARIZER.NAME": "MODEL.ADARAND.METHOD", "BASELINE.NAME": "BASELINE.METHOD",
            **{f"REGULARIZER.{key}": f"MODEL.ADARAND.{key}" for key in REGULARIZER_KEYS if key != "METHOD"}}
_C.register_renamed_key("REGULARIZER", "MODEL.ADARAND", message="REGULARIZER.NAME is now MODEL.ADARAND.METHOD")
for _old, _new in _RENAMED.items():
    _C.register_renamed_key(_old, _new)

CHOICES = {  # the names a registry builds are the registry's own
    "SOLVER.OPTIMIZER": tuple(OPTIMIZERS.names()),
    "SOLVER.LR_SCHEDULE": tuple(SCHEDULERS.names()),
    "AMP": ("off", "bf16", "fp16"),
    "BASELINE.METHOD": ("", *available_baselines()),
    "BASELINE.DELTA_ATTENTION": DELTA.ATTENTION,
    "BASELINE.DELTA_SCALE": DELTA_SCALES,
    "BASELINE.DELTA_ATTENTION_BN": DELTA_BN_STATS,
}


def get_cfg() -> CN:
    """A fresh copy of the defaults."""
    return _C.clone()


def check_cfg(cfg: CN) -> None:
    """Reject values outside the documented choices, naming the key."""
    for key, allowed in CHOICES.items():
        value = cfg
        for part in key.split("."):
            value = value[part]
        if value not in allowed:
            raise ValueError(f"config key {key} = {value!r}; expected one of {allowed}")
    check_regularizer_keys(cfg.MODEL.ADARAND)
    if not 0.0 < cfg.DATASET.FRACTION <= 1.0:
        raise ValueError(f"config key DATASET.FRACTION = {cfg.DATASET.FRACTION}; expected 0 < x <= 1")
    if not 0.0 <= cfg.DATASET.VAL_FRACTION < 1.0:
        raise ValueError(f"config key DATASET.VAL_FRACTION = {cfg.DATASET.VAL_FRACTION}; expected 0 <= x < 1")
    if cfg.SOLVER.WARMUP_ITERS < 0 or (cfg.SOLVER.WARMUP_ITERS and cfg.SOLVER.LR_SCHEDULE != "cosine_7_16"):
        raise ValueError(f"config key SOLVER.WARMUP_ITERS = {cfg.SOLVER.WARMUP_ITERS}: a warm-up needs "
                         f"SOLVER.LR_SCHEDULE cosine_7_16 (got {cfg.SOLVER.LR_SCHEDULE!r}) and a value >= 0")
    if cfg.BASELINE.DELTA_ATTENTION_IMAGES < 1:
        raise ValueError(f"config key BASELINE.DELTA_ATTENTION_IMAGES = {cfg.BASELINE.DELTA_ATTENTION_IMAGES}; "
                         "expected >= 1")


def load_cfg(config_file: str = "", opts: Sequence[str] = ()) -> CN:
    """Defaults, then ``config_file`` (with its ``_BASE_`` chain), then ``KEY VALUE`` overrides; frozen."""
    cfg = get_cfg()
    if config_file:
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, AssertionError) as err:  # yacs reports unknown keys with either
            raise KeyError(f"{config_file}: {err.args[0]}") from None
    if opts:
        if len(opts) % 2:
            raise ValueError(f"overrides must be KEY VALUE pairs, got {list(opts)}")
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, AssertionError) as err:
            raise KeyError(f"command-line override: {err.args[0]}") from None
    check_cfg(cfg)
    cfg.freeze()
    return cfg

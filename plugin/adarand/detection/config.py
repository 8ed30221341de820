"""``add_adarand_config``: the ``MODEL.ADARAND`` keys of the Detectron2 plugin."""
from detectron2.config import CfgNode as CN


def add_adarand_config(cfg):
    """Add ``cfg.MODEL.ADARAND`` (defaults = the paper's) and the keys of the datasets switch."""
    cfg.MODEL.ADARAND = CN()
    # Regularizer of the ROI box-head features, by name: any of adarand.available_regularizers()
    # ("none" = plain fine-tuning, "fnp", "randreg-*", "adarand", "adarand-no-mean",
    # "adarand-no-dist", "ptr").
    cfg.MODEL.ADARAND.METHOD = "adarand"
    # lambda: weight of the feature-to-reference regression term (Eq. 3).
    cfg.MODEL.ADARAND.LAMBDA = 1.0
    # Normalisation of loss_adarand over the ROIs. "sampled": the regularizer's sum over the
    # regularized ROIs divided by all sampled ROIs (x D), as Detectron2 normalises loss_box_reg,
    # so each ROI weighs the same in every term whatever the number of foreground ROIs.
    # "regularized": a mean over the regularized ROIs (x D) only; diverged on small random-init
    # Mask R-CNNs (docs/detection_stability.md).
    cfg.MODEL.ADARAND.NORMALIZER = "sampled"
    # alpha: EMA factor of the running class means m_c (Eq. 14-15).
    cfg.MODEL.ADARAND.ALPHA = 0.5
    # Learning rate of the prior's own Adam optimizer (cosine schedule over SOLVER.MAX_ITER).
    cfg.MODEL.ADARAND.PRIOR_LR = 1e-2
    # Class-wise statistics of the pre-trained box head (adarand.ClassStats file, Eq. 9-10).
    # "" = computed at the start of training and cached as OUTPUT_DIR/adarand_stats.pt.
    cfg.MODEL.ADARAND.STATS_FILE = ""
    # False: regularize foreground ROIs only (the paper). True: also background ROIs, as an
    # extra class with index NUM_CLASSES (the prior then has NUM_CLASSES + 1 classes).
    cfg.MODEL.ADARAND.REGULARIZE_BACKGROUND = False
    # A class with no ground-truth box in DATASETS.TRAIN is an error (False), or gets a zero
    # prior row that is never sampled and never moves (True: for a target set covering only
    # part of the label space, such as the offline demo's 3 of VOC's 20 classes).
    cfg.MODEL.ADARAND.ALLOW_MISSING_CLASSES = False
    # Images used to compute the statistics (0 = the whole training set).
    cfg.MODEL.ADARAND.STATS_MAX_IMAGES = 0
    # PtR only: R (gradient-norm ratio), m (targets ~ U[0, 2m)), T (CE threshold that
    # switches the term on, checked every PTR_EPOCH_ITERS iterations), regression loss.
    cfg.MODEL.ADARAND.PTR_RATIO = 3.0
    cfg.MODEL.ADARAND.PTR_TARGET_SCALE = 1.0
    cfg.MODEL.ADARAND.PTR_THRESHOLD = 1.0
    cfg.MODEL.ADARAND.PTR_LOSS = "smooth_l1"
    cfg.MODEL.ADARAND.PTR_EPOCH_ITERS = 500
    # Prior-update hook: step the prior every PERIOD iterations (1 = every step, 0 = never).
    cfg.MODEL.ADARAND.PRIOR_UPDATE_PERIOD = 1
    return cfg


def regularizer_kwargs(cfg):
    """Options of ``adarand.build_regularizer`` from the config, keeping those the method accepts."""
    from adarand import regularizer_options

    a = cfg.MODEL.ADARAND
    candidates = {
        "lam": a.LAMBDA, "alpha": a.ALPHA, "prior_lr": a.PRIOR_LR, "total_steps": cfg.SOLVER.MAX_ITER,
        "ratio": a.PTR_RATIO, "target_scale": a.PTR_TARGET_SCALE, "threshold": a.PTR_THRESHOLD,
        "loss": a.PTR_LOSS,
    }
    accepted = regularizer_options(a.METHOD)
    return {k: v for k, v in candidates.items() if k in accepted}

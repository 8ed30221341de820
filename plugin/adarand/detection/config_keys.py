"""``add_adarand_config``: the ``MODEL.ADARAND`` keys of the Detectron2 plugin; ``check_adarand_config``."""
from typing import Any

from detectron2.config import CfgNode as CN

from adarand.regularizer_config import REGULARIZER_KEYS, check_regularizer_keys
from adarand.dense import BALANCES, DEFAULT_PIXELS_PER_IMAGE


def add_adarand_config(cfg: CN) -> CN:
    """Add ``cfg.MODEL.ADARAND`` (λ and α as the paper fixes them; the rest
    the official code's or ours, docs/fidelity.md), the keys of the datasets switch, and
    ``cfg.TEST.VIS_*`` (:func:`add_visualization_config`)."""
    # The keys both trainers share (METHOD, LAMBDA, ALPHA, PRIOR_LR, PRIOR_LR_SCHEDULE, PTR_*),
    # documented in adarand.regularizer_config.REGULARIZER_KEYS; the prior's lr schedule runs over SOLVER.MAX_ITER.
    cfg.MODEL.ADARAND = CN(REGULARIZER_KEYS)
    # Normalisation of loss_adarand over the ROIs. "sampled": the regularizer's sum over the
    # regularized ROIs divided by all sampled ROIs (x D), as Detectron2 normalises loss_box_reg,
    # so each ROI weighs the same in every term whatever the number of foreground ROIs.
    # "regularized": a mean over the regularized ROIs (x D) only; diverged on small random-init
    # Mask R-CNNs (docs/detection_stability.md).
    cfg.MODEL.ADARAND.NORMALIZER = "sampled"
    # Class-wise statistics of the pre-trained box head (adarand.ClassStats file, Eq. 9-10).
    # "" = computed at the start of training and cached as OUTPUT_DIR/adarand_stats.pt.
    cfg.MODEL.ADARAND.STATS_FILE = ""
    # False: regularize foreground ROIs only (LABELS "roi"). True: also background ROIs, as an
    # extra class with index NUM_CLASSES (the prior then has NUM_CLASSES + 1 classes).
    cfg.MODEL.ADARAND.REGULARIZE_BACKGROUND = False
    # A class with no ground-truth box in DATASETS.TRAIN is an error (False), or gets a zero
    # prior row that is never sampled and never moves (True: for a target set covering only
    # part of the label space, such as the offline demo's 3 of VOC's 20 classes).
    cfg.MODEL.ADARAND.ALLOW_MISSING_CLASSES = False
    # Images used to compute the statistics (0 = the whole training set).
    cfg.MODEL.ADARAND.STATS_MAX_IMAGES = 0
    # PtR only: its switch-on threshold is checked every PTR_EPOCH_ITERS iterations.
    cfg.MODEL.ADARAND.PTR_EPOCH_ITERS = 500
    # Prior-update hook: step the prior every PERIOD iterations (1 = every step, 0 = never).
    cfg.MODEL.ADARAND.PRIOR_UPDATE_PERIOD = 1
    # Label of each regularized ROI. "roi": its matched class (foreground ROIs; any number of
    # categories per image: this project's reading). "image": the image's single category, for
    # every sampled ROI, background included (the literal single-label reading; multi-category
    # images are an error). See docs/detection.md.
    cfg.MODEL.ADARAND.LABELS = "roi"
    # ROIs whose pre-trained box-head features give mu_c, sigma_c (Eq. 9-10): "proposals" = the
    # ROIs the sampler draws from the pre-trained RPN's proposals, labelled as training labels
    # them (the rows training regularizes); "gt" = the ground-truth boxes with their classes.
    # Default by measurement (docs/detection.md): on the demo the two means differ (cos 0.82).
    cfg.MODEL.ADARAND.STATS_ROIS = "proposals"
    # Cascade heads: regularize the box features of "all" stages (one prior each) or the "last".
    cfg.MODEL.ADARAND.CASCADE_STAGES = "last"
    # Every this many iterations (rounded up to a multiple of PRIOR_UPDATE_PERIOD; 0 = never),
    # log loss_adarand / (sum of the other losses) and the regularized features' mean norm
    # against their prior means' (adarand/*): the only host reads the plugin adds.
    cfg.MODEL.ADARAND.SCALE_LOG_PERIOD = 20
    # Semantic-segmentation heads (AdaRandSemSegFPNHead, AdaRandDeepLabV3PlusHead, AdaRandDeepLabV3Head;
    # docs/segmentation.md): each cell of the features their 1x1 predictor reads is one row, labelled by
    # the ground truth at its centre (MODEL.SEM_SEG_HEAD.IGNORE_VALUE pixels not regularized). A training
    # step regularizes PIXELS_PER_IMAGE cells per image, drawn on the device ...
    cfg.MODEL.ADARAND.PIXELS_PER_IMAGE = DEFAULT_PIXELS_PER_IMAGE
    # ... "class": each class present in the image gets an equal expected share of the draw (background
    # does not drown the small classes); "uniform": every labelled cell is equally likely.
    cfg.MODEL.ADARAND.PIXEL_BALANCE = "class"
    add_visualization_config(cfg)
    return cfg


def add_visualization_config(cfg: CN) -> CN:
    """Add ``cfg.TEST.VIS_*``: prediction images written by every evaluation (off by default)."""
    # Draw ground truth | predictions of the first VIS_NUM_IMAGES images of each test set to
    # <evaluation output folder>/vis/<dataset>/<image>.png (0 = off).
    cfg.TEST.VIS_NUM_IMAGES = 0
    # Predictions drawn: those scoring at least this.
    cfg.TEST.VIS_SCORE_THRESH = 0.5
    return cfg


# Integer keys where 0 means off / all and a negative value means nothing.
_COUNT_KEYS = ("PRIOR_UPDATE_PERIOD", "STATS_MAX_IMAGES", "SCALE_LOG_PERIOD", "PTR_EPOCH_ITERS")


def check_adarand_config(cfg: CN) -> None:
    """Refuse values of ``MODEL.ADARAND`` that cannot train, naming the key (call after merging)."""
    check_adarand_keys(cfg.MODEL.ADARAND)


def check_adarand_keys(node: CN, prefix: str = "MODEL.ADARAND") -> None:
    """:func:`check_adarand_config` on the ``MODEL.ADARAND`` keys themselves (a CfgNode, or a LazyConfig's dict):
    the shared keys, the counts of :data:`_COUNT_KEYS` integers >= 0, the pixel keys."""
    check_regularizer_keys(node, prefix)
    for key in _COUNT_KEYS:
        value = node[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"config key {prefix}.{key} = {value!r}; expected an integer >= 0 (0 = off or all)")
    pixels = node["PIXELS_PER_IMAGE"]
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 1:
        raise ValueError(f"config key {prefix}.PIXELS_PER_IMAGE = {pixels!r}; expected an integer >= 1")
    if node["PIXEL_BALANCE"] not in BALANCES:
        raise ValueError(f"config key {prefix}.PIXEL_BALANCE = {node['PIXEL_BALANCE']!r}; expected one of {BALANCES}")


def adarand_options(**overrides: Any) -> dict[str, Any]:
    """The ``MODEL.ADARAND`` defaults as a plain dict, with overrides (for LazyConfigs)."""
    from detectron2.config import get_cfg

    options = dict(add_adarand_config(get_cfg()).MODEL.ADARAND)
    unknown = sorted(set(overrides) - set(options))
    if unknown:
        raise KeyError(f"unknown MODEL.ADARAND key(s) {unknown}; known: {sorted(options)}")
    options.update(overrides)
    return options

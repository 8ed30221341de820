"""``AdaRandDetectionTrainer``: DefaultTrainer with VOC/COCO/semantic-segmentation evaluators, the prior hook and
prior init."""
import os
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators, PascalVOCDetectionEvaluator, \
    SemSegEvaluator
from detectron2.utils.file_io import PathManager
from PIL import Image

from .checkpoint import SafeDetectionCheckpointer
from .hooks import AdaRandPriorHook
from .mapper import NamedErrorsMapper, SingleCategoryMapper
from .prior_init import init_prior
from .regularized import check_method_has_heads, check_initialised


def has_fast_coco_eval() -> bool:
    """True when detectron2 was built with its ``_C`` ops (the fast COCO evaluation)."""
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: str) -> DatasetEvaluator:
    """COCO-style bbox (+ segm when masks exist) AP; plus VOC AP50 on the detection splits; mIoU, fwIoU,
    mACC and pACC (Detectron2's ``SemSegEvaluator``) on a semantic-segmentation split (evaluator_type
    ``sem_seg``, e.g. ``voc_2012_sem_seg_val``).

    With ``TEST.VIS_NUM_IMAGES`` > 0, also draws the first images' detections (``PredictionDrawer``).
    """
    meta = MetadataCatalog.get(dataset_name)
    kind = meta.get("evaluator_type", "coco")
    if kind == "sem_seg":
        if cfg.TEST.VIS_NUM_IMAGES > 0:
            raise ValueError(f"TEST.VIS_NUM_IMAGES draws detections; {dataset_name} is a semantic-segmentation set: "
                             "set it to 0 (tools/visualize.py draws segmentations)")
        return sem_seg_evaluator(dataset_name, output_folder)
    fast = has_fast_coco_eval()
    if kind == "pascal_voc":
        evaluators = [COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder, use_fast_impl=fast),
                      PascalVOCDetectionEvaluator(dataset_name)]
    else:
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        evaluators = [COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder, use_fast_impl=fast)]
    if cfg.TEST.VIS_NUM_IMAGES > 0:
        from .visualize import PredictionDrawer  # imports cv2: only when asked to draw

        evaluators.append(PredictionDrawer(dataset_name, os.path.join(output_folder, "vis", dataset_name),
                                           cfg.TEST.VIS_NUM_IMAGES, cfg.TEST.VIS_SCORE_THRESH))
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def sem_seg_evaluator(dataset_name: str, output_dir: str | None = None) -> SemSegEvaluator:
    """Detectron2's ``SemSegEvaluator`` (mIoU, fwIoU, mACC, pACC) reading the ground truth with
    :func:`read_label_png` (LazyConfigs build it by this name)."""
    return SemSegEvaluator(dataset_name, distributed=True, output_dir=output_dir, sem_seg_loading_fn=read_label_png)


def read_label_png(path: str, dtype: Any = int) -> np.ndarray:
    """A ground-truth label PNG as an array (``SemSegEvaluator``'s own reader asks NumPy >= 2 for a copy-free
    conversion it refuses)."""
    with PathManager.open(path, "rb") as f, Image.open(f) as image:
        return np.asarray(image, dtype=dtype)


def check_weights(path: str) -> None:
    """Clear error for MODEL.WEIGHTS that is neither a local file nor fetchable."""
    if not path:
        return
    scheme = urllib.parse.urlparse(path).scheme
    if scheme in ("", "file"):
        local = path[len("file://"):] if scheme == "file" else path
        if not os.path.isfile(local):
            raise FileNotFoundError(f"MODEL.WEIGHTS not found: {path}")
        return
    from detectron2.utils.file_io import PathManager

    try:
        PathManager.get_local_path(path)
    except Exception as e:
        raise RuntimeError(f"could not fetch MODEL.WEIGHTS {path} ({type(e).__name__}: {e}). Offline? "
                           "Download it elsewhere and pass the local file as MODEL.WEIGHTS.") from e


def load_weights_and_prior(checkpointer: Any, weights: str, resume: bool, init_prior: Callable[[], Any] | None,
                           load: Callable[..., Any] | None = None) -> bool:
    """The start of a run, one rule for both trainers: resume from the checkpoint (its prior kept,
    checked) or check and load ``weights``, then initialise the prior (Eq. 9-10).

    Args:
        checkpointer: the run's Detectron2 checkpointer. weights: the path or URL of the initial weights.
        resume: ``--resume`` was given. init_prior: ``() -> None`` that initialises the priors from
            statistics, or None for a model without AdaRand (weights only).
        load: ``() -> None``, the trainer's own resume-or-load call (default: the checkpointer's
            ``resume_or_load(weights, resume=resume)``).

    Returns:
        True when the run resumed from a checkpoint.

    Raises:
        FileNotFoundError / ValueError: missing or unreadable ``weights`` (see :func:`check_weights`).
        RuntimeError: a resumed checkpoint without an initialised prior.
    """
    resuming = resume and checkpointer.has_checkpoint()
    if not resuming:
        check_weights(weights)
    if load is None:
        checkpointer.resume_or_load(weights, resume=resume)
    else:
        load()
    if init_prior is None:
        return resuming
    if resuming:  # statistics are not read on a resume: the checkpoint must hold the prior
        check_initialised(checkpointer.model, resumed_from=checkpointer.get_checkpoint_file())
    else:
        init_prior()
    return resuming


def build_prior_hook(adarand: Mapping[str, Any]) -> AdaRandPriorHook:
    """The prior hook from the ``MODEL.ADARAND`` keys."""
    epoch_iters = adarand["PTR_EPOCH_ITERS"] if adarand["METHOD"] == "ptr" else 0
    return AdaRandPriorHook(adarand["PRIOR_UPDATE_PERIOD"], epoch_iters, adarand["SCALE_LOG_PERIOD"])


def insert_prior_hook(hook_list: list[Any], prior_hook: Any) -> list[Any]:
    """Put the prior hook before the checkpointer and evaluation: a checkpoint at step k holds prior step k."""
    later = [i for i, h in enumerate(hook_list) if isinstance(h, (hooks.PeriodicCheckpointer, hooks.EvalHook))]
    hook_list.insert(later[0] if later else len(hook_list), prior_hook)
    return hook_list


class AdaRandDetectionTrainer(DefaultTrainer):
    """Fine-tunes with an AdaRand ROI head: prior initialised at start, stepped after every step."""

    checkpointer: Any  # DefaultTrainer's, swapped for the safe one in build_hooks

    @classmethod
    def build_model(cls, cfg: CfgNode) -> torch.nn.Module:
        model = super().build_model(cfg)
        check_method_has_heads(cfg.MODEL.ADARAND.METHOD, model)
        return model

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> Iterable[list[dict[str, Any]]]:
        mapper: Any = NamedErrorsMapper(cfg, True)
        if cfg.MODEL.ADARAND.LABELS == "image":
            mapper = SingleCategoryMapper(mapper)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str) -> Iterable[list[dict[str, Any]]]:
        return build_detection_test_loader(cfg, dataset_name, mapper=NamedErrorsMapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None) -> DatasetEvaluator:
        return build_evaluator(cfg, dataset_name, output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))

    def build_hooks(self) -> list[Any]:
        # DefaultTrainer.__init__ builds its checkpointer just before the hooks that use it:
        # swap in the safe one (weights_only loading, atomic writes, no non-finite save).
        old = self.checkpointer
        self.checkpointer = SafeDetectionCheckpointer(old.model, old.save_dir, **old.checkpointables)
        return insert_prior_hook(super().build_hooks(), build_prior_hook(self.cfg.MODEL.ADARAND))

    def resume_or_load(self, resume: bool = True) -> None:
        """Resume (prior restored from the checkpoint) or load MODEL.WEIGHTS and initialise the prior."""
        load_weights_and_prior(self.checkpointer, self.cfg.MODEL.WEIGHTS, resume,
                               lambda: init_prior(self.cfg, self.model),
                               load=lambda: super(AdaRandDetectionTrainer, self).resume_or_load(resume=resume))

"""Every regularized head of a model, whatever its kind: the ROI heads' box branches, the dense heads.

A regularized head is any module with

    regularizations() -> its branches (BoxRegularization, DenseRegularization, ...): each has
        ``regularizer``, ``name`` (the logged prefix, the statistics file's suffix), ``ROWS`` (what a
        row is: "rois", "pixels") and ``check_initialised(resumed_from=None)``;
    take_sampled_rows() -> {branch: (features, labels)}: the detached rows each branch regularized in
        the head's last training forward, then forgotten ({} when none ran since).

The prior hook, the statistics pass and the checks below find every such head of a model (PanopticFPN:
its ROI heads and its semantic-segmentation head, each branch with its own prior).
"""
from typing import Any

import torch

UNTAKEN = (
    "{head}: the rows regularized by the previous training forward were never taken, so the prior never adapts: "
    "register adarand.detection.AdaRandPriorHook in the trainer (it steps the prior after every optimizer step; "
    "AdaRandDetectionTrainer and tools/lazyconfig_train_net.py do), or step each regularizations() regularizer on "
    "take_sampled_rows() yourself"
)

# A regularized head is given its built regularization(s) (from_config) or the MODEL.ADARAND keys (a LazyConfig).
BUILT_OR_KEYS = "{head} takes {built} (built) or adarand (the MODEL.ADARAND keys), exactly one"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel / DataParallel (or the model itself)."""
    return getattr(model, "module", model)


def is_regularized_head(module: torch.nn.Module) -> bool:
    """Whether ``module`` follows the protocol above."""
    return callable(getattr(module, "regularizations", None)) and callable(getattr(module, "take_sampled_rows", None))


def adarand_heads(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's regularized heads (inside DDP), in module order; [] when none."""
    return [m for m in unwrap(model).modules() if is_regularized_head(m)]


def regularizations(model: torch.nn.Module) -> list[Any]:
    """Every branch of every regularized head of the model (heads in module order, then each head's order)."""
    return [branch for head in adarand_heads(model) for branch in head.regularizations()]


def check_method_has_heads(method: str, model: torch.nn.Module) -> None:
    """A regularizer is configured (``method`` != none) but no head of the model applies it."""
    if method != "none" and not regularizations(model):
        model = unwrap(model)
        heads = {name: type(getattr(model, name)).__name__ for name in ("roi_heads", "sem_seg_head")
                 if hasattr(model, name)}
        raise ValueError(f"MODEL.ADARAND.METHOD is {method!r} but no head of the model ({heads}) applies a "
                         "regularizer: set MODEL.ROI_HEADS.NAME to AdaRandROIHeads or AdaRandCascadeROIHeads "
                         "(or a head built with adarand.detection.AdaRandHeadsMixin), or MODEL.SEM_SEG_HEAD.NAME to "
                         "AdaRandSemSegFPNHead, AdaRandDeepLabV3PlusHead or AdaRandDeepLabV3Head, or METHOD 'none'")


def check_initialised(model: torch.nn.Module, resumed_from: str | None = None) -> None:
    """Raise the error saying how to initialise, for the first uninitialised prior of the model
    (``resumed_from``: the checkpoint a ``--resume`` loaded, where statistics are not read)."""
    for branch in regularizations(model):
        branch.check_initialised(resumed_from)

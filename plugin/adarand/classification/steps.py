"""The pieces of a classification step and the evaluation loop, used by :class:`ClassificationTrainer`.

One step (Eq. 1): ``features, logits = model.forward_features(x)`` (inside ``baseline.watch(x)``
when a baseline is used); ``loss = CE(logits, y) + reg(features, y) + baseline(features, y)``; model
optimizer step; then ``reg.step(features, y)`` (running means + prior update, the prior-step hook).
Running sums (:func:`accumulate_step_`) and the divergence flags (:func:`new_guard`) stay on the
device; the trainer's hooks read them back every ``LOG_PERIOD`` steps and at the end of an epoch.
"""
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import nn
from tqdm import tqdm

from adarand.distributed import all_reduce_sum_, gather_cat
from adarand.finite_guard import FiniteGuard, check_finite_weights

from . import datasets

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class FeaturesAndLogits(nn.Module):
    """``forward`` = ``model.forward_features``, so DDP sees the call that builds the graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_features(images)


def autocast(cfg: CfgNode, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16/fp16 autocast on CUDA when AMP asks for it; a no-op context otherwise."""
    if device.type == "cuda" and cfg.AMP in AMP_DTYPES:
        return torch.autocast("cuda", dtype=AMP_DTYPES[cfg.AMP])
    return contextlib.nullcontext()


def to_device(cfg: CfgNode, images: torch.Tensor, labels: torch.Tensor,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(device, non_blocking=True)
    if device.type == "cuda" and cfg.CHANNELS_LAST:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


@torch.no_grad()
def accumulate_step_(sums: torch.Tensor, loss: torch.Tensor, ce: torch.Tensor, reg_loss: torch.Tensor,
                     base_loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """``sums += [loss n, ce n, reg n, baseline n, correct, n]`` for a batch of n, all on the device.

    ``n`` multiplies device tensors as a host scalar (a kernel argument): no tensor is built
    from host values and nothing is read back.
    """
    n = labels.shape[0]
    correct = (logits.argmax(1) == labels).sum().to(sums.dtype)
    sums += torch.stack([loss * n, ce * n, reg_loss * n, base_loss * n, correct, torch.ones_like(correct) * n])


def set_train_mode(cfg: CfgNode, net: nn.Module, baseline: nn.Module | None) -> None:
    """Training mode; BatchNorm kept in eval mode when MODEL.FREEZE_BN."""
    net.train()
    if cfg.MODEL.FREEZE_BN:
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    if baseline is not None:
        baseline.train()


LOSS_TERMS = ("loss", "ce", "regularizer", "baseline")
# the config keys that scale each term (the total "loss" is their sum: no advice of its own)
TERM_KEYS = {"ce": "SOLVER.BASE_LR", "regularizer": "MODEL.ADARAND.LAMBDA (its weight), SOLVER.BASE_LR",
             "baseline": "BASELINE.ALPHA / BASELINE.BETA / BASELINE.BSS_ETA (its weights), SOLVER.BASE_LR"}


def new_guard(device: torch.device) -> FiniteGuard:
    """Divergence flags of the loss terms of a step (:data:`LOSS_TERMS`)."""
    return FiniteGuard(LOSS_TERMS, device, scaled_by=TERM_KEYS)


def check_diverged(guard: FiniteGuard, where: str, *modules: nn.Module) -> None:
    """``FloatingPointError`` when a loss term or a weight/buffer of ``modules`` went non-finite."""
    guard.check(where)
    for module in modules:
        check_finite_weights(module, where, guard.last_step_advice)


@dataclass
class Evaluation:
    top1: float
    mean_class_acc: float
    features: torch.Tensor = None  # N x D on the CPU, every rank's samples (when kept)
    logits: torch.Tensor = None
    labels: torch.Tensor = None


@torch.no_grad()
def evaluate(cfg: CfgNode, model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
             device: torch.device, class_indices: Sequence[int] | None = None, keep_features: bool = False,
             progress: bool = True) -> Evaluation:
    """Top-1 and mean per-class accuracy (counts summed over ranks). ``class_indices`` keeps
    only those logits (ImageNet-R/-A: 200 of the 1000 ImageNet classes)."""
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.float64, device=device)
    total = torch.zeros(num_classes, dtype=torch.float64, device=device)
    kept: dict[str, list[torch.Tensor]] = {"features": [], "logits": [], "labels": []}
    for images, labels in tqdm(loader, desc="eval", disable=not progress, leave=False):
        images, labels = to_device(cfg, images, labels, device)
        with autocast(cfg, device):
            features, logits = model.forward_features(images)
        features, logits = features.float(), logits.float()
        if class_indices is not None:
            logits = datasets.restrict_logits(logits, class_indices)
        hit = (logits.argmax(1) == labels).to(correct.dtype)
        correct.index_add_(0, labels, hit)
        total.index_add_(0, labels, torch.ones_like(hit))
        if keep_features:
            kept["features"].append(features.cpu())
            kept["logits"].append(logits.cpu())
            kept["labels"].append(labels.cpu())
    all_reduce_sum_(correct, total)
    seen = total > 0
    top1 = (correct.sum() / total.sum().clamp(min=1)).item()
    mean_class = (correct[seen] / total[seen]).mean().item() if seen.any() else 0.0
    result = Evaluation(top1, mean_class)
    if keep_features:
        for key, parts in kept.items():
            setattr(result, key, gather_cat(torch.cat(parts)))
    return result

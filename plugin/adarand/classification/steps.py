"""The pieces of a classification step, used by :class:`ClassificationTrainer` (the evaluation loop:
:mod:`adarand.classification.evaluation`).

One step (Eq. 1): ``features, logits = model.forward_features(x)`` (inside ``baseline.watch(x)``
when a baseline is used); ``loss = CE(logits, y) + reg(features, y) + baseline(features, y)``; model
optimizer step; then ``reg.step(features, y)`` (running means + prior update: the trainer's ``prior_step``).
Running sums (:func:`accumulate_step_`) and the divergence flags (:func:`new_guard`) stay on the
device; the trainer's hooks read them back every ``LOG_PERIOD`` steps and at the end of an epoch.
"""
import contextlib
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import nn

from adarand.runs.finite_guard import FiniteGuard, check_finite_weights

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

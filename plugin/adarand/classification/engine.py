"""Training and evaluation loops of the classification trainer.

One step (Eq. 1): ``features, logits = model.forward_features(x)`` (inside ``baseline.watch(x)``
when a baseline is used); ``loss = CE(logits, y) + reg(features, y) + baseline(features, y)``; model
optimizer step; then
``reg.step(features, y)`` (running means + prior update). ``reg.on_epoch_end()`` closes
each epoch. Running sums and the divergence flags (:class:`adarand.finite_guard.FiniteGuard`)
stay on the device; values are read back only every ``LOG_PERIOD`` steps (progress bar,
divergence check) and once at the end of the epoch. With ``DIAGNOSTICS``, the paper's
per-batch diagnostics of the training features are averaged over the epoch
(``adarand.TrainingDiagnostics``) and returned as ``train_<name>``.
"""
import contextlib
import math
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import adarand
from adarand.finite_guard import FiniteGuard, check_finite_weights

from . import datasets

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class FeaturesAndLogits(nn.Module):
    """``forward`` = ``model.forward_features``, so DDP sees the call that builds the graph."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.forward_features(images)


def world() -> tuple:
    """(rank, world size), (0, 1) without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_(tensor):
    if world()[1] > 1:
        dist.all_reduce(tensor)
    return tensor


def autocast(cfg, device):
    """bf16/fp16 autocast on CUDA when AMP asks for it; a no-op context otherwise."""
    if device.type == "cuda" and cfg.AMP in AMP_DTYPES:
        return torch.autocast("cuda", dtype=AMP_DTYPES[cfg.AMP])
    return contextlib.nullcontext()


def to_device(cfg, images, labels, device):
    images = images.to(device, non_blocking=True)
    if device.type == "cuda" and cfg.CHANNELS_LAST:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def train_step(cfg, net, model, reg, baseline, images, labels, optimizer, scaler):
    """One optimisation step (Eq. 1, then the prior update); returns detached
    (loss, ce, reg_loss, baseline_loss, logits, features)."""
    watch = baseline.watch(images) if baseline is not None else contextlib.nullcontext()
    with watch, autocast(cfg, images.device):
        features, logits = net(images)
    features, logits = features.float(), logits.float()
    ce = F.cross_entropy(logits, labels)
    reg_loss = reg(features, labels, logits=logits, classifier_weight=model.head.weight)
    base_loss = baseline(features, labels, logits=logits, classifier_weight=model.head.weight) \
        if baseline is not None else torch.zeros((), device=images.device)
    loss = ce + reg_loss + base_loss
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    reg.step(features.detach(), labels)
    return loss.detach(), ce.detach(), reg_loss.detach(), base_loss.detach(), logits.detach(), features.detach()


@torch.no_grad()
def accumulate_step_(sums, loss, ce, reg_loss, base_loss, logits, labels):
    """``sums += [loss n, ce n, reg n, baseline n, correct, n]`` for a batch of n, all on the device.

    ``n`` multiplies device tensors as a host scalar (a kernel argument): no tensor is built
    from host values and nothing is read back.
    """
    n = labels.shape[0]
    correct = (logits.argmax(1) == labels).sum().to(sums.dtype)
    sums += torch.stack([loss * n, ce * n, reg_loss * n, base_loss * n, correct, torch.ones_like(correct) * n])


def set_train_mode(cfg, net, baseline):
    """Training mode; BatchNorm kept in eval mode when MODEL.FREEZE_BN."""
    net.train()
    if cfg.MODEL.FREEZE_BN:
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    if baseline is not None:
        baseline.train()


LOSS_TERMS = ("loss", "ce", "regularizer", "baseline")


def new_guard(device):
    """Divergence flags of the loss terms of :func:`train_step`."""
    return FiniteGuard(LOSS_TERMS, device)


def check_diverged(guard, where, *modules):
    """``FloatingPointError`` when a loss term or a weight/buffer of ``modules`` went non-finite."""
    guard.check(where)
    for module in modules:
        check_finite_weights(module, where)


def train_one_epoch(cfg, net, model, reg, baseline, loader, optimizer, scaler, device, epoch, progress=True,
                    guard=None, iteration_scheduler=None):
    """One pass over ``loader``; returns the epoch means over all ranks and the train time.

    ``guard`` (:func:`new_guard`) records non-finite loss terms; it is checked every
    ``LOG_PERIOD`` steps and at the end of the epoch (``FloatingPointError``).
    ``iteration_scheduler`` (when given) is stepped after every optimizer step.
    """
    guard = guard if guard is not None else new_guard(device)
    where = f"epoch {epoch + 1}"
    set_train_mode(cfg, net, baseline)
    diagnostics = adarand.TrainingDiagnostics(device) if cfg.DIAGNOSTICS else None
    sums = torch.zeros(6, dtype=torch.float64, device=device)  # loss, ce, reg, baseline, correct, count
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.SOLVER.EPOCHS}", disable=not progress, leave=False)
    start = time.perf_counter()
    for step, (images, labels) in enumerate(bar):
        images, labels = to_device(cfg, images, labels, device)
        try:
            loss, ce, reg_loss, base_loss, logits, features = train_step(cfg, net, model, reg, baseline, images,
                                                                         labels, optimizer, scaler)
        except ValueError:  # e.g. the regularizer's NaN-feature check: name the divergence that caused it
            check_diverged(guard, where, model, reg)
            raise
        if iteration_scheduler is not None:
            iteration_scheduler.step()
        if diagnostics is not None:
            diagnostics.update(features, logits, labels)
        guard.update(epoch * len(loader) + step, loss, ce, reg_loss, base_loss)
        accumulate_step_(sums, loss, ce, reg_loss, base_loss, logits, labels)
        if step % cfg.LOG_PERIOD == 0:
            guard.check(where)
            reg.check_device_errors()  # raises on labels the kernels had to mask (value checks off)
            if progress:
                s = sums.tolist()
                bar.set_postfix(loss=f"{s[0] / s[5]:.3f}", acc=f"{s[4] / s[5]:.3f}", reg=f"{s[2] / s[5]:.4f}")
    check_diverged(guard, where, model, reg)
    reg.on_epoch_end()
    counters = reg.check_device_errors()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    s = all_reduce_(sums).tolist()
    if not all(math.isfinite(v) for v in s[:4]):  # another process diverged (its own check names the term)
        raise FloatingPointError(f"training diverged ({where}): non-finite epoch loss sums {s[:4]} over all processes")
    count = max(s[5], 1.0)
    record = {"train_loss": s[0] / count, "train_ce": s[1] / count, "train_reg": s[2] / count,
              "train_baseline": s[3] / count, "train_top1": s[4] / count,
              "epoch_time_s": seconds, "step_time_s": seconds / max(len(loader), 1),
              **{f"reg_{name}": value for name, value in counters.items() if name != "bad_labels"}}
    if diagnostics is not None:
        record.update({f"train_{name}": value for name, value in diagnostics.means().items()})
    return record


@dataclass
class Evaluation:
    top1: float
    mean_class_acc: float
    features: torch.Tensor = None  # N x D on the CPU, every rank's samples (when kept)
    logits: torch.Tensor = None
    labels: torch.Tensor = None


def _gather_cpu(tensor):
    """Concatenate a CPU tensor over ranks (rank order)."""
    if world()[1] == 1:
        return tensor
    parts = [None] * world()[1]
    dist.all_gather_object(parts, tensor)
    return torch.cat(parts)


@torch.no_grad()
def evaluate(cfg, model, loader, num_classes, device, class_indices=None, keep_features=False, progress=True):
    """Top-1 and mean per-class accuracy (counts summed over ranks). ``class_indices`` keeps
    only those logits (ImageNet-R/-A: 200 of the 1000 ImageNet classes)."""
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.float64, device=device)
    total = torch.zeros(num_classes, dtype=torch.float64, device=device)
    kept = {"features": [], "logits": [], "labels": []}
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
    all_reduce_(correct)
    all_reduce_(total)
    seen = total > 0
    top1 = (correct.sum() / total.sum().clamp(min=1)).item()
    mean_class = (correct[seen] / total[seen]).mean().item() if seen.any() else 0.0
    result = Evaluation(top1, mean_class)
    if keep_features:
        for key, parts in kept.items():
            setattr(result, key, _gather_cpu(torch.cat(parts)))
    return result

"""The evaluation loop of the classification trainer: top-1 and mean per-class accuracy of a model on a
loader (counts summed over ranks), and optionally its features, logits and labels (:class:`Evaluation`)."""
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from fvcore.common.config import CfgNode
from torch import nn
from tqdm import tqdm

from adarand.distributed import all_reduce_sum_, gather_cat

from . import datasets
from .steps import autocast, to_device


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

"""``AdaRandPriorHook``: step each regularizer (box and dense branches) after the optimizer step; log the scale."""
from collections.abc import Mapping
from typing import Any

import torch
from detectron2.engine import HookBase

from adarand.ops import active_rows, safe_labels

from .regularized import adarand_heads, check_initialised

# Device-side sums kept per branch between two log periods ("rois": its rows, ROIs or pixels).
_SUMS = ("rois", "feature_norm", "prior_norm", "prior_loss", "iters", "steps")


def aligned_period(log_period: int, prior_period: int) -> int:
    """``log_period`` rounded up to a multiple of ``prior_period`` (0 stays 0 = off)."""
    if log_period <= 0 or prior_period <= 0:
        return max(log_period, 0)
    return -(-log_period // prior_period) * prior_period


def loss_ratio(latest: Mapping[str, Any]) -> float | None:
    """``sum of loss_adarand*`` / ``sum of the other loss_*`` from EventStorage.latest() (None if absent)."""
    ours = [v for k, (v, _) in latest.items() if k.startswith("loss_adarand")]
    others = sum(v for k, (v, _) in latest.items() if k.startswith("loss_") and not k.startswith("loss_adarand"))
    return sum(ours) / others if ours and others else None


@torch.no_grad()
def scale_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int, mu: torch.Tensor,
               prior_loss: torch.Tensor | None) -> torch.Tensor:
    """One step's row of :data:`_SUMS` on the device: active rows, sums of ||f_i|| and ||mu_{y_i}||, prior loss."""
    active = active_rows(labels, num_classes)
    zero = torch.zeros((), dtype=torch.float64, device=features.device)
    feature_norms = torch.where(active, features.norm(dim=1), torch.zeros_like(features[:, 0]))
    prior_norms = zero if mu is None else torch.where(
        active, mu.detach().norm(dim=1)[safe_labels(labels, active)], torch.zeros_like(feature_norms)).sum()
    stepped = prior_loss is not None
    return torch.stack([active.sum().double(), feature_norms.sum().double(), torch.as_tensor(prior_norms).double(),
                        prior_loss.detach().double() if prior_loss is not None else zero, zero + 1,
                        zero + float(stepped)])


class AdaRandPriorHook(HookBase):
    """After every ``period``-th step, ``reg.step(features, labels)`` on the rows each branch regularized.

    ``before_train`` finds the model's regularized heads (:mod:`adarand.detection.regularized`: ROI heads,
    semantic-segmentation heads; PanopticFPN has both) and their branches once; after each step the hook
    takes every head's record of that step's forward (``take_sampled_rows()``: ``{branch: (features,
    labels)}``, the detached features of every sampled ROI or drawn pixel, IGNORE_INDEX where not
    regularized).

    ``period`` = 0 never steps. ``epoch_iters`` > 0 calls ``reg.on_epoch_end()`` every that
    many iterations (PtR's switch-on check; detection trains by iterations). The prior
    syncs itself across ranks (the core library all-reduces its class sums).

    Logging reads nothing back on ordinary steps: per branch (prefix ``adarand/<name>/``; the
    single box branch's is ``adarand/``), the regularized rows' count (``num_rois``, ``num_pixels``), their mean feature norm ``adarand/feature_norm``, the mean norm of their prior
    means ``adarand/prior_norm`` (mean_i ||mu_{y_i}||) and the prior loss are summed on the
    device and written as means over the last ``log_period`` iterations (rounded up to a
    multiple of ``period``, and at the last iteration), with ``adarand/loss_ratio`` =
    loss_adarand / (sum of Detectron2's other losses) from the values the trainer wrote.
    Then the regularizers' device counters are read too: masked out-of-range labels raise
    ``ValueError``, AdaRand's skipped non-finite batches are logged (``adarand/skipped_batches``).
    """

    def __init__(self, period: int = 1, epoch_iters: int = 0, log_period: int = 20):
        self._period, self._epoch_iters = period, epoch_iters
        self._log_period = aligned_period(log_period, period)
        self._sums: dict[str, torch.Tensor] = {}
        self._heads: list[torch.nn.Module] = []
        self._branches: list[Any] = []

    def before_train(self) -> None:
        check_initialised(self.trainer.model)  # fail before the first step, saying how to initialise
        self._heads = adarand_heads(self.trainer.model)
        self._branches = [branch for head in self._heads for branch in head.regularizations()]

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        step = self._period > 0 and next_iter % self._period == 0
        rows = {}
        for head in self._heads:
            rows.update(head.take_sampled_rows())
        for branch in self._branches:
            kept, reg = rows.get(branch), branch.regularizer
            prior_loss = reg.step(*kept) if kept is not None and step else None
            if self._epoch_iters > 0 and next_iter % self._epoch_iters == 0:
                reg.on_epoch_end()
            if kept is not None and self._log_period > 0:
                prior = getattr(reg, "prior", None)
                mu = prior.mu if prior is not None and prior.initialized else None
                row = scale_sums(*kept, reg.num_classes, mu, prior_loss)
                self._sums[branch] = row if branch not in self._sums else self._sums[branch] + row
        if self._log_period > 0 and (next_iter % self._log_period == 0 or next_iter == self.trainer.max_iter):
            self._flush()

    def _flush(self):
        storage = self.trainer.storage
        for branch, row in self._sums.items():
            sums = dict(zip(_SUMS, row.tolist()))  # the one read-back, on the log period
            prefix = "adarand/" + (branch.name + "/" if branch.name else "")
            for name, value in branch.regularizer.check_device_errors().items():  # raises on masked bad labels
                if name != "bad_labels":
                    storage.put_scalar(prefix + name, value, smoothing_hint=False)
            storage.put_scalar(prefix + "num_" + branch.ROWS, sums["rois"] / sums["iters"])
            if sums["rois"]:
                storage.put_scalar(prefix + "feature_norm", sums["feature_norm"] / sums["rois"])
                if sums["prior_norm"]:
                    storage.put_scalar(prefix + "prior_norm", sums["prior_norm"] / sums["rois"])
            if sums["steps"]:
                storage.put_scalar(prefix + "prior_loss", sums["prior_loss"] / sums["steps"])
        self._sums = {}
        ratio = loss_ratio(storage.latest())
        if ratio is not None:
            storage.put_scalar("adarand/loss_ratio", ratio)

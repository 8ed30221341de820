"""``AdaRandPriorHook``: step each box regularizer after the optimizer step; log the scale."""
import torch
from detectron2.engine import HookBase

from .box_branch import IGNORE_INDEX, box_regularizations, check_initialised


def aligned_period(log_period, prior_period):
    """``log_period`` rounded up to a multiple of ``prior_period`` (0 stays 0 = off)."""
    if log_period <= 0 or prior_period <= 0:
        return max(log_period, 0)
    return -(-log_period // prior_period) * prior_period


@torch.no_grad()
def masked_mean(values, labels):
    """Mean of ``values`` (B,) over the rows whose label is not IGNORE_INDEX (0 when none), on device."""
    kept = (labels != IGNORE_INDEX).to(values.dtype)
    return (values * kept).sum() / kept.sum().clamp(min=1)


@torch.no_grad()
def prior_mean_norms(mu, labels):
    """``||mu_{y_i}||`` per row (ignored rows read class 0; mask them out with :func:`masked_mean`)."""
    safe = torch.where(labels == IGNORE_INDEX, torch.zeros_like(labels), labels)
    return mu.detach().norm(dim=1)[safe]


def loss_ratio(latest):
    """``sum of loss_adarand*`` / ``sum of the other loss_*`` from EventStorage.latest() (None if absent)."""
    ours = sum(v for k, (v, _) in latest.items() if k.startswith("loss_adarand"))
    others = sum(v for k, (v, _) in latest.items() if k.startswith("loss_") and not k.startswith("loss_adarand"))
    if not any(k.startswith("loss_adarand") for k in latest) or others == 0:
        return None
    return ours / others


class AdaRandPriorHook(HookBase):
    """After every ``period``-th step, ``reg.step(features, labels)`` on the ROIs each box branch kept.

    ``period`` = 0 never steps. ``epoch_iters`` > 0 calls ``reg.on_epoch_end()`` every that
    many iterations (PtR's switch-on check; detection trains by iterations). Every
    ``log_period`` iterations (made a multiple of ``period``) it logs, per regularized box
    branch: ``adarand/prior_loss``, ``adarand/num_rois``, ``adarand/feature_norm`` (mean norm of
    the regularized features) and ``adarand/prior_norm`` (mean norm of their prior means
    mu_y), and ``adarand/loss_ratio`` (loss_adarand / the sum of Detectron2's other losses,
    from the values the trainer already wrote). Those are the hook's only host reads. The
    prior syncs itself across ranks (the core library all-reduces its class sums).
    """

    def __init__(self, period=1, epoch_iters=0, log_period=20):
        self._period, self._epoch_iters = period, epoch_iters
        self._log_period = aligned_period(log_period, period)

    def before_train(self):
        check_initialised(self.trainer.model)  # fail before the first step, saying how to initialise

    def after_step(self):
        next_iter = self.trainer.iter + 1
        step = self._period > 0 and next_iter % self._period == 0
        log = self._log_period > 0 and next_iter % self._log_period == 0
        storage = self.trainer.storage
        for reg in box_regularizations(self.trainer.model):
            kept = reg.pop_regularized()
            prior_loss = reg.regularizer.step(*kept) if kept is not None and step else None
            if self._epoch_iters > 0 and next_iter % self._epoch_iters == 0:
                reg.regularizer.on_epoch_end()
            if log and kept is not None:
                self._log(storage, reg, kept, prior_loss)
        if log:
            ratio = loss_ratio(storage.latest())
            if ratio is not None:
                storage.put_scalar("adarand/loss_ratio", ratio)

    @staticmethod
    def _log(storage, reg, kept, prior_loss):
        prefix = "adarand/" + (reg.name + "/" if reg.name else "")
        features, labels = kept
        storage.put_scalar(prefix + "num_rois", int((labels != IGNORE_INDEX).sum()))
        storage.put_scalar(prefix + "feature_norm", float(masked_mean(features.norm(dim=1), labels)))
        prior = getattr(reg.regularizer, "prior", None)
        if prior is not None and prior.initialized:
            storage.put_scalar(prefix + "prior_norm", float(masked_mean(prior_mean_norms(prior.mu, labels), labels)))
        if prior_loss is not None:
            storage.put_scalar(prefix + "prior_loss", float(prior_loss))

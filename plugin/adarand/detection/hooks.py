"""``AdaRandPriorHook``: step the regularizer after each optimizer step (PreciseBN-style hook)."""
import torch
from detectron2.engine import HookBase

from adarand.ops import active_rows


def unwrap(model):
    """The model inside DistributedDataParallel / DataParallel (or the model itself)."""
    return getattr(model, "module", model)


def adarand_roi_heads(model):
    """The model's ``AdaRandROIHeads`` (None when the model has another ROI head)."""
    heads = getattr(unwrap(model), "roi_heads", None)
    return heads if hasattr(heads, "regularizer") else None


class AdaRandPriorHook(HookBase):
    """After every ``period``-th step, ``reg.step(features, labels)`` on the ROIs the head kept.

    ``period`` = 0 never steps. ``epoch_iters`` > 0 calls ``reg.on_epoch_end()`` every that
    many iterations (PtR's switch-on check; detection trains by iterations). The prior
    syncs itself across ranks (the core library all-reduces its class sums).

    Logging reads nothing back on ordinary steps: the number of regularized ROIs, their mean
    feature norm and the prior loss are summed on the device and put into the event storage
    as means over the last ``log_period`` iterations (Detectron2's writers run every 20).
    Then the regularizer's device counters are read too: masked out-of-range labels raise
    ``ValueError``, AdaRand's skipped non-finite batches are logged (``adarand/skipped_batches``).
    """

    def __init__(self, period=1, epoch_iters=0, log_period=20):
        self._period, self._epoch_iters, self._log_period = period, epoch_iters, log_period
        self._sums = None  # rois, feature-norm sum, prior-loss sum, iterations, prior steps

    def _accumulate(self, features, labels, num_classes, prior_loss):
        active = active_rows(labels, num_classes)
        norms = torch.where(active, features.norm(dim=1), torch.zeros((), device=features.device))
        stepped = prior_loss is not None
        prior_loss = prior_loss.double() if stepped else torch.zeros((), dtype=torch.float64, device=features.device)
        row = torch.stack([active.sum().double(), norms.sum().double(), prior_loss,
                           torch.ones_like(prior_loss), torch.full_like(prior_loss, float(stepped))])
        self._sums = row if self._sums is None else self._sums + row

    def _flush(self, regularizer):
        rois, norm_sum, loss_sum, iters, steps = self._sums.tolist()  # the one read-back, on the log period
        self._sums = None
        storage = self.trainer.storage
        for name, value in regularizer.check_device_errors().items():  # raises on masked bad labels
            if name != "bad_labels":
                storage.put_scalar(f"adarand/{name}", value, smoothing_hint=False)
        storage.put_scalar("adarand/num_rois", rois / iters)
        if rois:
            storage.put_scalar("adarand/feature_norm", norm_sum / rois)
        if steps:
            storage.put_scalar("adarand/prior_loss", loss_sum / steps)

    def after_step(self):
        heads = adarand_roi_heads(self.trainer.model)
        if heads is None:
            return
        kept = heads.pop_regularized()
        next_iter = self.trainer.iter + 1
        prior_loss = None
        if kept is not None and self._period > 0 and next_iter % self._period == 0:
            prior_loss = heads.regularizer.step(*kept)
        if kept is not None:
            self._accumulate(*kept, heads.regularizer.num_classes, prior_loss)
        if self._epoch_iters > 0 and next_iter % self._epoch_iters == 0:
            heads.regularizer.on_epoch_end()
        if self._sums is not None and (next_iter % self._log_period == 0 or next_iter == self.trainer.max_iter):
            self._flush(heads.regularizer)

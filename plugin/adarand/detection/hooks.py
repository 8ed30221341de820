"""``AdaRandPriorHook``: step the regularizer after each optimizer step (PreciseBN-style hook)."""
from detectron2.engine import HookBase


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
    """

    def __init__(self, period=1, epoch_iters=0):
        self._period, self._epoch_iters = period, epoch_iters

    def after_step(self):
        heads = adarand_roi_heads(self.trainer.model)
        if heads is None:
            return
        kept = heads.pop_regularized()
        next_iter = self.trainer.iter + 1
        if kept is not None and self._period > 0 and next_iter % self._period == 0:
            prior_loss = heads.regularizer.step(*kept)
            if prior_loss is not None:
                self.trainer.storage.put_scalar("adarand/prior_loss", prior_loss)
        if self._epoch_iters > 0 and next_iter % self._epoch_iters == 0:
            heads.regularizer.on_epoch_end()

"""Hooks of :class:`~adarand.classification.trainer.ClassificationTrainer`, in Detectron2's shape.

A hook has Detectron2's ``before_train / after_train / before_step / after_step`` and, as
this trainer runs in epochs, ``before_epoch / after_epoch``; ``self.trainer`` is set by
``register_hooks``. Hooks share ``self.trainer.storage`` (:class:`~adarand.classification.storage.TrainingStorage`:
the step's outputs, the epoch's record, the selected epoch) and keep their own state otherwise; the
prior step is the trainer's (``ClassificationTrainer.prior_step``, in ``run_step``), not a hook's. The
default hooks, in the order they run: :class:`LRScheduler`, :class:`TrainingMetrics`,
:class:`Validation`, :class:`PeriodicCheckpointer`, :class:`MetricsWriter`.
"""
import logging
import math
import os
import time
from typing import Any

import torch
from tqdm import tqdm

import adarand
from adarand.distributed import all_reduce_sum_
from adarand.files import save_torch

from .steps import accumulate_step_
from .run_log import RunLog, epoch_line

logger = logging.getLogger(__name__)


class HookBase:
    """Does nothing at every event; subclasses override the ones they need."""

    trainer: Any = None  # the ClassificationTrainer, set by its register_hooks

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass


class LRScheduler(HookBase):
    """Steps the scheduler after every optimizer step (``per_iteration``) or once per epoch."""

    def __init__(self, per_iteration: bool):
        self.per_iteration = per_iteration

    def after_step(self) -> None:
        if self.per_iteration:
            self.trainer.scheduler.step()

    def after_epoch(self) -> None:
        if not self.per_iteration:
            self.trainer.scheduler.step()


class TrainingMetrics(HookBase):
    """Epoch means of the training loss terms and accuracy, kept on the device between reads.

    Every ``LOG_PERIOD`` steps (the only host reads): the divergence flags, the regularizer's
    device counters (masked bad labels raise ``ValueError``) and the progress bar's running means
    of the epoch (loss, ce, reg, accuracy). At the end of the epoch the sums are all-reduced and written
    to the epoch's record (``trainer.storage.record``) as ``train_*`` (the regularizer's term as ``adarand/loss``), with the
    regularizer's counters (``adarand/skipped_batches``), the times, and with ``DIAGNOSTICS`` the paper's
    per-batch diagnostics (Sec. 4.2, Fig. 2) of the training features averaged over the epoch.
    """

    def __init__(self, log_period: int, diagnostics: bool, progress: bool):
        self.log_period, self.diagnostics, self.progress = log_period, diagnostics, progress

    def before_epoch(self) -> None:
        t = self.trainer
        self.sums = torch.zeros(6, dtype=torch.float64, device=t.device)  # loss, ce, reg, baseline, correct, n
        self.features = adarand.TrainingDiagnostics(t.device) if self.diagnostics else None
        self.bar = tqdm(total=len(t.train_loader), desc=f"epoch {t.epoch + 1}/{t.cfg.SOLVER.EPOCHS}",
                        disable=not self.progress, leave=False)
        self.start = time.perf_counter()

    def after_step(self) -> None:
        t, out = self.trainer, self.trainer.storage.step
        if self.features is not None:
            self.features.update(out.features, out.logits, out.labels)
        accumulate_step_(self.sums, out.loss, out.ce, out.reg_loss, out.base_loss, out.logits, out.labels)
        self.bar.update(1)
        if t.inner_iter % self.log_period == 0:
            t.guard.check(t.where)
            t.regularizer.check_device_errors()  # raises on labels the kernels had to mask (value checks off)
            if self.progress:  # running means of the epoch so far
                s = self.sums.tolist()
                self.bar.set_postfix({"loss": f"{s[0] / s[5]:.3f}", "ce": f"{s[1] / s[5]:.3f}",
                                      "reg": f"{s[2] / s[5]:.4g}", "acc": f"{s[4] / s[5]:.3f}"})

    def after_epoch(self) -> None:
        t = self.trainer
        self.bar.close()
        counters = t.regularizer.check_device_errors()
        if t.device.type == "cuda":
            torch.cuda.synchronize(t.device)
        seconds = time.perf_counter() - self.start
        all_reduce_sum_(self.sums)
        s = self.sums.tolist()
        if not all(math.isfinite(v) for v in s[:4]):  # another process diverged (its own check names the term)
            raise FloatingPointError(f"training diverged ({t.where}): non-finite epoch loss sums {s[:4]} "
                                     "over all processes")
        count, steps = max(s[5], 1.0), max(len(t.train_loader), 1)
        t.storage.record.update({
            "train_loss": s[0] / count, "train_ce": s[1] / count, "adarand/loss": s[2] / count,
            "train_baseline": s[3] / count, "train_top1": s[4] / count,
            "epoch_time_s": seconds, "step_time_s": seconds / steps,
            **{f"adarand/{name}": value for name, value in counters.items() if name != "bad_labels"}})
        if self.features is not None:
            t.storage.record.update({f"train_{name}": value for name, value in self.features.means().items()})


class Validation(HookBase):
    """Validation accuracy (and our Gaussian diagnostics of the validation features) after each
    epoch; ``best.pth`` holds the best validation epoch. Without a validation split the last
    epoch is the selected model. The test split is never looked at here."""

    def __init__(self, diagnostics: bool):
        self.diagnostics = diagnostics

    def after_epoch(self) -> None:
        t, storage = self.trainer, self.trainer.storage
        if t.val_loader is None:
            if t.epoch + 1 == t.cfg.SOLVER.EPOCHS:
                storage.best_epoch = t.epoch + 1
                self._save_best(None)
            return
        ev = t.test(t.cfg, t.model, t.val_loader, t.data.num_classes, keep_features=self.diagnostics)
        storage.record.update({"val_top1": ev.top1, "val_mean_class_acc": ev.mean_class_acc})
        if self.diagnostics:
            weight = t.model.head.weight.detach().float().cpu()
            diag = adarand.feature_diagnostics(ev.features, ev.labels, t.data.num_classes,
                                               logits=ev.logits, classifier_weight=weight)
            storage.record.update({f"val_{k}": v for k, v in diag.items()})
        if ev.top1 > storage.best_top1:
            storage.best_top1, storage.best_epoch = ev.top1, t.epoch + 1
            self._save_best(ev.top1)

    def _save_best(self, top1):
        t = self.trainer
        if t.rank == 0:
            save_torch({"model": t.model.state_dict(), "epoch": t.epoch + 1, "top1": top1},
                       os.path.join(t.cfg.OUTPUT_DIR, "best.pth"))


class PeriodicCheckpointer(HookBase):
    """``last.pth`` after every epoch (atomic): everything :meth:`resume_or_load` needs to continue."""

    def after_epoch(self) -> None:
        t = self.trainer
        t.storage.history.append(t.storage.record)
        state = t.checkpoint_state()  # a collective (every rank's RNG state): all ranks take part
        if t.rank == 0:
            save_torch(state, os.path.join(t.cfg.OUTPUT_DIR, "last.pth"))


class MetricsWriter(HookBase):
    """The epoch record to ``metrics.jsonl`` and TensorBoard (:class:`RunLog`) and as one log line
    (:func:`epoch_line`), on rank 0."""

    def before_train(self) -> None:
        t = self.trainer
        self.log = RunLog(t.cfg.OUTPUT_DIR, t.storage.history, enabled=t.rank == 0)

    def after_epoch(self) -> None:
        t = self.trainer
        self.log.log(t.storage.record)
        if t.rank == 0:
            logger.info(epoch_line(t.storage.record, t.cfg.SOLVER.EPOCHS, baseline=t.baseline is not None))

    def after_train(self) -> None:
        self.log.close()

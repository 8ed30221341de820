"""AdaRand for the Hugging Face ``Trainer``: :class:`AdaRandMixin` composes with any ``Trainer`` subclass.

::

    class MyTrainer(AdaRandMixin, SFTTrainer):   # or any Trainer subclass of your own
        pass                                      # AdaRandTrainer is (AdaRandMixin, Trainer)

    trainer = MyTrainer(model=ViTForImageClassification.from_pretrained(...), args=args,
                        train_dataset=train, eval_dataset=val, head="classifier")
    trainer.train()

It overrides public methods only (``train``, ``compute_loss``, ``log``, ``save_model``), each calling
``super()``, and adds a ``TrainerCallback``. At ``on_train_begin`` the regularizer is attached to the head
(:func:`adarand.attach`, ``total_steps`` defaulting to the run's optimizer steps) and initialised from the
model's own features over the training dataloader (Eq. 9-10), or restored from ``adarand.pt`` when
``train(resume_from_checkpoint=...)`` resumes. ``compute_loss`` adds ``lambda * mean (f - r)^2`` to the
training loss only (``model.training`` and gradients on: ``evaluate``/``predict`` are untouched); after
each optimizer step (``on_optimizer_step``: once per ``gradient_accumulation_steps`` batches) the prior
steps on the features of all those batches. ``save_model`` (hence every checkpoint) writes the
regularizer's state to ``adarand.pt`` beside the weights. Each training log gains ``adarand/loss`` and
``adarand/prior_loss`` (means since the last log, gathered over processes as the Trainer gathers
``loss``) and ``adarand/skipped_batches``.
"""
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import get_last_checkpoint

from ..attach import attach, with_total_steps
from ..files import load_torch, save_torch

STATE_NAME = "adarand.pt"


class _PriorSteps(TrainerCallback):
    """Attach at train start, step the prior after each optimizer step, close epochs."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._attach_adarand(state.max_steps)

    def on_optimizer_step(self, args, state, control, **kwargs):
        prior_loss = self.trainer.adarand.step()
        if prior_loss is not None:
            self.trainer._adarand_logged["adarand/prior_loss"].append(prior_loss)

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer.adarand.on_epoch_end()


if TYPE_CHECKING:  # the mixin's methods call those of the Trainer it is mixed with
    from transformers import Trainer as _TrainerBase
else:
    _TrainerBase = object


class AdaRandMixin(_TrainerBase):
    """Mixed in before a ``transformers.Trainer`` class: its training loss carries the AdaRand term of the head.

    Args:
        *args: those of the ``Trainer`` class it is mixed with.
        **kwargs: those of the ``Trainer`` class it is mixed with.
        head: the classifier ``nn.Linear`` of the model, or its dotted name (``"classifier"`` for
            ``*ForImageClassification`` models).
        method: a regularizer name (:func:`adarand.available_regularizers`), default ``"adarand"``.
        adarand_options: the method's options (``lam``, ``alpha``, ``prior_lr``, ``total_steps``, ...).
        batch_fn: ``batch -> (inputs, labels)`` for the statistics pass; default: the batch dict without
            ``"labels"`` as keyword inputs, ``batch["labels"]`` as labels.

    Attributes:
        adarand: the :class:`adarand.attach.AttachedRegularizer`, from the start of ``train`` on.
    """

    def __init__(self, *args: Any, head: str | torch.nn.Module = "classifier", method: str = "adarand",
                 adarand_options: dict[str, Any] | None = None,
                 batch_fn: Callable[[Any], tuple[Any, torch.Tensor]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.adarand_head, self.adarand_method = head, method
        self.adarand_options = dict(adarand_options or {})
        self.adarand_batch_fn = batch_fn or _split_labels
        self.adarand: Any = None  # the AttachedRegularizer, from the start of train on
        self._adarand_resume: str | None = None
        # detached values since the last log
        self._adarand_logged: dict[str, list[torch.Tensor]] = {"adarand/loss": [], "adarand/prior_loss": []}
        self.add_callback(_PriorSteps(self))
    def _attach_adarand(self, max_steps):
        if self.adarand is None:
            options = with_total_steps(self.adarand_method, self.adarand_options, lambda: max_steps)
            self.adarand = attach(self.model, self.adarand_head, self.adarand_method, **options)
        state = path = None
        if self._adarand_resume is not None:
            path = os.path.join(self._adarand_resume, STATE_NAME)
            state = load_torch(path, what="AdaRand state of the checkpoint",
                               map_location=self.adarand.head.weight.device)
        self.adarand.restore_or_init(state, self.get_train_dataloader, self.adarand_batch_fn, source=path)
        self._adarand_resume = None

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """The parent's ``train``; resuming also restores the regularizer from the checkpoint's ``adarand.pt``.

        Args:
            resume_from_checkpoint: as in ``Trainer.train`` (a checkpoint folder, or True for the last one).
            *args: the other arguments of ``Trainer.train``.
            **kwargs: the other arguments of ``Trainer.train``.

        Returns:
            ``Trainer.train``'s ``TrainOutput``.

        Raises:
            ValueError: ``True`` and no checkpoint in ``args.output_dir`` (as ``Trainer.train``).
            FileNotFoundError: the checkpoint has no ``adarand.pt`` (it was not written by this trainer),
                before any training.
            adarand.prior.NonFinitePriorError: its ``adarand.pt`` holds a prior with NaN/Inf.
        """
        if resume_from_checkpoint is True:  # no checkpoint: True goes on, and Trainer.train raises
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir) or True
        if isinstance(resume_from_checkpoint, (str, os.PathLike)):
            self._adarand_resume = os.fspath(resume_from_checkpoint)
            _check_has_state(self._adarand_resume)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """The parent's ``compute_loss`` plus, in training, the regularizer on the head's input.

        The term is a mean over this batch; when the Trainer takes the task loss as already normalised
        over the accumulated batch (``num_items_in_batch``), the term is divided by the number of
        accumulated batches, as the Trainer divides a per-batch loss otherwise.

        Args:
            model, inputs, return_outputs, num_items_in_batch: as in ``Trainer.compute_loss``;
                ``inputs["labels"]`` holds the class labels.

        Returns:
            the loss (and the outputs when ``return_outputs``).
        """
        labels = inputs.get("labels")
        training = model.training and torch.is_grad_enabled()
        if labels is None and training:
            raise ValueError(f"{type(self).__name__}: the training batch has no 'labels'; the class-conditional prior "
                             "needs the class label of every image")
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        loss = result[0] if return_outputs else result
        if self.adarand is not None and training:
            term = self.adarand.loss(labels)
            self._adarand_logged["adarand/loss"].append(term.detach())
            if self._loss_scaled_for_accumulation(num_items_in_batch):
                term = term / self.current_gradient_accumulation_steps
            loss = loss + term
        return (loss, *result[1:]) if return_outputs else loss

    def _loss_scaled_for_accumulation(self, num_items_in_batch):
        """Trainer.training_step's own decision whether to divide the loss by the accumulation steps."""
        if self.loss_is_scaled_for_ga is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> Any:
        """The parent's ``log``; a training log (one with ``loss``) gains the ``adarand/*`` values.

        ``adarand/loss`` and ``adarand/prior_loss`` are means since the last training log, gathered over
        processes and averaged as the Trainer does ``loss``; ``adarand/skipped_batches`` counts the prior's
        skipped non-finite batches. Every process logs at the same steps, as the Trainer's own gather needs.

        Args:
            logs: the dict to log.
            *args: as in ``Trainer.log``.
            **kwargs: as in ``Trainer.log``.

        Raises:
            ValueError: labels outside [0, C) were masked by the regularizer (on any process).
        """
        if "loss" in logs and self.adarand is not None:
            logs = dict(logs)
            for name, values in self._adarand_logged.items():
                if values:
                    mean = torch.stack(values).float().mean()
                    logs[name] = nested_gather(mean, self.args.parallel_mode).mean().item()
                    values.clear()
            counters = self.adarand.regularizer.check_device_errors()  # a collective: every process logs here
            if "skipped_batches" in counters:
                logs["adarand/skipped_batches"] = counters["skipped_batches"]
        return super().log(logs, *args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The parent's ``save_model``, plus the regularizer's state (prior, its optimizer) as ``adarand.pt``.

        Args:
            output_dir: as in ``Trainer.save_model`` (default ``args.output_dir``). _internal_call: Trainer's.
        """
        super().save_model(output_dir, _internal_call)
        if self.adarand is not None and self.args.should_save:
            save_torch(self.adarand.state_dict(), os.path.join(output_dir or self.args.output_dir, STATE_NAME))


class AdaRandTrainer(AdaRandMixin, Trainer):
    """``transformers.Trainer`` with AdaRand: :class:`AdaRandMixin` mixed with ``Trainer`` (see there)."""


def _check_has_state(checkpoint):
    """A checkpoint folder without ``adarand.pt`` (one of a plain ``Trainer``) cannot resume AdaRand: say what can."""
    path = os.path.join(checkpoint, STATE_NAME)
    if os.path.isdir(checkpoint) and not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: {checkpoint} was not written by AdaRandTrainer or AdaRandMixin (a plain Trainer "
            "checkpoint has no regularizer state), so it cannot resume an AdaRand run. Resume from a checkpoint "
            "written with AdaRand, or "
            f"start AdaRand from its weights: load the model from {checkpoint} (from_pretrained) and call train() "
            "without resume_from_checkpoint (the prior is then initialised from the data)")


def _split_labels(batch):
    """A Trainer batch dict -> (the model's keyword inputs, labels)."""
    return {key: value for key, value in batch.items() if key != "labels"}, batch["labels"]

"""AdaRand for the Hugging Face ``Trainer``: ``AdaRandTrainer`` overrides ``compute_loss`` only.

::

    trainer = AdaRandTrainer(model=ViTForImageClassification.from_pretrained(...), args=args,
                             train_dataset=train, eval_dataset=val, head="classifier")
    trainer.train()

At ``on_train_begin`` the regularizer is attached to the head (:func:`adarand.attach`,
``total_steps`` defaulting to the run's optimizer steps) and initialised from the model's own
features over the training dataloader (Eq. 9-10), or restored from ``adarand.pt`` when
``train(resume_from_checkpoint=...)`` resumes. ``compute_loss`` adds ``lambda * mean (f - r)^2``
to the training loss only (``model.training`` and gradients on: ``evaluate``/``predict`` are
untouched); after each optimizer step (so once per ``gradient_accumulation_steps`` batches) the
prior steps on the features of all those batches. ``save_model`` (hence every checkpoint) writes
the regularizer's state to ``adarand.pt`` beside the weights; ``adarand_loss`` joins the logs.
"""
import os

import torch
from transformers import Trainer, TrainerCallback
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
        self.trainer.adarand.step()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer.adarand.on_epoch_end()


class AdaRandTrainer(Trainer):
    """A ``transformers.Trainer`` whose training loss carries the AdaRand term of the model's head.

    Args:
        *args: those of ``transformers.Trainer``.
        **kwargs: those of ``transformers.Trainer``.
        head: the classifier ``nn.Linear`` of the model, or its dotted name (``"classifier"`` for
            ``*ForImageClassification`` models).
        method: a regularizer name (:func:`adarand.available_regularizers`), default ``"adarand"``.
        adarand_options: the method's options (``lam``, ``alpha``, ``prior_lr``, ``total_steps``, ...).
        batch_fn: ``batch -> (inputs, labels)`` for the statistics pass; default: the batch dict without
            ``"labels"`` as keyword inputs, ``batch["labels"]`` as labels.

    Attributes:
        adarand: the :class:`adarand.attach.AttachedRegularizer`, from the start of ``train`` on.
    """

    def __init__(self, *args, head="classifier", method="adarand", adarand_options=None, batch_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.adarand_head, self.adarand_method = head, method
        self.adarand_options = dict(adarand_options or {})
        self.adarand_batch_fn = batch_fn or _split_labels
        self.adarand = None
        self._adarand_resume = None
        self._adarand_terms = []
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

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """``Trainer.train``; resuming also restores the regularizer from the checkpoint's ``adarand.pt``.

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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """``Trainer.compute_loss`` plus, in training, the regularizer on the head's input.

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
            raise ValueError("AdaRandTrainer: the training batch has no 'labels'; the class-conditional prior needs "
                             "the class label of every image")
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if self.adarand is not None and training:
            term = self.adarand.loss(labels)
            self._adarand_terms.append(term.detach())
            if self._loss_scaled_for_accumulation(num_items_in_batch):
                term = term / self.current_gradient_accumulation_steps
            loss = loss + term
        return (loss, outputs) if return_outputs else loss

    def _loss_scaled_for_accumulation(self, num_items_in_batch):
        """Trainer.training_step's own decision whether to divide the loss by the accumulation steps."""
        if self.loss_is_scaled_for_ga is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def log(self, logs, *args, **kwargs):
        """``Trainer.log``, with the mean AdaRand term since the last training log as ``adarand_loss``.

        Args:
            logs: the dict to log.
            *args: as in ``Trainer.log``.
            **kwargs: as in ``Trainer.log``.
        """
        if "loss" in logs and self._adarand_terms:
            logs = {**logs, "adarand_loss": torch.stack(self._adarand_terms).mean().item()}
            self._adarand_terms = []
        return super().log(logs, *args, **kwargs)

    def save_model(self, output_dir=None, _internal_call=False):
        """``Trainer.save_model``, plus the regularizer's state (prior, its optimizer) as ``adarand.pt``.

        Args:
            output_dir: as in ``Trainer.save_model`` (default ``args.output_dir``). _internal_call: Trainer's.
        """
        super().save_model(output_dir, _internal_call)
        if self.adarand is not None and self.args.should_save:
            save_torch(self.adarand.state_dict(), os.path.join(output_dir or self.args.output_dir, STATE_NAME))


def _check_has_state(checkpoint):
    """A checkpoint folder without ``adarand.pt`` (one of a plain ``Trainer``) cannot resume AdaRand: say what can."""
    path = os.path.join(checkpoint, STATE_NAME)
    if os.path.isdir(checkpoint) and not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: {checkpoint} was not written by AdaRandTrainer (a plain Trainer checkpoint has no "
            "regularizer state), so it cannot resume an AdaRand run. Resume from a checkpoint of AdaRandTrainer, or "
            f"start AdaRand from its weights: load the model from {checkpoint} (from_pretrained) and call train() "
            "without resume_from_checkpoint (the prior is then initialised from the data)")


def _split_labels(batch):
    """A Trainer batch dict -> (the model's keyword inputs, labels)."""
    return {key: value for key, value in batch.items() if key != "labels"}, batch["labels"]

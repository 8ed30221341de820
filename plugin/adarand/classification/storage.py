"""What :class:`~adarand.classification.trainer.ClassificationTrainer` and its hooks share while training,
in the place of Detectron2's ``EventStorage`` (made small): the trainer writes each step's outputs and
opens each epoch's record; the hooks add to the record, keep the selected epoch and read the rest.
Whatever else a hook needs it keeps itself, so the trainer's own fields are written by the trainer only.
"""
from collections import namedtuple
from dataclasses import dataclass, field
from typing import Any

import torch

# What one step leaves for the hooks, all detached: the loss terms, the logits, the features, the labels.
StepOutputs = namedtuple("StepOutputs", "loss ce reg_loss base_loss logits features labels")


@dataclass
class TrainingStorage:
    """The step's outputs, the epoch's record, the records of the epochs done and the selected model."""

    step: StepOutputs | None = None  # the last step's, written by ClassificationTrainer.run_step
    record: dict[str, Any] = field(default_factory=dict)  # this epoch's: {"epoch", "lr", ...} plus the hooks' values
    history: list[dict[str, Any]] = field(default_factory=list)  # the records of the epochs done (checkpointed)
    best_top1: float = -1.0  # validation top-1 of the selected epoch (-1: none yet)
    best_epoch: int = -1  # the selected epoch, counted from 1 (-1: none yet)
    prior_loss_sum: torch.Tensor | None = None  # this epoch's prior losses, summed on the device
    prior_steps: int = 0  # how many prior steps returned a loss this epoch

    def open_epoch(self, record: dict[str, Any]) -> None:
        """Start the record of an epoch (and its prior-loss sum)."""
        self.record, self.prior_loss_sum, self.prior_steps = record, None, 0

    def put_prior_loss(self, loss: torch.Tensor) -> None:
        """Add one prior step's loss to the epoch's sum, on the device (no host read)."""
        loss = loss.double()
        self.prior_loss_sum = loss if self.prior_loss_sum is None else self.prior_loss_sum + loss
        self.prior_steps += 1

    def close_prior_loss(self) -> None:
        """The epoch's mean prior loss into the record as ``adarand/prior_loss`` (when a prior step returned one)."""
        if self.prior_loss_sum is not None:
            self.record["adarand/prior_loss"] = self.prior_loss_sum.item() / self.prior_steps

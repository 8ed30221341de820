"""The interface every regularizer shares, and plain fine-tuning (``none``).

``loss = reg(features, labels, logits=None, classifier_weight=None)`` returns lambda times the
regularization term; :class:`Regularizer` holds what every method has (lambda, the input checks,
the bad-label counter and its read-back, the noise generator), and a method adds its ``forward``.
"""
import torch
from torch import nn

from .. import ops
from ..checks import check_features_labels, check_hyperparameter, should_check_values
from ..distributed import all_reduce_sum_
from ..ops.common import count_bad_labels
from ..stats import ClassStats


class Regularizer(nn.Module):
    """Base of every regularizer: hyperparameters, input checks, device counters; no loss of its own.

    A method defines ``forward`` (its loss) and, where it adapts or needs statistics, :meth:`step`,
    :meth:`on_epoch_end` and :meth:`init_from_stats` (by default: input checks only, nothing, nothing).

    Args:
        num_classes: C, classes of the labels (and of the prior).
        feat_dim: D, dimension of the regularized features.
        lam: lambda, weight of the term (Eq. 1); finite and >= 0.
        check_values: check label ranges and finiteness on the host (a sync); ``None`` = on for
            CPU tensors, off for CUDA ones (then bad labels are masked and counted on the device).

    Shape (``loss = reg(features, labels, logits=None, classifier_weight=None)``):
        - features: (B, D), float (fp32, bf16 or fp16), differentiable
        - labels: (B,) int64 (or int32); rows labelled ``IGNORE_INDEX`` contribute nothing
        - logits: (B, K) and classifier_weight: (K, D), K >= C, the linear head's (PtR only)
        - Output: scalar, float32 (float64 for float64 features), differentiable w.r.t. ``features``

    Raises:
        ValueError: C or D < 1, a negative or non-finite ``lam``; at call time wrong shapes (and, with
            value checks, labels outside [0, C) other than ``IGNORE_INDEX`` or non-finite features).
        TypeError: a non-numeric ``lam``; labels neither int64 nor int32.
    """

    needs_stats = False

    def __init__(self, num_classes: int, feat_dim: int, lam: float = 1.0, check_values: bool | None = None):
        super().__init__()
        if int(num_classes) < 1 or int(feat_dim) < 1:
            raise ValueError(f"num_classes and feat_dim must be positive; got {num_classes}, {feat_dim}")
        lam = check_hyperparameter("lam", lam)
        self.num_classes, self.feat_dim, self.lam, self.check_values = num_classes, feat_dim, lam, check_values
        # the torch.Generator the noise is drawn from (None: torch's global RNG); the trainers and attach() give
        # one seeded from the run, so the method's draws never shift the data pipeline's random streams
        self.noise_generator = None
        # label values outside [0, C) other than IGNORE_INDEX, masked since the last check (not checkpointed:
        # a run that saw one stops at its next read-back)
        self.register_buffer("bad_labels", torch.zeros((), dtype=torch.int64), persistent=False)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}, lam={self.lam}"

    @property
    def initialized(self) -> bool:
        """Ready to run: a method with a prior asks the prior (its host flag, never a device read); one without,
        True."""
        prior = getattr(self, "prior", None)
        return prior is None or bool(prior.initialized)

    def check_inputs(self, features: torch.Tensor, labels: torch.Tensor, count: bool = True) -> None:
        """Shape/dtype checks (always), value checks (``check_values``) or, without them, count bad labels.

        Args:
            features: (B, D). labels: (B,) int64 or int32.
            count: count the bad labels (the forward does; :meth:`step` gets the same labels and does not,
                so a bad label is counted once a training step).

        Raises:
            ValueError / TypeError: as in the forward.
        """
        check_features_labels(features, labels, self.num_classes, self.feat_dim, self.check_values)
        counter = self.bad_label_counter(labels)
        if count and counter is not None:
            counter += count_bad_labels(labels, self.num_classes).to(counter.device)

    def bad_label_counter(self, labels: torch.Tensor) -> torch.Tensor | None:
        """The counter bad labels go to: ``bad_labels`` when value checks are off (bad labels are then masked
        and counted on the device), else None (they raise instead).

        Args:
            labels: (B,), the batch's labels (their device decides the default of ``check_values``).

        Returns:
            the 0-dim int64 ``bad_labels`` buffer, or None.
        """
        return None if should_check_values(labels, self.check_values) else self.bad_labels

    def noise_source(self) -> torch.Generator | None:
        """The generator of this call's noise: ``noise_generator``, or None (torch's global RNG) when none is set
        or inside ``torch.compile`` (dynamo traces no ``torch.Generator``)."""
        if self.noise_generator is None or torch.compiler.is_compiling():
            return None
        return self.noise_generator

    def device_counters(self) -> dict[str, torch.Tensor]:
        """The error and skip counters, as device tensors (nothing read back)."""
        return {"bad_labels": self.bad_labels}

    def check_device_errors(self) -> dict[str, int]:
        """Read the counters back (a host sync: call on the log period); raise on bad labels, else return them.

        Under torch.distributed the bad-label count is summed over ranks first (every rank must
        call this at the same step, as the trainers do on their log period), so all raise together.
        The count is never reset (nor checkpointed): once it is nonzero, every later call raises.

        Returns:
            ``{name: int}`` for logging: ``bad_labels`` (0) and e.g. AdaRand's ``skipped_batches``.

        Raises:
            ValueError: labels outside [0, C) that are not ``IGNORE_INDEX`` were masked (on any rank).
        """
        bad = self.bad_labels.clone()
        all_reduce_sum_(bad)
        counters = {name: int(value) for name, value in {**self.device_counters(), "bad_labels": bad}.items()}
        if counters["bad_labels"]:
            raise ValueError(f"{counters['bad_labels']} label value(s) outside [0, {self.num_classes}) that are not "
                             f"IGNORE_INDEX ({ops.IGNORE_INDEX}) were given to the {type(self).__name__} regularizer "
                             "with value checks off; they were masked (no loss, no update), but the labels are wrong")
        return counters

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Update after the model's optimizer step (nothing for this method but the input checks).

        Args:
            features: (B, D), detached. labels: (B,), as in the forward.

        Returns:
            None.
        """
        self.check_inputs(features, labels, count=False)
        return None

    def on_epoch_end(self) -> None:
        """Close an epoch (nothing for this method)."""

    def init_from_stats(self, stats: ClassStats) -> None:
        """Initialise from pre-trained class statistics (nothing for this method).

        Args:
            stats: an :class:`adarand.ClassStats` of C classes and D features (methods with ``needs_stats``).

        Returns:
            None.
        """


class NoRegularizer(Regularizer):
    """Plain fine-tuning (``none``): a zero loss, nothing to update.

    Args:
        num_classes, feat_dim, lam, check_values: as in :class:`Regularizer` (``lam`` weighs nothing).

    Shape: as in :class:`Regularizer`.
    """

    def forward(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None,
                classifier_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``0`` (plain fine-tuning): checks the inputs and returns a zero loss.

        Args:
            features: (B, D). labels: (B,). logits, classifier_weight: unused here (PtR's).

        Returns:
            scalar, float32, 0.
        """
        self.check_inputs(features, labels)
        return features.new_zeros((), dtype=torch.float32)


class TargetRegression(Regularizer):
    """Base of the methods whose loss is ``lambda * mean_{i active, d} (f_id - t_id)^2``: regression onto a target.

    The forward is written here once; a method says what its target is in :meth:`target_loss` (FNP: zero;
    RandReg and AdaRand: a draw of the prior). The loss counts the bad labels.

    Args:
        num_classes, feat_dim, lam, check_values: as in :class:`Regularizer`.

    Shape: as in :class:`Regularizer` (``logits`` and ``classifier_weight`` unused).
    """

    def target_loss(self, features: torch.Tensor, labels: torch.Tensor,
                    bad_labels: torch.Tensor | None) -> torch.Tensor:
        """``mean_{i active, d} (f_id - t_id)^2`` without lambda, the inputs checked already.

        Args:
            features: (B, D), differentiable. labels: (B,).
            bad_labels: the counter of :meth:`bad_label_counter`, or None.

        Returns:
            scalar (float32, float64 for float64 features).
        """
        raise NotImplementedError(f"{type(self).__name__} does not say what its target is")

    def forward(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None,
                classifier_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``lambda * mean_{i active, d} (f_id - t_id)^2``.

        Args:
            features: (B, D), differentiable. labels: (B,). logits, classifier_weight: unused.

        Returns:
            scalar (float32, float64 for float64 features).
        """
        self.check_inputs(features, labels, count=False)  # the loss counts the bad labels
        return self.lam * self.target_loss(features, labels, self.bad_label_counter(labels))

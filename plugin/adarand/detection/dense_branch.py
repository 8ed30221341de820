"""The regularizer on one dense (semantic-segmentation) head: which pixels it regularizes, under which label.

The dense analogue of :class:`~adarand.detection.box_branch.BoxRegularization`. The heads of
:mod:`adarand.detection.sem_seg_heads` hand a :class:`DenseRegularization` the B x D x H x W features
their 1x1 predictor reads, its logits and the ground-truth label map; it draws ``pixels_per_image``
cells per image (:class:`adarand.dense.PixelSampling`: each cell labelled by the ground truth at its
centre, ignore pixels not regularized) and returns

    loss_adarand_sem_seg = lambda * mean_{i,d} (f_id - r_id)^2,  r_i ~ N(mu_{y_i}, sigma_{y_i}^2)

over the drawn cells (or the chosen method's term), with the rows it used. The pixel draw and the
method's noise come from the branch's own generator (:class:`~adarand.detection.branch.Branch`), never
from torch's global RNG. It keeps nothing between calls but that stream; it is a submodule of its head, so the
model's checkpoints hold its prior and its stream.
"""
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from adarand import build_regularizer_from_config
from adarand.dense import PixelSampling, cell_labels, cell_rows

from .branch import Branch, check_prior_initialised


class PixelRows(NamedTuple):
    """What one dense regularization saw: the drawn cells (training) or every cell (statistics), in place."""

    features: torch.Tensor  # N x D features (detached in the record)
    labels: torch.Tensor  # N labels, IGNORE_INDEX where not regularized


class DenseRegularization(Branch):
    """A regularizer on a dense head's per-pixel features, with the pixel rule.

    Args:
        regularizer: an ``adarand.Regularizer`` over the head's classes, on its D features.
        sampling: the :class:`adarand.dense.PixelSampling` of a training step (ignore value, cells per image,
            balance).
        name: the branch's name: suffix of the loss (``loss_adarand_<name>``), prefix of the logged scalars
            (``adarand/<name>/...``), suffix of its statistics file.
        seed: the run's seed, for the noise stream (:class:`~adarand.detection.branch.Branch`).
    """

    ROWS = "pixels"  # what one row is, in the logged names (adarand/<name>/num_pixels)

    def __init__(self, regularizer: torch.nn.Module, sampling: PixelSampling, name: str = "sem_seg",
                 seed: int | None = None):
        super().__init__(regularizer, name, seed)
        self.sampling = sampling

    def extra_repr(self) -> str:
        return f"name={self.name}, {self.sampling}"

    def check_initialised(self, resumed_from: str | None = None) -> None:
        """Raise the error saying how to initialise the prior (``resumed_from``: the checkpoint a resume loaded)."""
        check_prior_initialised(self.regularizer, f"the {self.name} head", resumed_from)

    def loss(self, features: torch.Tensor, logits: torch.Tensor, label_map: torch.Tensor,
             classifier_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, "PixelRows"]:
        """The term on the cells drawn from ``features`` and the rows it regularized.

        Args:
            features: (B, D, H, W), the predictor's input. logits: (B, K, H, W), its output.
            label_map: (B, H', W') ground truth, H' >= H, W' >= W (the head's padded targets).
            classifier_weight: the predictor's weight (K, D), for the methods that use it (PtR).

        Returns:
            ``(loss, PixelRows)``: a scalar tensor, and the (B*P, D) drawn features (detached) with their labels.
        """
        self.check_initialised()
        self.noise_generator(features.device)
        rows, logit_rows, labels, _ = self.sampling.rows(features, logits, label_map, self.regularizer.num_classes,
                                                         self.regularizer.noise_source())
        loss = self.regularizer(rows, labels, logits=logit_rows, classifier_weight=classifier_weight)
        return loss, PixelRows(rows.detach(), labels)

    def cell_rows(self, features: torch.Tensor, label_map: torch.Tensor) -> "PixelRows":
        """Every cell of ``features`` as a row, labelled by the same rule (the statistics' rows, Eq. 9-10)."""
        labels = cell_labels(label_map.to(features.device), features.shape[-2:], self.sampling.ignore_index)
        return PixelRows(*cell_rows(features, labels))


def build_dense_regularization(adarand: Mapping[str, Any], num_classes: int, ignore_value: int, feat_dim: int,
                               prior_total_steps: int | None = None, noise_seed: int | None = None,
                               name: str = "sem_seg") -> DenseRegularization:
    """The :class:`DenseRegularization` of a semantic-segmentation head on ``feat_dim`` features.

    Args:
        adarand: the ``MODEL.ADARAND`` keys (method, pixel keys; a CfgNode or a LazyConfig's dict).
        num_classes, ignore_value: the head's (``MODEL.SEM_SEG_HEAD.NUM_CLASSES``, ``IGNORE_VALUE``).
        feat_dim: D, the channels its predictor reads.
        prior_total_steps: length of the prior's schedule (SOLVER.MAX_ITER).
        noise_seed: the run's seed for the noise stream, :func:`adarand.seeding.run_seed` of SEED (default
            ``torch.initial_seed()``).
        name: the branch's name (:class:`DenseRegularization`).
    """
    regularizer = build_regularizer_from_config(adarand, num_classes, feat_dim, prior_total_steps)
    sampling = PixelSampling(ignore_value, adarand["PIXELS_PER_IMAGE"], adarand["PIXEL_BALANCE"])
    return DenseRegularization(regularizer, sampling, name, noise_seed)

"""The interface every baseline implements (:class:`Baseline`) and the head's L2 term they share."""
import contextlib
from collections.abc import Iterable

import torch
from torch import nn

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # (images, labels) batches


def head_l2(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """``||w_head||^2`` over the given head parameters (weight and bias)."""
    return sum(p.pow(2).sum() for p in params)


class Baseline(nn.Module):
    """Base class: the hooks of the interface, all no-ops."""

    needs_data = False

    def watch(self, images: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        """Context manager around the model's forward pass on ``images`` (nothing to watch here)."""
        return contextlib.nullcontext()

    def init_from_data(self, fit_batches: Batches, probe_batches: Batches) -> None:
        """One-off initialisation from ``(images, labels)`` batches (nothing for this method)."""

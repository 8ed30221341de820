"""The prior's own optimizer: Adam with a per-step learning-rate schedule.

The paper does not state the prior's optimizer; Adam with lr 1e-2 and the default
schedule here are the official code's (``config/04_adarand/*.yaml``: ``optimizer_g`` Adam,
``lr_milestone: cosine``, i.e. ``util/train_util.py``'s per-iteration
``lr_t = lr * max(0, cos(pi * 7/16 * t/T))``, T = iterations of the run). See docs/fidelity.md.
Its moments and its step count are buffers, so they live in the owning module's ``state_dict()``
as plain tensors (Detectron2's checkpointer accepts nothing else) and resume restores them.
The update is the one of ``torch.optim.Adam`` (no weight decay, no amsgrad). The step count
and the scheduled learning rate stay on the device: nothing on the host changes per step, so
a step replays inside a CUDA graph and a compiled step never recompiles; nothing is read back.
"""
import torch
from torch import nn

from .ops.prior_step import adam_update_, prior_step_
from .schedules import SCHEDULES, lr_factor


class PriorAdam(nn.Module):
    """Adam over one C x D tensor with ``lr_t = lr * factor(t)``, t = updates taken so far.

    ``schedule``: ``"cosine_7_16"`` (default, the official code's:
    ``max(0, cos(pi * 7/16 * t / total_steps))``), ``"half_cosine"``
    (``(1 + cos(pi * t / total_steps)) / 2``, 0 from ``total_steps`` on) or ``"constant"``.
    ``total_steps=None`` keeps the learning rate constant whatever the schedule.

    A module so that its moments and step count travel with the regularizer's state dict.

    Args:
        shape: (C, D), the prior means'. lr: > 0 (default 1e-2). betas, eps: Adam's ((0.9, 0.999), 1e-8).
        total_steps: schedule length (training iterations), >= 1, or None. schedule: as above.

    Shape:
        - exp_avg, exp_avg_sq: ``shape``, float32; num_steps: scalar int64 (buffers)

    Raises:
        ValueError: ``lr <= 0``, ``total_steps < 1``, an unknown schedule.
    """

    def __init__(self, shape: tuple[int, ...], lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, total_steps: int | None = None, schedule: str = "cosine_7_16"):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"prior learning rate must be positive; got {lr}")
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"total_steps must be positive or None; got {total_steps}")
        if schedule not in SCHEDULES:
            raise ValueError(f"prior lr schedule {schedule!r}; expected one of {SCHEDULES}")
        self.lr, self.betas, self.eps, self.total_steps = lr, betas, eps, total_steps
        self.schedule = schedule
        self.register_buffer("exp_avg", torch.zeros(shape))
        self.register_buffer("exp_avg_sq", torch.zeros(shape))
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.int64))  # updates taken: the schedule's t

    def extra_repr(self) -> str:
        return f"lr={self.lr}, betas={self.betas}, total_steps={self.total_steps}, schedule={self.schedule}"

    @property
    def steps_taken(self) -> int:
        """Updates taken so far (reads ``num_steps`` back: a host sync on CUDA; for logging and tests)."""
        return int(self.num_steps)

    def current_lr(self) -> float:
        """``lr * factor(t)`` for the next update (reads the device step count: a host sync; for logging).

        Returns:
            float, the learning rate of the next :meth:`step` (``lr`` when ``total_steps`` is None).
        """
        if self.total_steps is None:
            return self.lr
        return self.lr * lr_factor(self.schedule, self.steps_taken, self.total_steps)

    def _hyper(self):
        return {"lr": self.lr, "beta1": self.betas[0], "beta2": self.betas[1], "eps": self.eps,
                "schedule": self.schedule, "total_steps": self.total_steps}

    @torch.no_grad()
    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        """One Adam update of ``param`` in place, then advance the schedule (all on the device).

        Args:
            param: (C, D), updated in place. grad: (C, D).

        Returns:
            None.
        """
        adam_update_(param, grad, self.exp_avg, self.exp_avg_sq, self.num_steps, **self._hyper())

    @torch.no_grad()
    def update_prior(self, mu: torch.Tensor, running_mean: torch.Tensor, use_mean: bool = True, use_dist: bool = True,
                     applied: torch.Tensor | None = None) -> torch.Tensor:
        """AdaRand's prior update: the analytic gradient of ``L_mean + L_dist`` at ``mu``, then :meth:`step`.

        One fused op (``adarand.ops.prior_step_``: Triton kernels on CUDA), no autograd, no host sync.

        Args:
            mu: (C, D), updated in place. running_mean: (C, D). use_mean, use_dist: the loss terms.
            applied: 0-dim bool device tensor (False: mu and the moments stay, the count advances) or None.

        Returns:
            scalar, ``L_mean + L_dist`` at mu before the update.
        """
        return prior_step_(mu, running_mean, self.exp_avg, self.exp_avg_sq, self.num_steps, applied,
                           use_mean=use_mean, use_dist=use_dist, **self._hyper())

"""The prior's own optimizer: Adam with a per-step learning-rate schedule.

The paper does not state the prior's optimizer; Adam with lr 1e-2 and the default
schedule here are the official code's (``config/04_adarand/*.yaml``: ``optimizer_g`` Adam,
``lr_milestone: cosine``, i.e. ``util/train_util.py``'s per-iteration
``lr_t = lr * max(0, cos(pi * 7/16 * t/T))``, T = iterations of the run). See docs/fidelity.md.
Its moments are buffers, so they live in the owning module's ``state_dict()`` as plain
tensors (Detectron2's checkpointer accepts nothing else) and resume restores them.
The update is the one of ``torch.optim.Adam`` (no weight decay, no amsgrad).
It reads nothing back to the host, so it does not synchronize a CUDA stream.
"""
import torch
from torch import nn

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

    def __init__(self, shape, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, total_steps=None, schedule="cosine_7_16"):
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
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.int64))
        self.steps_taken = 0  # host mirror of num_steps, so the schedule never reads the device

    def extra_repr(self):
        return f"lr={self.lr}, betas={self.betas}, total_steps={self.total_steps}, schedule={self.schedule}"

    def current_lr(self) -> float:
        """``lr * factor(t)`` for the next update (host arithmetic, no device read).

        Returns:
            float, the learning rate of the next :meth:`step` (``lr`` when ``total_steps`` is None).
        """
        if self.total_steps is None:
            return self.lr
        return self.lr * lr_factor(self.schedule, self.steps_taken, self.total_steps)

    @torch.no_grad()
    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        """One Adam update of ``param`` in place, then advance the schedule.

        Args:
            param: (C, D), updated in place. grad: (C, D).

        Returns:
            None.
        """
        lr = self.current_lr()
        beta1, beta2 = self.betas
        t = self.steps_taken + 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.exp_avg_sq / (1 - beta2**t)).sqrt_().add_(self.eps)
        param.addcdiv_(self.exp_avg, denom, value=-lr / (1 - beta1**t))
        self.steps_taken = t
        self.num_steps.fill_(t)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        key = prefix + "num_steps"
        if key in state_dict:
            self.steps_taken = int(state_dict[key])

"""The solver: config -> optimizer and learning-rate schedule, each through one registry.

``OPTIMIZERS`` and ``SCHEDULERS`` are also where ``config.check_cfg`` reads the accepted names of
``SOLVER.OPTIMIZER`` and ``SOLVER.LR_SCHEDULE``.
"""
import functools
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import nn

from adarand.registry import Registry
from adarand.schedules import cosine_7_16


def _sgd(params, s):
    return torch.optim.SGD(params, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV, weight_decay=s.WEIGHT_DECAY)


def _adamw(params, s):
    return torch.optim.AdamW(params, lr=s.BASE_LR, weight_decay=s.WEIGHT_DECAY)


OPTIMIZERS = Registry("optimizer (config key SOLVER.OPTIMIZER)", {"sgd": _sgd, "adamw": _adamw})


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """``OPTIMIZERS[SOLVER.OPTIMIZER]`` over the trainable parameters, with the SOLVER's hyperparameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS.get(cfg.SOLVER.OPTIMIZER)(params, cfg.SOLVER)


def schedule_per_iteration(cfg: CfgNode) -> bool:
    """True when the scheduler is stepped after every optimizer step, False once per epoch."""
    return cfg.SOLVER.LR_SCHEDULE == "cosine_7_16"


def _multistep(optimizer, s, iters_per_epoch):
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(s.MILESTONES), gamma=s.GAMMA)


def _cosine(optimizer, s, iters_per_epoch):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.EPOCHS)


def _cosine_7_16(optimizer, s, iters_per_epoch):
    total, warmup = s.EPOCHS * iters_per_epoch, s.WARMUP_ITERS
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(cosine_7_16, total=total, warmup=warmup))


SCHEDULERS = Registry("learning-rate schedule (config key SOLVER.LR_SCHEDULE)",
                      {"multistep": _multistep, "cosine": _cosine, "cosine_7_16": _cosine_7_16})


def build_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer, iters_per_epoch: int) -> Any:
    """multistep (x GAMMA at MILESTONES) and cosine (to 0 over EPOCHS) step per epoch;
    cosine_7_16 steps per iteration: ``adarand.schedules.cosine_7_16`` over EPOCHS * iters_per_epoch
    iterations after WARMUP_ITERS of linear warm-up. ``SCHEDULERS[SOLVER.LR_SCHEDULE]``."""
    return SCHEDULERS.get(cfg.SOLVER.LR_SCHEDULE)(optimizer, cfg.SOLVER, iters_per_epoch)

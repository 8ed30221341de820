"""AdaRand for PyTorch Lightning: the LightningModule owns the regularizer, a callback keeps it in step.

::

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = torchvision.models.resnet50(num_classes=10)
            self.adarand = adarand.attach(self, "model.fc")    # a submodule: in state_dict and checkpoints

        def configure_callbacks(self):
            return [AdaRandCallback()]

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y) + self.adarand.loss(y)   # the one added term

The regularizer (an :class:`~adarand.attach.AttachedRegularizer`, a submodule of the LightningModule)
travels with the module: ``state_dict``, Lightning checkpoints, ``ddp_spawn``'s return of the trained
weights to the main process. :class:`AdaRandCallback` does what callbacks do. At ``on_train_start`` it
gives the prior's schedule ``trainer.estimated_stepping_batches`` steps when ``total_steps`` was not
given, and computes the class statistics (Eq. 9-10) from the batches the fit trains on
(``trainer.train_dataloader``, at most ``trainer.num_training_batches`` of them: ``limit_train_batches``
and ``fast_dev_run`` honoured; a progress bar on rank 0) unless the module's prior is already
initialised (a checkpoint restored it, or an earlier ``fit``). After every optimizer step (once per
``accumulate_grad_batches`` batches: ``trainer.global_step`` moved) it steps the prior on the features of
all the micro-batches of that step and logs ``adarand/loss`` and ``adarand/prior_loss``; each epoch
ends with ``adarand/skipped_batches``. A checkpoint whose prior holds NaN/Inf stops ``fit`` naming the
file. Automatic optimization only.

Deprecated: ``AdaRandCallback(head=...)`` attaching the regularizer itself and keeping its state in the
callback's checkpoint entry (still works, with a ``FutureWarning``; see docs/integrations.md).
"""
import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from ..attach import AttachedRegularizer, attach
from ..prior import NonFinitePriorError


class AdaRandCallback(Callback):
    """Statistics at the start of training, the prior step after each optimizer step, and the logs.

    Args:
        batch_fn: optional ``batch -> (inputs, labels)`` for the statistics pass (default: batches are
            ``(inputs, labels)``; ``inputs`` go to the LightningModule's ``forward``).
        prog_bar, on_step, on_epoch, sync_dist: ``LightningModule.log``'s options for ``adarand/loss``
            and ``adarand/prior_loss``.
        head, method, num_classes: deprecated: the callback attaches the regularizer itself
            (:func:`adarand.attach` on the LightningModule) and keeps its state in its own checkpoint entry.
        **options: deprecated, with ``head``: the method's options.

    Attributes:
        attached: the LightningModule's :class:`adarand.attach.AttachedRegularizer`, from ``on_train_start`` on.

    Raises:
        ValueError: ``method``, ``num_classes`` or options without ``head`` (they belong to ``adarand.attach``).
    """

    def __init__(self, batch_fn: Callable[[Any], tuple[Any, torch.Tensor]] | None = None, prog_bar: bool = False,
                 on_step: bool = True, on_epoch: bool = False, sync_dist: bool = False,
                 head: str | torch.nn.Module | None = None, method: str = "adarand", num_classes: int | None = None,
                 **options: Any):
        if head is None and (options or method != "adarand" or num_classes is not None):
            raise ValueError("AdaRandCallback: the regularizer's method and options go to adarand.attach in the "
                             "LightningModule (self.adarand = adarand.attach(self, 'model.fc', lam=...)); got "
                             f"{sorted(options) or 'method/num_classes'}")
        if head is not None:
            warnings.warn("AdaRandCallback(head=...) is deprecated: let the LightningModule own the regularizer "
                          f"(self.adarand = adarand.attach(self, {head!r}, ...) in __init__, self.adarand.loss(y) "
                          "in training_step) and pass AdaRandCallback() without head", FutureWarning, stacklevel=2)
        self.batch_fn = batch_fn
        self.log_options = {"prog_bar": prog_bar, "on_step": on_step, "on_epoch": on_epoch, "sync_dist": sync_dist}
        self.head, self.method, self.num_classes, self.options = head, method, num_classes, options
        self.attached: Any = None  # the AttachedRegularizer, from on_train_start on
        self._restored = None  # deprecated usage: state from a checkpoint, loaded once attached
        self._terms: list[torch.Tensor] = []
        self._term_hook = None
        self._last_global_step = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(head=self.head, method=self.method)

    def loss(self, labels: torch.Tensor) -> torch.Tensor:
        """Deprecated usage (``head=``): :meth:`AttachedRegularizer.loss` of the regularizer the callback attached.

        Raises:
            RuntimeError: called before ``on_train_start``, or without ``head`` (call the module's own).
        """
        if self.head is None:
            raise RuntimeError("AdaRandCallback.loss: the LightningModule owns the regularizer; call its loss "
                               "(self.adarand.loss(y), where self.adarand = adarand.attach(self, ...))")
        if self.attached is None:
            raise RuntimeError("AdaRandCallback.loss: not attached yet; it attaches at on_train_start of trainer.fit "
                               "(is the callback in Trainer(callbacks=...) or configure_callbacks()?)")
        return self.attached.loss(labels)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.head is not None and self.attached is None:
            self.attached = attach(pl_module, self.head, self.method, self.num_classes, **self.options)
        elif self.head is None:
            self.attached = _module_regularizer(pl_module)
        _default_total_steps(self.attached, trainer)
        state, self._restored = self._restored, None
        if state is not None:
            self.attached.restore_or_init(state, None, source=trainer.ckpt_path)
        elif not self.attached.is_initialized:
            progress = trainer.is_global_zero and trainer.progress_bar_callback is not None
            self.attached.init_from_data(_Batches(trainer.train_dataloader, trainer.num_training_batches),
                                         self.batch_fn, progress=progress)
        if self._term_hook is not None:
            self._term_hook.remove()
        self._terms = []
        self._term_hook = self.attached.regularizer.register_forward_hook(
            lambda module, args, output: self._terms.append(output.detach()))
        self._last_global_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self._last_global_step:
            return  # gradient accumulation: no optimizer step yet
        self._last_global_step = trainer.global_step
        prior_loss = self.attached.step()
        if self._terms:
            pl_module.log("adarand/loss", torch.stack(self._terms).float().mean(), **self.log_options)
            self._terms = []
        if prior_loss is not None:
            pl_module.log("adarand/prior_loss", prior_loss, **self.log_options)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.attached.on_epoch_end()
        counters = self.attached.regularizer.check_device_errors()  # raises on masked bad labels
        if "skipped_batches" in counters:
            pl_module.log("adarand/skipped_batches", float(counters["skipped_batches"]), on_step=False,
                          on_epoch=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._term_hook is not None:
            self._term_hook.remove()
            self._term_hook = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A non-finite prior in the checkpoint being restored: put the file in front of the error."""
        if isinstance(exception, NonFinitePriorError) and trainer.ckpt_path is not None \
                and not str(exception).startswith(str(trainer.ckpt_path)):
            exception.args = (f"{trainer.ckpt_path}: {exception}",)

    def state_dict(self) -> dict[str, Any]:
        if self.head is None:
            return {}  # the state is the LightningModule's
        if self._restored is not None:  # a checkpoint's state, loaded at the next on_train_start
            return {"regularizer": self._restored}
        return {} if self.attached is None else {"regularizer": self.attached.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # deprecated usage: kept until on_train_start, which loads it and names trainer.ckpt_path in its errors
        if "regularizer" in state_dict:
            self._restored = state_dict["regularizer"]


class _Batches:
    """The first ``limit`` batches of ``loader`` (all when infinite): those the fit trains on. Exposes the
    loader's ``generator`` and ``sampler``, whose random state the statistics pass leaves untouched."""

    def __init__(self, loader, limit):
        self.loader, self.limit = loader, None if math.isinf(limit) else int(limit)
        self.generator, self.sampler = getattr(loader, "generator", None), getattr(loader, "sampler", None)

    def __iter__(self):
        return itertools.islice(self.loader, self.limit)

    def __len__(self):
        return len(self.loader) if self.limit is None else min(len(self.loader), self.limit)


def _module_regularizer(pl_module):
    """The one :class:`AttachedRegularizer` among the LightningModule's submodules."""
    found = [module for module in pl_module.modules() if isinstance(module, AttachedRegularizer)]
    if len(found) != 1:
        raise RuntimeError(f"AdaRandCallback: {type(pl_module).__name__} has {len(found)} AdaRand regularizers; "
                           "it needs one, attached in __init__: self.adarand = adarand.attach(self, 'model.fc')")
    return found[0]


def _default_total_steps(attached, trainer):
    """The prior's schedule length, when not given: the fit's optimizer steps (None when unbounded)."""
    optimizer = getattr(getattr(attached.regularizer, "prior", None), "optimizer", None)
    if optimizer is not None and optimizer.total_steps is None:
        steps = trainer.estimated_stepping_batches
        optimizer.total_steps = None if math.isinf(steps) else int(steps)

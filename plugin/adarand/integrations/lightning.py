"""AdaRand for PyTorch Lightning: one callback, one added term in ``training_step``.

::

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = torchvision.models.resnet50(num_classes=10)
            self.adarand = AdaRandCallback(head="model.fc")

        def configure_callbacks(self):
            return [self.adarand]

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y) + self.adarand.loss(y)   # the one added line

At ``on_train_start`` the callback attaches to the head (:func:`adarand.attach`, ``total_steps``
defaulting to ``trainer.estimated_stepping_batches``) and computes the class statistics (Eq. 9-10)
from ``trainer.train_dataloader`` — unless a checkpoint restored its state. After every optimizer
step (once per ``accumulate_grad_batches`` batches: ``trainer.global_step`` moved) it steps the
prior on the features of all the micro-batches of that step. Its state rides in Lightning
checkpoints (``state_dict`` / ``load_state_dict``; a restored state is loaded at ``on_train_start``,
a prior with NaN/Inf refused naming the checkpoint); ``adarand/loss`` and ``adarand/prior_loss``
are logged through ``pl_module.log``. The hook stays on after ``fit`` (a later ``fit`` continues
with the same prior); ``callback.attached.remove()`` takes it off. Automatic optimization only.
"""
import math

from lightning.pytorch.callbacks import Callback

from ..attach import attach, with_total_steps


class AdaRandCallback(Callback):
    """Attach a regularizer to a LightningModule's classifier head and keep it in step with training.

    Args:
        head: dotted name of the ``nn.Linear`` head in the LightningModule (e.g. ``"model.fc"``).
        method: a regularizer name (:func:`adarand.available_regularizers`), default ``"adarand"``.
        num_classes: C; default the head's ``out_features``.
        batch_fn: optional ``batch -> (inputs, labels)`` for the statistics pass (default: batches are
            ``(inputs, labels)``; ``inputs`` go to the LightningModule's ``forward``).
        **options: the method's options (``lam``, ``alpha``, ``prior_lr``, ``total_steps``, ...).

    Attributes:
        attached: the :class:`adarand.attach.AttachedRegularizer`, from ``on_train_start`` on.
    """

    def __init__(self, head, method="adarand", num_classes=None, batch_fn=None, **options):
        self.head, self.method, self.num_classes, self.batch_fn = head, method, num_classes, batch_fn
        self.options = options
        self.attached = None
        self._restored = None  # state from a checkpoint, loaded once attached
        self._last_term = self._last_global_step = None

    @property
    def state_key(self):
        return self._generate_state_key(head=self.head, method=self.method)

    def loss(self, labels):
        """The term to add to the training loss: :meth:`AttachedRegularizer.loss` on the last forward.

        Args:
            labels: (B,) int64 labels of the batch just forwarded.

        Returns:
            scalar, lambda times the regularizer, differentiable.

        Raises:
            RuntimeError: called before ``on_train_start`` (outside ``trainer.fit``), or as the attached loss.
        """
        if self.attached is None:
            raise RuntimeError("AdaRandCallback.loss: not attached yet; it attaches at on_train_start of trainer.fit "
                               "(is the callback in Trainer(callbacks=...) or configure_callbacks()?)")
        term = self.attached.loss(labels)
        self._last_term = term.detach()
        return term

    def on_train_start(self, trainer, pl_module):
        if self.attached is None:
            options = with_total_steps(self.method, self.options, lambda: _optimizer_steps(trainer))
            self.attached = attach(pl_module, self.head, self.method, self.num_classes, **options)
        state, self._restored = self._restored, None
        self.attached.restore_or_init(state, lambda: trainer.train_dataloader, self.batch_fn, source=trainer.ckpt_path)
        self._last_global_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self._last_global_step:
            return  # gradient accumulation: no optimizer step yet
        self._last_global_step = trainer.global_step
        prior_loss = self.attached.step()
        if self._last_term is not None:
            pl_module.log("adarand/loss", self._last_term)
        if prior_loss is not None:
            pl_module.log("adarand/prior_loss", prior_loss)

    def on_train_epoch_end(self, trainer, pl_module):
        self.attached.on_epoch_end()

    def state_dict(self):
        if self._restored is not None:  # a checkpoint's state, loaded at the next on_train_start
            return {"regularizer": self._restored}
        return {} if self.attached is None else {"regularizer": self.attached.state_dict()}

    def load_state_dict(self, state_dict):
        # kept until on_train_start, which loads it and names trainer.ckpt_path in its errors
        if "regularizer" in state_dict:
            self._restored = state_dict["regularizer"]


def _optimizer_steps(trainer):
    """The fit's optimizer steps, None when unbounded."""
    steps = trainer.estimated_stepping_batches
    return None if math.isinf(steps) else int(steps)

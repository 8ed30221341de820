"""AdaRand on an unchanged model: the regularized features are its classifier head's input.

``reg = adarand.attach(model, "fc")`` puts one forward hook on the head (a ``nn.Linear``)
that keeps the head's input ``f`` (B x D, the penultimate features of Eq. 1) and output
(the logits, for PtR) of the last forward that ran with gradients enabled; the hook
returns nothing, so the model's outputs are untouched. A training step then reads::

    logits = model(images)
    loss = F.cross_entropy(logits, labels) + reg.loss(labels)   # + lambda * mean (f - r)^2
    loss.backward(); optimizer.step(); optimizer.zero_grad()
    reg.step()                                                  # Eq. 11-15 on those features

which is, call for call, the explicit path ``reg.regularizer(features, labels, ...)`` /
``reg.regularizer.step(features.detach(), labels)`` of :func:`adarand.build_regularizer`.

A dense head (a 1x1 ``nn.Conv2d``, e.g. torchvision's ``DeepLabHead``'s last layer) regularizes its
input's cells (B x D x H x W): ``reg.loss(label_map)`` labels each cell by the ground truth at its centre
and draws ``pixels_per_image`` cells per image on the device (:mod:`adarand.dense`).
"""
import contextlib
import itertools
import random
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from . import dense
from .regularizer_config import select_options
from .distributed import rank
from .prior import naming_checkpoint
from .regularizers import Regularizer, build_regularizer, regularizer_options
from .seeding import NoiseStream
from .stats import ClassStats, compute_class_stats
from .checks import LABEL_DTYPES

# The regularizer attached to each head (weak both ways: nothing kept alive, nothing put on the module, so a
# model still pickles and deep-copies; a copy's head is another key).
_ATTACHED: "weakref.WeakKeyDictionary[nn.Module, weakref.ref]" = weakref.WeakKeyDictionary()

# Default of ``max_pending``: loss() calls one step() may take, far more micro-batches than gradient accumulation uses.
MAX_PENDING = 256
BatchFn = Callable[[Any], tuple[Any, torch.Tensor]]  # batch -> (inputs of the model, labels)


@contextlib.contextmanager
def _untouched_random_streams(loader):
    """Run the block without advancing the training's random streams: torch's global RNGs (CPU, current
    CUDA device), Python's ``random`` and the loader's (or its sampler's) generator are put back after it,
    so a statistics pass over the training loader leaves the batch order and augmentation of training as
    they would be without it."""
    generators = {id(g): g for g in (getattr(loader, "generator", None),
                                     getattr(getattr(loader, "sampler", None), "generator", None)) if g is not None}
    saved = [(g, g.get_state()) for g in generators.values()]
    python_state = random.getstate()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        for generator, state in saved:
            generator.set_state(state)


def _is_pixel_classifier(module):
    """A 1x1 ``nn.Conv2d`` that classifies each cell of its input on its own (groups 1, stride 1, no padding)."""
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1
            and module.stride == (1, 1) and module.padding in ((0, 0), "same", "valid"))


def _find_head(model, head):
    """``head`` itself, or the submodule of ``model`` named by the dotted path ``head``; a linear layer or a
    1x1 convolution (a dense head). A tuple (timm's distilled models: ``get_classifier()`` gives the class
    token's head and the distillation token's) stands for its first head, the class token's."""
    if isinstance(head, (tuple, list)):
        if not head:
            raise ValueError("attach: an empty tuple of heads")
        head = head[0]
    if isinstance(head, str):
        try:
            module = model.get_submodule(head)
        except AttributeError:
            heads = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) or _is_pixel_classifier(m)]
            raise ValueError(f"attach: {type(model).__name__} has no submodule {head!r}; its linear layers and "
                             f"1x1 convolutions are {heads or 'none'}") from None
        name = head
    else:
        module = head
        name = next((n for n, m in model.named_modules() if m is head), None)
        if name is None:
            raise ValueError(f"attach: the head {type(head).__name__} is not a submodule of {type(model).__name__}")
    if isinstance(module, nn.Conv2d) and not _is_pixel_classifier(module):
        raise TypeError(f"attach: the head {name!r} is a Conv2d with kernel_size={module.kernel_size}, "
                        f"groups={module.groups}, stride={module.stride}, padding={module.padding}: a dense head "
                        "must be a per-pixel classifier (kernel_size 1, groups 1, stride 1, no padding)")
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        inner = [n for n, m in module.named_modules() if isinstance(m, nn.Linear) or _is_pixel_classifier(m)]
        hint = f" (its last one is {name + '.' + inner[-1]!r})" if inner else ""
        raise TypeError(f"attach: the head {name!r} is a {type(module).__name__}, not a torch.nn.Linear or a 1x1 "
                        "torch.nn.Conv2d: give the final classifier layer, whose input are the features to regularize"
                        + hint)
    if _widths(module)[0] < 1:
        raise ValueError(f"attach: the head {name!r} has no input width yet (an uninitialised "
                         f"{type(module).__name__}): run one forward first")
    return name, module


def _checked_batch(batch, mapped, dense=False):
    """``batch`` as ``(inputs, labels)`` with integer labels ((B,) class indices, or a (B, H', W') label map for a
    ``dense`` head), else an error naming ``batch_fn`` and that form."""
    given = "batch_fn returned" if mapped else "the loader gave"
    form = "a (B, H', W') integer label map" if dense else "(B,) int64 class labels"
    fix = ("fix batch_fn" if mapped else "pass batch_fn=lambda batch: (inputs, labels)") + (
        f" to init_from_data; expected (inputs, labels): the model's inputs (a tensor, or a dict of keyword inputs) "
        f"and {form}")
    if isinstance(batch, dict) or not isinstance(batch, (tuple, list)):
        kind = f"a dict with keys {sorted(batch)}" if isinstance(batch, dict) else f"a {type(batch).__name__}"
        raise TypeError(f"init_from_data: {given} {kind}; {fix}")
    if len(batch) != 2:
        raise ValueError(f"init_from_data: {given} a batch of {len(batch)} items; {fix}")
    inputs, labels = batch
    labels = torch.as_tensor(labels)
    integer = labels.dtype in LABEL_DTYPES or (dense and not labels.dtype.is_floating_point
                                               and not labels.is_complex() and labels.dtype != torch.bool)
    if not integer or labels.dim() != (3 if dense else 1):
        raise TypeError(f"init_from_data: {given} labels of dtype {labels.dtype} and shape {tuple(labels.shape)}, "
                        f"not {'a label map' if dense else 'class indices'}; {fix}")
    return inputs, labels


def _keep_saved_uninitialised(module, incompatible_keys):
    """Load post-hook of :class:`AttachedRegularizer`: a state saved before the prior was initialised holds the
    prior's placeholder tensors, which would mark it initialised; it stays uninitialised, as saved."""
    if module._saved_uninitialised:
        module._saved_uninitialised = False
        prior = getattr(module.regularizer, "prior", None)
        if prior is not None:
            prior.initialized = False


def _widths(head):
    """(D, K): the head's input and output widths."""
    return (head.in_features, head.out_features) if isinstance(head, nn.Linear) else (head.in_channels,
                                                                                       head.out_channels)


class AttachedRegularizer(nn.Module):
    """A regularizer fed by a forward hook on a model's classifier head; built by :func:`attach`.

    Its only submodule is ``regularizer`` (the :class:`adarand.Regularizer`), so ``state_dict()``
    checkpoints the prior, the prior optimizer's moments and ``initialized`` (a copy of the prior's own flag,
    :attr:`is_initialized`, taken when saved and put back when loaded), and nothing of the model. The hook keeps the last forward's features when
    gradients are enabled; a forward under ``torch.no_grad()`` (evaluation) drops them, so a later
    :meth:`loss` cannot use stale training features. :meth:`loss` also queues ``(features.detach(), labels)``;
    :meth:`step` updates on every queued pair at once (one step after several micro-batches of
    gradient accumulation updates on their concatenation, i.e. on the whole batch). More than
    ``max_pending`` :meth:`loss` calls without a :meth:`step` is an error: a loop that never steps
    would keep a fixed prior (and every batch's features).

    The regularizer's noise is drawn from its own generator (created at the first :meth:`loss` on the features'
    device, seeded with ``stream_seed(NOISE, seed, rank)``; its seed and state are checkpointed as ``noise_seed`` /
    ``noise_state``: :class:`adarand.seeding.NoiseStream`),
    so fine-tuning with and without the regularizer sees the same dropout, augmentation and batch order.

    A dense head (``sampling`` given) hands the regularizer the cells :meth:`adarand.dense.PixelSampling.rows`
    draws from the same generator, before the noise; the queue keeps those rows.

    Args:
        model: the network (not registered as a submodule).
        head_name: the head's dotted name in ``model``. head: the ``nn.Linear`` or 1x1 ``nn.Conv2d`` itself.
        regularizer: an :class:`adarand.Regularizer` of D features (the head's input width).
        seed: the noise stream's seed (default ``torch.initial_seed()``, i.e. the run's ``torch.manual_seed``).
        max_pending: the most :meth:`loss` calls one :meth:`step` may take (micro-batches of one optimizer
            step), >= 1; default :data:`MAX_PENDING` (256).
        sampling: a :class:`adarand.dense.PixelSampling` for a dense head, else None.

    Shape:
        - features (the head's input): (B, D); labels: (B,) int64 in [0, C)
        - dense: features (B, D, H, W); labels: a label map (B, H', W') of integers, H' >= H, W' >= W
    """

    def __init__(self, model: nn.Module, head_name: str, head: nn.Module, regularizer: Regularizer,
                 seed: int | None = None, max_pending: int = MAX_PENDING,
                 sampling: "dense.PixelSampling | None" = None):
        super().__init__()
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"attach: max_pending must be an integer >= 1; got {max_pending!r}")
        self.max_pending = max_pending
        object.__setattr__(self, "model", model)  # a plain reference: not in state_dict, not moved by .to()
        object.__setattr__(self, "head", head)
        self.head_name = head_name
        self.regularizer = regularizer
        self.sampling = sampling
        self._saved_uninitialised = False  # the state being loaded was saved before the prior was initialised
        self.register_load_state_dict_post_hook(_keep_saved_uninitialised)
        self._features = self._logits = None
        self._dropped = "no forward has run through the head since attach() or the last step()"
        self._queue: list[tuple[torch.Tensor, torch.Tensor]] = []  # (features, labels) awaiting step()
        self._stats_features: list[torch.Tensor] | None = None
        self.noise_stream = NoiseStream(regularizer, seed)
        attached = _ATTACHED.get(head)
        other = attached() if attached is not None else None
        if other is not None and other._handle is not None:
            raise RuntimeError(f"attach: the head {head_name!r} already has a regularizer attached; call its "
                               "remove() first (two would regularize the same features twice)")
        _ATTACHED[head] = weakref.ref(self)
        self._handle = head.register_forward_hook(self._capture)

    def extra_repr(self) -> str:
        dense_repr = "" if self.sampling is None else f", {self.sampling}"
        return f"head={self.head_name!r}, attached={self._handle is not None}{dense_repr}"

    @property
    def is_initialized(self) -> bool:
        """Whether the regularizer is ready to run: its prior's flag (a host bool: never a device read); always
        True for a method without statistics."""
        return self.regularizer.initialized

    @property
    def seed(self) -> int:
        """The noise stream's seed (a loaded checkpoint's, once one is loaded)."""
        return self.noise_stream.seed

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "initialized"] = torch.tensor(self.is_initialized)
        self.noise_stream.save(destination, prefix)

    def _follow(self, tensor):
        """Move the regularizer to ``tensor``'s device (the head's features or weight), and to float64 for float64
        ones (float32 otherwise: the prior's EMA and Adam never run in half precision), when the model moved or
        changed dtype after attach()."""
        dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
        prior = self.regularizer.prior.mu if hasattr(self.regularizer, "prior") else self.regularizer.bad_labels
        if prior.device != tensor.device or (prior.is_floating_point() and prior.dtype != dtype):
            self.to(tensor.device)
            if prior.is_floating_point():
                self.regularizer.to(dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.noise_stream.load(state_dict, prefix)  # (no keys in checkpoints from before the noise had its stream)
        saved = state_dict.pop(prefix + "initialized", None)  # (a buffer in checkpoints from before: the same key)
        self._saved_uninitialised = saved is not None and not bool(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _capture(self, module, args, output):
        if self._stats_features is not None:  # init_from_data: collect, whatever the grad mode
            self._stats_features.append(args[0])
        elif torch.is_grad_enabled():
            self._features, self._logits = args[0], output
        else:
            self._features = self._logits = None
            self._dropped = "the last forward ran under torch.no_grad() (evaluation keeps nothing)"

    def _check_attached(self, what):
        if self._handle is None:
            raise RuntimeError(f"{what}: the regularizer was removed from {self.head_name!r} (remove() was called)")

    @torch.no_grad()
    def init_from_data(self, loader: Iterable, batch_fn: BatchFn | None = None, progress: bool = True,
                       max_batches: int | None = None) -> ClassStats | None:
        """Eq. 9-10 from the model's own features: per-class mean/std of the head's input over ``loader``.

        Runs ``model(inputs)`` (``model(**inputs)`` for a dict) in eval mode without gradients,
        on the head's device, through :func:`adarand.compute_class_stats` (float64 sums and counts,
        all-reduced under torch.distributed), then restores every submodule's train/eval mode.
        A dense head's labels are label maps: every cell counts, labelled by :func:`adarand.dense.cell_labels`
        (ignored cells excluded; no sampling, so the statistics are exact).
        Nothing happens for methods that need no statistics (``regularizer.needs_stats`` False).

        Args:
            loader: iterable of batches ``(inputs, labels)``, or of anything ``batch_fn`` maps to that.
            batch_fn: optional ``batch -> (inputs, labels)``.
            progress: a progress bar (on rank 0).
            max_batches: read at most this many batches (None: the whole loader), e.g. a framework's
                ``limit_train_batches``.

        Returns:
            the :class:`adarand.ClassStats` (None when the method needs none).

        Raises:
            ValueError: an empty loader, a class without samples, non-finite features
                (see :func:`adarand.compute_class_stats`), a batch of other than two items.
            TypeError: a batch that is not ``(inputs, labels)`` (a dict: give ``batch_fn``), labels that are
                not a 1-D int64/int32 tensor. RuntimeError: after :meth:`remove`.
        """
        self._check_attached("init_from_data")
        if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                        or max_batches < 1):
            raise ValueError(f"init_from_data: max_batches must be an integer >= 1 or None; got {max_batches!r}")
        if not self.regularizer.needs_stats:
            return None
        self._follow(self.head.weight)
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        self._stats_features = []
        try:
            with _untouched_random_streams(loader):  # iter(loader) draws from its generator: inside
                batches = (_checked_batch(b if batch_fn is None else batch_fn(b), batch_fn is not None,
                                          self.sampling is not None)
                           for b in (loader if max_batches is None else itertools.islice(loader, max_batches)))
                stats = compute_class_stats(self._features_of, batches, self.regularizer.num_classes,
                                            device=self.head.weight.device, name=type(self.model).__name__,
                                            progress=progress and rank() == 0,
                                            rows=None if self.sampling is None else self._cells)
        finally:
            self._stats_features = None
            for module, training in modes:
                module.training = training
        self.regularizer.init_from_stats(stats)
        return stats

    def restore_or_init(self, state: dict | None, make_loader: Callable[[], Iterable], batch_fn: BatchFn | None = None,
                        source: str | None = None) -> None:
        """Start of training: load ``state`` when a checkpoint gave one, else :meth:`init_from_data` unless initialised.

        Args:
            state: a :meth:`state_dict` of this regularizer, or None.
            make_loader: callable returning the training loader; called only when the statistics are computed.
            batch_fn: optional ``batch -> (inputs, labels)`` (see :meth:`init_from_data`).
            source: the file ``state`` was read from, named in its errors.

        Raises:
            adarand.prior.NonFinitePriorError: a prior with NaN/Inf in ``state`` (naming ``source``).
        """
        if state is not None:
            with naming_checkpoint(source):
                self.load_state_dict(state)
        elif not self.is_initialized:
            self.init_from_data(make_loader(), batch_fn)

    def _features_of(self, inputs):
        self._stats_features.clear()
        self.model(**inputs) if isinstance(inputs, dict) else self.model(inputs)
        if len(self._stats_features) != 1:
            raise RuntimeError(f"init_from_data: the model called its head {self.head_name!r} "
                               f"{len(self._stats_features)} times in one forward; expected once")
        return self._stats_features[0]

    def _cells(self, features, label_map):
        """Every cell of a dense head's features as a labelled row (the statistics' rows)."""
        labels = dense.cell_labels(label_map.to(features.device), features.shape[-2:], self.sampling.ignore_index)
        return dense.cell_rows(features, labels)

    def loss(self, labels: torch.Tensor) -> torch.Tensor:
        """``regularizer(f, labels)`` on the features ``f`` of the last forward (lambda included, with graph).

        Queues ``(f.detach(), labels)`` for the next :meth:`step`. A dense head's ``f`` and labels are the
        ``pixels_per_image`` cells per image drawn from the noise generator (:class:`adarand.dense.PixelSampling`).

        Args:
            labels: (B,) int64 class labels of that forward's batch (``IGNORE_INDEX`` rows take no part);
                for a dense head, its (B, H', W') integer label map (H' >= H, W' >= W; ``ignore_index`` pixels
                take no part).

        Returns:
            scalar, differentiable w.r.t. the model's parameters through ``f``.

        Raises:
            RuntimeError: no features kept (no forward with gradients since the last step, or the last
                forward ran under ``torch.no_grad()``), the prior not initialised, ``max_pending`` calls
                already waiting for a :meth:`step`, or after :meth:`remove`.
            ValueError: labels of another batch size, or those of the regularizer.
        """
        self._check_attached("loss")
        if self._features is None:
            raise RuntimeError(f"loss: no features of the head {self.head_name!r} to regularize: {self._dropped}")
        if len(self._queue) >= self.max_pending:
            raise RuntimeError(f"loss: {len(self._queue)} loss() calls without reg.step(): call reg.step() after "
                               "each optimizer step, else the prior never adapts (a fixed prior) and every batch's "
                               f"features are kept; to accumulate gradients over more than {self.max_pending} "
                               "micro-batches, pass a larger max_pending to adarand.attach")
        if not self.is_initialized:
            raise RuntimeError("loss: the prior is not initialised: call init_from_data(train_loader) first "
                               "(or load a checkpoint of this regularizer)")
        features, logits, weight = self._features, self._logits, self.head.weight
        self._follow(features)
        generator = self.noise_stream.generator(features.device)
        if self.sampling is not None:
            if features.dim() != 4 or labels.dim() != 3 or labels.shape[0] != features.shape[0] \
                    or labels.shape[1] < features.shape[2] or labels.shape[2] < features.shape[3]:
                raise ValueError(f"loss: the dense head {self.head_name!r} saw features of shape "
                                 f"{tuple(features.shape)}; expected a label map (B, H', W') with H' >= H, W' >= W; "
                                 f"got labels of shape {tuple(labels.shape)}")
            features, logits, labels, _ = self.sampling.rows(features, logits, labels, self.regularizer.num_classes,
                                                             generator)
            weight = weight.flatten(1)
        elif features.dim() != 2 or labels.shape[:1] != features.shape[:1]:
            raise ValueError(f"loss: the head {self.head_name!r} saw features of shape {tuple(features.shape)}; "
                             f"expected (B, D) for labels of shape {tuple(labels.shape)}")
        value = self.regularizer(features, labels, logits=logits, classifier_weight=weight)
        self._queue.append((features.detach(), labels))
        return value

    def step(self) -> torch.Tensor | None:
        """The regularizer's update (AdaRand: Eq. 14-15 running means, then one prior step, Eq. 11-13).

        Call it after the optimizer step, once per optimizer step; it uses the features and labels of
        every :meth:`loss` since the last step (concatenated), then forgets them.

        Returns:
            what ``regularizer.step`` returns (AdaRand: the prior loss before the update, detached; else None).

        Raises:
            RuntimeError: no :meth:`loss` since the last step, or after :meth:`remove`.
        """
        self._check_attached("step")
        if not self._queue:
            raise RuntimeError(f"step: no loss(labels) since the last step, so no features of the head "
                               f"{self.head_name!r} to update on ({self._dropped})")
        features, labels = zip(*self._queue)
        self._queue = []
        self._features = self._logits = None
        self._dropped = "no forward has run through the head since the last step()"
        if len(features) == 1:
            return self.regularizer.step(features[0], labels[0])
        return self.regularizer.step(torch.cat(features), torch.cat(labels))

    def on_epoch_end(self) -> None:
        """Close an epoch: ``regularizer.on_epoch_end()`` (PtR's switch; a collective under torch.distributed)."""
        self.regularizer.on_epoch_end()

    def remove(self) -> None:
        """Take the hook off the head and forget any kept features (idempotent).

        Returns:
            None.
        """
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
            _ATTACHED.pop(self.head, None)
        self._features = self._logits = None
        self._queue = []


def with_total_steps(method: str, options: dict[str, Any], total_steps: Callable[[], int | None]) -> dict[str, Any]:
    """``options`` with ``total_steps`` defaulting to ``total_steps()`` where ``method`` takes that option.

    Args:
        method: a regularizer name.
        options: ``{option: value}`` given for it (kept as given).
        total_steps: callable returning the run's optimizer steps (or None); called only when ``method``
            takes ``total_steps`` and ``options`` lacks it.

    Returns:
        a new ``{option: value}``.
    """
    defaults = select_options(regularizer_options(method), {"total_steps": total_steps})
    return {**{name: value() for name, value in defaults.items() if name not in options}, **options}


def attach(model: nn.Module, head: str | nn.Module | tuple, method: str = "adarand",
           num_classes: int | None = None, seed: int | None = None, max_pending: int = MAX_PENDING, *,
           ignore_index: int | None = None, pixels_per_image: int | None = None, balance: str | None = None,
           **options: Any) -> AttachedRegularizer:
    """AdaRand (or any of :func:`adarand.available_regularizers`) on ``model`` as it is.

    The regularizer is :func:`adarand.build_regularizer` ``(method, num_classes, D, **options)`` on the
    head's device (D: ``in_features`` / ``in_channels``); the features are the head's input, kept by a forward
    hook. A 1x1 ``nn.Conv2d`` head is dense: one row per cell of its input, labelled and drawn as
    :mod:`adarand.dense` says.
    Then: :meth:`~AttachedRegularizer.init_from_data` once (Eq. 9-10), and per step
    :meth:`~AttachedRegularizer.loss` (added to the task loss) and, after the optimizer step,
    :meth:`~AttachedRegularizer.step`.

    Args:
        model: any ``nn.Module`` (a DDP wrapper or a ``torch.compile``'d model too: the hook is on
            the head, which they share).
        head: the final classifier, a ``nn.Linear`` submodule of ``model``, or its dotted name
            (``"fc"``, ``"classifier.1"``, ``"head"``; timm: ``model.get_classifier()``); or a per-pixel
            classifier, a 1x1 ``nn.Conv2d`` (torchvision's DeepLabV3: ``"classifier.4"``).
        method: a regularizer name, default ``"adarand"``.
        num_classes: C; default ``head.out_features`` (``out_channels``).
        seed: seed of the regularizer's own noise stream (per rank); default ``torch.initial_seed()``.
        max_pending: the most :meth:`~AttachedRegularizer.loss` calls one
            :meth:`~AttachedRegularizer.step` may take (micro-batches of one optimizer step), default 256;
            one more is an error naming ``reg.step()``.
        ignore_index: dense heads only: the label maps' "no label" value, default 255 (VOC, torchvision).
        pixels_per_image: dense heads only: cells drawn per image per step, default
            :data:`adarand.dense.DEFAULT_PIXELS_PER_IMAGE`.
        balance: dense heads only: ``"class"`` (default) or ``"uniform"`` (:func:`adarand.dense.sample_pixels`).
        **options: the method's options (``lam``, ``alpha``, ``prior_lr``, ``total_steps``, ...; see
            :func:`adarand.regularizer_options`).

    Returns:
        :class:`AttachedRegularizer`.

    Raises:
        ValueError: a head name not found (the message lists the linear layers and 1x1 convolutions), a module
            that is not in ``model``, an unknown method or option, a pixel option for a linear head or a bad
            one, ``max_pending`` < 1. TypeError: a head that is neither ``nn.Linear`` nor a 1x1 ``nn.Conv2d`` (groups 1, stride 1).

    Example::

        reg = adarand.attach(model, "fc", total_steps=len(loader) * epochs)
        reg.init_from_data(loader)
    """
    name, module = _find_head(model, head)
    pixel_options: dict[str, Any] = {key: value for key, value in (("ignore_index", ignore_index), ("pixels_per_image",
                                     pixels_per_image), ("balance", balance)) if value is not None}
    if isinstance(module, nn.Linear) and pixel_options:
        raise ValueError(f"attach: {sorted(pixel_options)} apply to a dense head (a 1x1 Conv2d); the head {name!r} "
                         "is a Linear")
    sampling = dense.PixelSampling(**pixel_options) if isinstance(module, nn.Conv2d) else None
    feat_dim, outputs = _widths(module)
    num_classes = outputs if num_classes is None else num_classes
    regularizer = build_regularizer(method, num_classes, feat_dim, **options)
    regularizer.to(module.weight.device)
    return AttachedRegularizer(model, name, module, regularizer, seed, max_pending, sampling)

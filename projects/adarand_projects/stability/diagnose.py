"""Training diagnostics of the ROI box head: what each loss term does to it, per iteration.

:class:`BoxHeadProbe` is a Detectron2 hook. While training it records, every iteration,
into the trainer's ``EventStorage`` (keys ``probe/...``):

- ``grad_head/<loss>``: ``||d loss / d theta||_2`` over the box head's parameters theta,
  for every loss term of the model (``loss_cls``, ``loss_box_reg``, ``loss_adarand``; the
  RPN and mask terms do not reach the box head and read 0);
- ``grad_feat/<loss>``: ``||d loss / d F||_F`` for the box-head output F (N x D, all sampled ROIs);
- ``feat_norm`` / ``feat_sq``: mean row norm ``mean_i ||f_i||`` and mean square
  ``mean_{i,d} f_id^2`` of the regularized (foreground) rows; ``feat_active``: the fraction
  of their pre-ReLU values above 0 (1 - dead fraction);
- ``rois_regularized`` / ``rois_sampled``: the numbers of regularized and sampled ROIs;
- ``prior_norm``: mean row norm of the prior's means ``mu_c`` over its non-zero rows, and
  ``prior_sigma``: the mean of sigma over the same rows;
- ``loss/<loss>``: each loss term's value (also when it is not finite, unlike Detectron2's
  metrics, which stop at the first non-finite total).

:func:`run_diagnosis` trains one config with the probe and returns its per-iteration rows
and the iteration of divergence (Detectron2's ``FloatingPointError`` on a non-finite loss, or
the regularizer's error on non-finite features), or None.
"""
import math

import torch
from detectron2.engine import HookBase
from detectron2.utils.events import get_event_storage
from torch import nn

from adarand import IGNORE_INDEX

from adarand.detection.regularized import unwrap
from adarand.detection.roi_heads import box_regularizations

PREFIX = "probe/"


def _norm(grads):
    """Euclidean norm of a list of gradients (None = no path, counts as 0)."""
    sq = sum(float(g.double().pow(2).sum()) for g in grads if g is not None)
    return math.sqrt(sq)


def _last_linear(module):
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


class BoxHeadProbe(HookBase):
    """Records per-loss-term gradient norms into the box head and box-feature statistics."""

    def before_train(self):
        model = unwrap(self.trainer.model)
        branches = box_regularizations(model)
        self._box_head = model.roi_heads.box_head
        self._regularizer = branches[-1].regularizer if branches else None
        self._cache = {}
        handles = [
            self._box_head.register_forward_hook(self._keep("features")),
            model.register_forward_hook(self._measure),
        ]
        last = _last_linear(self._box_head)
        if last is not None:
            handles.append(last.register_forward_hook(self._keep("pre_activation")))
        if self._regularizer is not None:
            handles.append(self._regularizer.register_forward_pre_hook(self._keep_regularized))
        self._handles = handles

    def after_train(self):
        for h in self._handles:
            h.remove()
        self._cache = {}

    def _keep(self, name):
        def hook(module, inputs, output):
            if module.training:
                self._cache[name] = output
        return hook

    def _keep_regularized(self, module, inputs):
        if module.training:  # every sampled ROI, the others labelled IGNORE_INDEX
            features, labels = inputs[0], inputs[1]
            self._cache["regularized"] = features[labels != IGNORE_INDEX]

    def _measure(self, model, inputs, losses):
        if not (model.training and isinstance(losses, dict) and "features" in self._cache):
            return
        storage = get_event_storage()
        features = self._cache.pop("features")
        params = [p for p in self._box_head.parameters() if p.requires_grad]
        for name, loss in losses.items():
            storage.put_scalar(PREFIX + "loss/" + name, float(loss.detach()))
            head_norm = feat_norm = 0.0
            if loss.requires_grad:
                grads = torch.autograd.grad(loss, params + [features], retain_graph=True, allow_unused=True)
                head_norm, feat_norm = _norm(grads[:-1]), _norm(grads[-1:])
            storage.put_scalar(PREFIX + "grad_head/" + name, head_norm)
            storage.put_scalar(PREFIX + "grad_feat/" + name, feat_norm)
        self._put_feature_stats(storage, features)

    @torch.no_grad()
    def _put_feature_stats(self, storage, features):
        rows = self._cache.pop("regularized", None)
        pre = self._cache.pop("pre_activation", None)
        if rows is None:  # no regularizer: every sampled ROI
            rows = features.flatten(1)
        rows = rows.detach().double()
        storage.put_scalar(PREFIX + "rois_regularized", rows.shape[0])
        storage.put_scalar(PREFIX + "rois_sampled", features.shape[0])
        if rows.shape[0]:
            storage.put_scalar(PREFIX + "feat_norm", float(rows.norm(dim=1).mean()))
            storage.put_scalar(PREFIX + "feat_sq", float(rows.pow(2).mean()))
        if pre is not None:
            storage.put_scalar(PREFIX + "feat_active", float((pre.detach() > 0).double().mean()))
        prior = getattr(self._regularizer, "prior", None)
        if prior is not None:
            mu = prior.mu.detach().double()
            used = mu.abs().sum(dim=1) > 0
            if used.any():
                storage.put_scalar(PREFIX + "prior_norm", float(mu[used].norm(dim=1).mean()))
                storage.put_scalar(PREFIX + "prior_sigma", float(prior.sigma.detach().double()[used].mean()))


def probe_rows(storage):
    """Per-iteration dicts {iter, <probe key without prefix>: value} from an EventStorage."""
    rows = {}
    for key, history in storage.histories().items():
        if key.startswith(PREFIX):
            for value, it in history.values():
                rows.setdefault(int(it), {"iter": int(it)})[key[len(PREFIX):]] = value
    return [rows[k] for k in sorted(rows)]


def seeded_trainer(cfg, trainer_class=None):
    """A trainer (default ``AdaRandDetectionTrainer``) built and loaded after seeding every RNG with
    ``cfg.SEED`` (what ``default_setup`` does in ``tools/train_net.py``), prior initialised."""
    from detectron2.utils.env import seed_all_rng

    if trainer_class is None:
        from adarand.detection.trainer import AdaRandDetectionTrainer as trainer_class
    seed_all_rng(cfg.SEED)
    trainer = trainer_class(cfg)
    trainer.resume_or_load(resume=False)
    return trainer


def run_diagnosis(cfg, trainer_class=None, probe=True):
    """Train ``cfg`` (with a :class:`BoxHeadProbe` if ``probe``); return (rows, iteration of divergence or None).

    ``rows`` are the probe's per-iteration values (empty without the probe).
    """
    trainer = seeded_trainer(cfg, trainer_class)
    if probe:
        trainer.register_hooks([BoxHeadProbe()])
    diverged = None
    try:
        trainer.train()
    except (FloatingPointError, ValueError) as e:  # Detectron2's loss check; the regularizer's input check
        if isinstance(e, ValueError) and "NaN" not in str(e):
            raise
        diverged = trainer.iter
    return probe_rows(trainer.storage), diverged


def top_hessian_eigenvalue(loss_fn, params, iters=15, eps=1e-3, seed=0):
    """Largest-magnitude eigenvalue of the Hessian of ``loss_fn()`` w.r.t. ``params``.

    Power iteration on Hessian-vector products by central differences of the gradient,
    ``H v ~ (g(theta + eps v) - g(theta - eps v)) / (2 eps)``, so it works through ops without
    double backward (ROIAlign). ``loss_fn`` must be deterministic (fix the RNG inside it).
    Heavy-ball SGD (lr, momentum beta) is unstable along a direction whose curvature exceeds
    ``2 (1 + beta) / lr``.
    """
    def grad():
        g = torch.autograd.grad(loss_fn(), params, allow_unused=True)
        return [torch.zeros_like(p) if x is None else x for x, p in zip(g, params)]

    def shift(v, scale):
        with torch.no_grad():
            for p, x in zip(params, v):
                p.add_(x, alpha=scale)

    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen).to(p) for p in params]
    eig = 0.0
    for _ in range(iters):
        norm = torch.sqrt(sum(x.pow(2).sum() for x in v))
        v = [x / norm for x in v]
        shift(v, eps)
        plus = grad()
        shift(v, -2 * eps)
        minus = grad()
        shift(v, eps)
        hv = [(a - b) / (2 * eps) for a, b in zip(plus, minus)]
        eig = float(sum((a * b).sum() for a, b in zip(hv, v)))
        v = hv
    return eig


def loss_sharpness(trainer, terms=("loss_cls", "loss_adarand"), seed=0):
    """{"<term>/<group>": top Hessian eigenvalue} at the trainer's current weights, on one batch.

    Groups: the box head, and the backbone (bottom-up + FPN). Same batch, ROI sample and
    prior noise for every evaluation.
    """
    from detectron2.utils.events import EventStorage

    model = unwrap(trainer.model)
    model.train()
    data = next(trainer._trainer._data_loader_iter)
    groups = {"box_head": [p for p in model.roi_heads.box_head.parameters() if p.requires_grad],
              "backbone": [p for p in model.backbone.parameters() if p.requires_grad]}

    def loss_of(term):
        def fn():
            torch.manual_seed(seed)
            with EventStorage():
                return model(data)[term]
        return fn

    return {f"{term}/{name}": top_hessian_eigenvalue(loss_of(term), params, seed=seed)
            for term in terms for name, params in groups.items()}

"""``ClassificationTrainer``: fine-tuning an image classifier, in the shape of Detectron2's ``DefaultTrainer``.

    trainer = ClassificationTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()

``build_*`` class methods make the model, data, loaders, regularizer, baseline, optimizer and
scheduler from the config (override them to change one part); :meth:`run_step` is one step of
Eq. 1 with the prior step after the optimizer step (:meth:`prior_step`: the method itself, so it runs whatever
:meth:`build_hooks` returns); :meth:`build_hooks` returns the hooks of :mod:`adarand.classification.hooks` (LR
schedule, training metrics, validation, checkpointing, logging), which share ``self.storage``
(:class:`~adarand.classification.storage.TrainingStorage`); :meth:`test` evaluates a model.

Model selection never looks at the test split: with a validation split (VAL_FRACTION > 0)
the best validation epoch is kept; without one, the last epoch. The test split is evaluated
once, at the end of :meth:`train`, on that model; no per-epoch record holds a test metric.

Files in ``cfg.OUTPUT_DIR`` (:func:`adarand.classification.cli.train` claims the directory
and writes ``config.yaml``): ``class_stats.pt`` (pre-trained class statistics with the identity
of what produced them, reused when it matches), ``last.pth`` (everything needed to resume,
written atomically each epoch), ``best.pth`` (the selected model), ``metrics.jsonl`` +
``tensorboard/`` (per epoch: training and validation values only), ``features_test.pt`` (test
features of the selected model, for PCA), ``results.json``; ``log.txt`` (the log, written by the CLI).
"""
import contextlib
import logging
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

import adarand
from adarand.distributed import gather_objects, init_from_env, rank, world_size
from adarand.prior import naming_checkpoint
from adarand.seeding import AUGMENTATION, LOADER, NOISE, stream_seed

from . import build, hooks, solver
from .checkpoint import load_checkpoint, rng_state, set_rng_state
from .class_stats import class_stats
from .evaluation import Evaluation, evaluate
from .results import run_results, write_results
from .steps import FeaturesAndLogits, autocast, check_diverged, new_guard, set_train_mode, to_device
from .storage import StepOutputs, TrainingStorage

logger = logging.getLogger(__name__)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ClassificationTrainer:
    """Builds everything from a frozen config, trains in epochs of :meth:`run_step`, fires the hooks."""

    def __init__(self, cfg: CfgNode, progress: bool = True):
        self.cfg, self.progress = cfg, progress and rank() == 0
        self.device = init_from_env()
        self.rank, self.world = rank(), world_size()
        self.model, self.data = self.build_model_and_data(cfg, self.device)
        if self.device.type == "cuda" and cfg.CHANNELS_LAST:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.generator = torch.Generator()
        self.train_loader = self.build_train_loader(cfg, self.data.train, self.generator)
        self.val_loader = self.build_test_loader(cfg, self.data.val) if self.data.val is not None else None
        self.max_iter = cfg.SOLVER.EPOCHS * len(self.train_loader)
        self.regularizer = self.build_regularizer(cfg, self.data.num_classes, self.model.feat_dim,
                                                  self.max_iter).to(self.device)
        # the regularizer's noise has its own stream, so the data pipeline draws the same numbers whatever the method
        self.noise_generator = self.regularizer.noise_generator = torch.Generator(device=self.device)
        self.baseline = self.build_baseline(cfg, self.model)  # L2-SP / DELTA copy the starting weights here
        if self.baseline is not None:
            self.baseline.to(self.device)
        wrapped = FeaturesAndLogits(self.model)
        self.net = DistributedDataParallel(wrapped, device_ids=[self.device] if self.device.type == "cuda" else None) \
            if self.world > 1 else wrapped
        self.optimizer = self.build_optimizer(cfg, self.model)
        self.scheduler = self.build_lr_scheduler(cfg, self.optimizer, len(self.train_loader))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.device.type == "cuda" and cfg.AMP == "fp16")
        self.guard = new_guard(self.device)  # divergence flags on the device, checked before evaluation and saving
        self.start_epoch, self.epoch, self.inner_iter = 0, 0, 0
        self.storage = TrainingStorage()  # what the hooks share: step outputs, epoch records, the selected epoch
        # changes of the config on --resume, with their epoch (adarand.runs.resume)
        self.config_changes: list[dict[str, Any]] = []
        self._hooks: list[hooks.HookBase] = []
        self.register_hooks(self.build_hooks())

    # ---- builders (override one to change one part) -------------------------------------------------
    @classmethod
    def build_model_and_data(cls, cfg: CfgNode, device: torch.device) -> tuple[nn.Module, build.Data]:
        """The model on ``device``, initialised alike on every rank (seeded with SEED), and the data sized by
        the training split and normalised as the model's weights ask (INPUT.MEAN/STD when set); the set-up
        :func:`adarand.classification.cli.eval_only` shares."""
        seed_all(cfg.SEED)
        raw = build.raw_train_set(cfg)
        model = cls.build_model(cfg, raw.num_classes).to(device)
        return model, build.build_data(cfg, raw, *build.normalization(cfg, model))

    @classmethod
    def build_model(cls, cfg: CfgNode, num_classes: int) -> nn.Module:
        return build.build_model(cfg, num_classes)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode, dataset: Dataset, generator: torch.Generator) -> DataLoader:
        if len(dataset) == 0:
            raise ValueError(f"the training split of {cfg.DATASET.NAME!r} under {cfg.DATASET.ROOT!r} is empty")
        loader = build.train_loader(cfg, dataset, rank(), world_size(), generator)
        if len(loader) == 0:
            raise ValueError(f"DATALOADER.DROP_LAST leaves no training batch: {len(dataset)} training "
                             f"images < SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE}")
        return loader

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset: Dataset) -> DataLoader:
        return build.eval_loader(cfg, dataset, rank(), world_size())

    @classmethod
    def build_regularizer(cls, cfg: CfgNode, num_classes: int, feat_dim: int, total_steps: int) -> adarand.Regularizer:
        return build.build_regularizer(cfg, num_classes, feat_dim, total_steps)

    @classmethod
    def build_baseline(cls, cfg: CfgNode, model: nn.Module) -> nn.Module | None:
        return build.build_baseline(cfg, model)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        return solver.build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer, iters_per_epoch: int) -> Any:
        return solver.build_scheduler(cfg, optimizer, iters_per_epoch)

    def build_hooks(self) -> list[hooks.HookBase]:
        cfg = self.cfg
        return [hooks.LRScheduler(solver.schedule_per_iteration(cfg)),
                hooks.TrainingMetrics(cfg.LOG_PERIOD, cfg.DIAGNOSTICS, self.progress),
                hooks.Validation(cfg.DIAGNOSTICS), hooks.PeriodicCheckpointer(), hooks.MetricsWriter()]

    def register_hooks(self, hook_list: Iterable[hooks.HookBase | None]) -> None:
        """Append hooks (``None`` entries are skipped); they run in the order registered."""
        for hook in hook_list:
            if hook is not None:
                hook.trainer = self
                self._hooks.append(hook)

    # ---- state -------------------------------------------------------------------------------------
    def resume_or_load(self, resume: bool = True) -> None:
        """Initialise what starts from the data (class statistics, DELTA's attention: recomputed
        identically on resume), then continue from OUTPUT_DIR/last.pth when ``resume`` and it exists."""
        cfg = self.cfg
        if self.regularizer.needs_stats:
            self.regularizer.init_from_stats(class_stats(cfg, self.model, self.data, self.device, self.progress))
        if self.baseline is not None and self.baseline.needs_data:
            self.baseline.init_from_data(*build.baseline_data(cfg, self.data))
        self.seed_streams()
        last = os.path.join(cfg.OUTPUT_DIR, "last.pth")
        if resume and os.path.isfile(last):
            with naming_checkpoint(last):  # a prior with NaN/Inf is refused, naming the file
                self.load_checkpoint_state(load_checkpoint(last))  # CPU: RNG states must stay CPU tensors

    def seed_streams(self) -> None:
        """Each rank's augmentation (the global RNGs), loader workers and regularizer noise: one
        :func:`adarand.seeding.stream_seed` each of (SEED, rank), so no seed or rank repeats another's."""
        key = (self.cfg.SEED, self.rank)
        seed_all(stream_seed(AUGMENTATION, *key))
        self.generator.manual_seed(stream_seed(LOADER, *key))
        self.noise_generator.manual_seed(stream_seed(NOISE, *key))

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue after this epoch (every rank's RNG states: a collective)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "regularizer": self.regularizer.state_dict(), "rng": gather_objects(rng_state(self.generator, self.noise_generator)),
                "epoch": self.epoch, "best_top1": self.storage.best_top1, "best_epoch": self.storage.best_epoch,
                "history": self.storage.history}

    def load_checkpoint_state(self, ckpt: Mapping[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.regularizer.load_state_dict(ckpt["regularizer"])
        self.start_epoch = ckpt["epoch"] + 1
        self.storage.best_top1, self.storage.best_epoch = ckpt["best_top1"], ckpt["best_epoch"]
        self.storage.history = list(ckpt["history"])
        if len(ckpt["rng"]) != self.world:
            raise ValueError(f"checkpoint was written by {len(ckpt['rng'])} process(es), resumed with {self.world}")
        set_rng_state(ckpt["rng"][self.rank], self.generator, self.noise_generator)

    # ---- loop --------------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"epoch {self.epoch + 1}"

    def train(self) -> dict[str, Any]:
        """Epochs ``start_epoch .. SOLVER.EPOCHS - 1`` of :meth:`run_step`, then the single test
        evaluation of the selected model; returns the results (also written to results.json)."""
        self.before_train()
        try:
            for self.epoch in range(self.start_epoch, self.cfg.SOLVER.EPOCHS):
                self.before_epoch()
                for self.inner_iter, batch in enumerate(self.train_loader):
                    self.before_step()
                    try:
                        self.run_step(batch)
                        self.after_step()
                    except ValueError:  # e.g. the regularizer's NaN-feature check: name the divergence behind it
                        check_diverged(self.guard, self.where, self.model, self.regularizer)
                        raise
                check_diverged(self.guard, self.where, self.model, self.regularizer)
                self.after_epoch()
        finally:
            self.after_train()
        return self.test_selected_model()

    def before_epoch(self) -> None:
        self.train_loader.sampler.set_epoch(self.epoch)
        self.storage.open_epoch({"epoch": self.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]})
        set_train_mode(self.cfg, self.net, self.baseline)
        self._call_hooks("before_epoch")

    def before_train(self) -> None:
        self._call_hooks("before_train")

    def after_train(self) -> None:
        self._call_hooks("after_train")

    def after_epoch(self) -> None:
        """Close the regularizer's epoch (PtR's switch-on check) and put the epoch's mean prior loss in the
        record, then the hooks."""
        self.regularizer.on_epoch_end()
        self.storage.close_prior_loss()
        self._call_hooks("after_epoch")

    def before_step(self) -> None:
        self._call_hooks("before_step")

    def after_step(self) -> None:
        self._call_hooks("after_step")

    def run_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """One optimisation step of Eq. 1: CE + regularizer + baseline, optimizer step, then the prior step
        (:meth:`prior_step`); the detached outputs go to ``self.storage.step`` for the hooks."""
        images, labels = to_device(self.cfg, *batch, self.device)
        head = self.model.head.weight
        watch = self.baseline.watch(images) if self.baseline is not None else contextlib.nullcontext()
        with watch, autocast(self.cfg, self.device):
            features, logits = self.net(images)
        features, logits = features.float(), logits.float()
        ce = F.cross_entropy(logits, labels)
        reg_loss = self.regularizer(features, labels, logits=logits, classifier_weight=head)
        base_loss = self.baseline(features, labels, logits=logits, classifier_weight=head) \
            if self.baseline is not None else torch.zeros((), device=self.device)
        loss = ce + reg_loss + base_loss
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        out = self.storage.step = StepOutputs(loss.detach(), ce.detach(), reg_loss.detach(), base_loss.detach(),
                                              logits.detach(), features.detach(), labels)
        self.guard.update(self.epoch * len(self.train_loader) + self.inner_iter, *out[:4])
        self.prior_step(out.features, out.labels)

    def prior_step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """After the optimizer step, ``reg.step(features, labels)`` on the step's detached features (AdaRand: EMA
        of the class means, Eq. 14-15, then one prior update, Eq. 11-13); its loss is summed on the device
        for the epoch's ``adarand/prior_loss``. The detection plugin's ``AdaRandPriorHook`` makes the same
        call on the ROIs each box branch kept."""
        prior_loss = self.regularizer.step(features, labels)
        if prior_loss is not None:
            self.storage.put_prior_loss(prior_loss)

    def _call_hooks(self, event):
        for hook in self._hooks:
            getattr(hook, event)()

    # ---- evaluation --------------------------------------------------------------------------------
    @classmethod
    def test(cls, cfg: CfgNode, model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
             class_indices: Sequence[int] | None = None, keep_features: bool = False) -> Evaluation:
        """Top-1 and mean per-class accuracy of ``model`` on ``loader`` (an :class:`engine.Evaluation`)."""
        device = next(model.parameters()).device
        return evaluate(cfg, model, loader, num_classes, device, class_indices, keep_features=keep_features,
                        progress=False)

    def test_extra_sets(self) -> dict[str, float]:
        """``{test_top1@name, test_mean_class_acc@name}`` of the loaded model on DATASET.EXTRA_TESTS."""
        cfg, results = self.cfg, {}
        for name, dataset in build.extra_test_sets(cfg, *build.normalization(cfg, self.model)):
            test = self.test(cfg, self.model, self.build_test_loader(cfg, dataset), self.data.num_classes,
                             getattr(dataset, "imagenet_class_indices", None))
            results.update({f"test_top1@{name}": test.top1, f"test_mean_class_acc@{name}": test.mean_class_acc})
        return results

    def test_selected_model(self) -> dict[str, Any]:
        """Evaluate the selected model (best validation epoch, or the last) on the test split, once;
        write its features and results.json (:mod:`adarand.classification.results`)."""
        cfg, data = self.cfg, self.data
        best = load_checkpoint(os.path.join(cfg.OUTPUT_DIR, "best.pth"), map_location=self.device)
        self.model.load_state_dict(best["model"])
        test = self.test(cfg, self.model, self.build_test_loader(cfg, data.test), data.num_classes,
                         data.test_class_indices, keep_features=True)
        results = run_results(cfg, self.storage, best["epoch"], test, has_val=data.val is not None,
                              world=self.world, config_changes=self.config_changes)
        results.update(self.test_extra_sets())
        if self.rank == 0:
            write_results(cfg.OUTPUT_DIR, results, test, data.classes)
        return results

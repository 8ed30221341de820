"""The fit loop: set-up, class statistics, epochs, checkpoints, resume, final test.

Model selection never looks at the test split: with a validation split (VAL_FRACTION > 0)
the best validation epoch is kept; without one, the last epoch. The test split is evaluated
once, at the end, on that model; no per-epoch record holds a test metric.

Files in ``cfg.OUTPUT_DIR``: ``.lock`` (held while a process uses the directory),
``config.yaml`` (resolved config), ``class_stats.pt`` (pre-trained class statistics with
the identity of what produced them, reused when it matches), ``last.pth`` (everything needed
to resume, written atomically each epoch), ``best.pth`` (the selected model: best validation
epoch, or the last epoch), ``metrics.jsonl`` + ``tensorboard/`` (per epoch: training and
validation values only), ``features_test.pt`` (test features of the selected model, for
PCA), ``results.json``. A directory holds one run: a new (non-resume) run refuses a
directory that holds another run's checkpoint.
"""
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import adarand
from adarand.files import claim_output_dir, release_output_dir, save_torch, write_json, write_text
from adarand.stats_cache import load_or_compute_stats, state_dict_digest

from . import build
from .checkpoint import load_checkpoint, rng_state, set_rng_state
from .engine import FeaturesAndLogits, evaluate, new_guard, train_one_epoch, world
from .run_log import RunLog

CHECKPOINTS = ("last.pth", "best.pth")  # a directory holding one of them holds a run


def setup_distributed():
    """Join the ``torchrun`` group (env://) when WORLD_SIZE > 1; returns the device to use."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _gather_objects(obj):
    rank, size = world()
    if size == 1:
        return [obj]
    out = [None] * size
    dist.all_gather_object(out, obj)
    return out


def stats_identity(cfg, model, data):
    """What the class statistics depend on: extractor, its weights, the images and their transform."""
    d = cfg.DATASET
    return {"trainer": "classification", "backbone": cfg.MODEL.BACKBONE, "weights": cfg.MODEL.WEIGHTS,
            "checkpoint_format": cfg.MODEL.CHECKPOINT_FORMAT, "weights_sha256": state_dict_digest(model.backbone),
            "dataset": d.NAME, "root": os.path.abspath(d.ROOT), "split": "train", "fraction": d.FRACTION,
            "val_fraction": d.VAL_FRACTION, "split_seed": d.SEED, "num_images": len(data.train_eval),
            "transform": repr(data.train_eval.transform)}


def class_stats(cfg, model, data, device, rank, size):
    """Pre-trained class statistics over the training split (eval mode, eval transforms), cached in
    OUTPUT_DIR/class_stats.pt and reused only when produced by the same extractor, weights and data."""
    def compute():
        model.eval()
        loader = build.eval_loader(cfg, data.train_eval, rank, size)
        return adarand.compute_class_stats(model.features, loader, data.num_classes, device=device,
                                           name=cfg.MODEL.BACKBONE, progress=rank == 0)

    return load_or_compute_stats(os.path.join(cfg.OUTPUT_DIR, "class_stats.pt"), stats_identity(cfg, model, data),
                                 compute, num_classes=data.num_classes, feat_dim=model.feat_dim, save=rank == 0)


class Run:
    """Everything one training run holds; built from a frozen config."""

    def __init__(self, cfg, device):
        self.cfg, self.device = cfg, device
        self.rank, self.size = world()
        seed_all(cfg.SEED)  # identical model initialisation on every rank
        raw = build.raw_train_set(cfg)
        self.model = build.build_model(cfg, raw.num_classes).to(device)
        if device.type == "cuda" and cfg.CHANNELS_LAST:
            self.model = self.model.to(memory_format=torch.channels_last)
        mean, std = build.normalization(cfg, self.model)
        self.data = build.build_data(cfg, raw, mean, std)
        self.generator = torch.Generator()
        self.train_loader = build.train_loader(cfg, self.data.train, self.rank, self.size, self.generator)
        if len(self.data.train) == 0:
            raise ValueError(f"the training split of {cfg.DATASET.NAME!r} under {cfg.DATASET.ROOT!r} is empty")
        if len(self.train_loader) == 0:
            raise ValueError(f"DATALOADER.DROP_LAST leaves no training batch: {len(self.data.train)} training "
                             f"images < SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE}")
        self.val_loader = build.eval_loader(cfg, self.data.val, self.rank, self.size) \
            if self.data.val is not None else None
        total_steps = cfg.SOLVER.EPOCHS * len(self.train_loader)
        self.reg = build.build_regularizer(cfg, self.data.num_classes, self.model.feat_dim, total_steps).to(device)
        self.baseline = build.build_baseline(cfg, self.model)  # L2-SP / DELTA copy the starting weights here
        if self.baseline is not None:
            self.baseline.to(device)
        wrapped = FeaturesAndLogits(self.model)
        self.net = DistributedDataParallel(wrapped, device_ids=[device] if device.type == "cuda" else None) \
            if self.size > 1 else wrapped
        self.optimizer = build.build_optimizer(cfg, self.model)
        self.scheduler = build.build_scheduler(cfg, self.optimizer, len(self.train_loader))
        self.per_iteration = build.schedule_per_iteration(cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and cfg.AMP == "fp16")
        self.start_epoch, self.best_top1, self.best_epoch, self.history = 0, -1.0, -1, []
        self.guard = new_guard(device)  # divergence flags on the device, checked before evaluation and saving

    def checkpoint(self, epoch):
        rngs = _gather_objects(rng_state(self.generator))
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "regularizer": self.reg.state_dict(), "rng": rngs, "epoch": epoch,
                "best_top1": self.best_top1, "best_epoch": self.best_epoch, "history": self.history}

    def restore(self, ckpt):
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.reg.load_state_dict(ckpt["regularizer"])
        self.start_epoch, self.best_top1, self.best_epoch = ckpt["epoch"] + 1, ckpt["best_top1"], ckpt["best_epoch"]
        self.history = list(ckpt["history"])
        if len(ckpt["rng"]) != self.size:
            raise ValueError(f"checkpoint was written by {len(ckpt['rng'])} process(es), resumed with {self.size}")
        set_rng_state(ckpt["rng"][self.rank], self.generator)


def fit(cfg, resume=False, progress=True, epoch_callbacks=()):
    """Train, validate each epoch, test the selected model once; returns the results dict.

    ``epoch_callbacks`` are called as ``cb(epoch, run)`` after each epoch's checkpoint.
    """
    device = setup_distributed()
    rank, size = world()
    out = cfg.OUTPUT_DIR
    if rank == 0:
        claim_output_dir(out, resume, CHECKPOINTS)  # refuses another run's directory; held until exit
        write_text(os.path.join(out, "config.yaml"), cfg.dump())
    run = Run(cfg, device)
    if run.reg.needs_stats:
        run.reg.init_from_stats(class_stats(cfg, run.model, run.data, device, rank, size))
    if run.baseline is not None and run.baseline.needs_data:  # DELTA's attention, recomputed (identically) on resume
        run.baseline.init_from_data(*build.baseline_data(cfg, run.data))
    last = os.path.join(out, "last.pth")
    if resume and os.path.isfile(last):
        run.restore(load_checkpoint(last))  # CPU: RNG states must stay CPU tensors; load_state_dict moves the rest
    else:
        seed_all(cfg.SEED + rank)  # each rank draws its own noise and augmentation
        run.generator.manual_seed(cfg.SEED + rank)
    log = RunLog(out, run.history, enabled=rank == 0)
    for epoch in range(run.start_epoch, cfg.SOLVER.EPOCHS):
        run.train_loader.sampler.set_epoch(epoch)
        record = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"]}
        record.update(train_one_epoch(cfg, run.net, run.model, run.reg, run.baseline, run.train_loader,
                                      run.optimizer, run.scaler, device, epoch, progress and rank == 0,
                                      guard=run.guard,
                                      iteration_scheduler=run.scheduler if run.per_iteration else None))
        if not run.per_iteration:
            run.scheduler.step()
        if run.val_loader is not None:
            record.update(validate(cfg, run, epoch, out, rank))
        elif epoch + 1 == cfg.SOLVER.EPOCHS:  # no validation split: the last epoch is the selected model
            run.best_epoch = epoch + 1
            if rank == 0:
                save_torch({"model": run.model.state_dict(), "epoch": epoch + 1, "top1": None},
                            os.path.join(out, "best.pth"))
        run.history.append(record)
        state = run.checkpoint(epoch)
        if rank == 0:
            save_torch(state, last)
            log.log(record)
        for callback in epoch_callbacks:
            callback(epoch, run)
    log.close()
    results = finish(cfg, run, device, rank)
    if rank == 0:
        release_output_dir(out)  # a failed run keeps it until its process ends
    return results


def validate(cfg, run, epoch, out, rank):
    """Validation accuracy (and our Gaussian diagnostics) of this epoch; keeps the best model."""
    ev = evaluate(cfg, run.model, run.val_loader, run.data.num_classes, run.device,
                  keep_features=cfg.DIAGNOSTICS, progress=False)
    record = {"val_top1": ev.top1, "val_mean_class_acc": ev.mean_class_acc}
    if cfg.DIAGNOSTICS:
        weight = run.model.head.weight.detach().float().cpu()
        diag = adarand.feature_diagnostics(ev.features, ev.labels, run.data.num_classes,
                                           logits=ev.logits, classifier_weight=weight)
        record.update({f"val_{k}": v for k, v in diag.items()})
    if ev.top1 > run.best_top1:
        run.best_top1, run.best_epoch = ev.top1, epoch + 1
        if rank == 0:
            save_torch({"model": run.model.state_dict(), "epoch": epoch + 1, "top1": ev.top1},
                        os.path.join(out, "best.pth"))
    return record


def finish(cfg, run, device, rank):
    """Evaluate the selected model (best validation epoch, or the last) on the test split, once;
    write its features and results.json."""
    best = load_checkpoint(os.path.join(cfg.OUTPUT_DIR, "best.pth"), map_location=device)
    run.model.load_state_dict(best["model"])
    test = evaluate(cfg, run.model, build.eval_loader(cfg, run.data.test, run.rank, run.size),
                    run.data.num_classes, device, run.data.test_class_indices, keep_features=True, progress=False)
    history = run.history
    results = {
        "method": method_name(cfg), "dataset": cfg.DATASET.NAME, "backbone": cfg.MODEL.BACKBONE,
        "seed": cfg.SEED, "fraction": cfg.DATASET.FRACTION, "epochs": cfg.SOLVER.EPOCHS,
        "selection": "best_val_top1" if run.data.val is not None else "last_epoch",
        "best_epoch": best["epoch"], "val_top1": run.best_top1 if run.data.val is not None else None,
        "test_top1": test.top1, "test_mean_class_acc": test.mean_class_acc,
        "time_per_epoch_s": float(np.mean([r["epoch_time_s"] for r in history])) if history else None,
        "step_time_s": float(np.mean([r["step_time_s"] for r in history])) if history else None,
        "world_size": run.size,
    }
    if rank == 0:
        save_torch({"features": test.features, "labels": test.labels, "classes": run.data.classes},
                   os.path.join(cfg.OUTPUT_DIR, "features_test.pt"))
        write_json(os.path.join(cfg.OUTPUT_DIR, "results.json"), results)
    return results


def method_name(cfg):
    """Row label of the summary table: the regularizer, plus the baseline when one is used."""
    parts = [cfg.MODEL.ADARAND.METHOD] if cfg.MODEL.ADARAND.METHOD != "none" else []
    parts += [cfg.BASELINE.METHOD] if cfg.BASELINE.METHOD else []
    return "+".join(parts) or "ft"


def eval_only(cfg):
    """Evaluate a checkpoint of this trainer (TEST.WEIGHTS, default OUTPUT_DIR/best.pth) on the test split."""
    device = setup_distributed()
    rank, size = world()
    seed_all(cfg.SEED)
    raw = build.raw_train_set(cfg)
    model = build.build_model(cfg, raw.num_classes).to(device)
    data = build.build_data(cfg, raw, *build.normalization(cfg, model))
    path = cfg.TEST.WEIGHTS or os.path.join(cfg.OUTPUT_DIR, "best.pth")
    model.load_state_dict(load_checkpoint(path, map_location=device)["model"])
    test = evaluate(cfg, model, build.eval_loader(cfg, data.test, rank, size), data.num_classes, device,
                    data.test_class_indices)
    results = {"weights": path, "dataset": cfg.DATASET.NAME, "test_top1": test.top1,
               "test_mean_class_acc": test.mean_class_acc}
    if rank == 0:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        write_json(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), results)
    return results

"""Builders: config -> data, loaders, model, regularizer, baseline (the optimizer and schedule: ``solver.py``)."""
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fvcore.common.config import CfgNode
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

import adarand
from adarand.seeding import DATA_ORDER, stream_seed

from . import backbones, baselines, datasets, splits, transforms, weights


class TransformedSubset(Dataset):
    """``dataset[indices[i]]`` with ``transform`` applied to the image (one raw dataset, many views)."""

    def __init__(self, dataset: Any, indices: Iterable[int], transform: Callable[[Any], Any] | None):
        self.dataset, self.indices, self.transform = dataset, list(indices), transform
        self.targets = [dataset.targets[i] for i in self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        image, target = self.dataset[self.indices[i]]
        return self.transform(image), target


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...``: every sample on exactly one rank, no padding (evaluation)."""

    def __init__(self, length: int, rank: int = 0, world: int = 1):
        self.length, self.rank, self.world = length, rank, world

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world))

    def __len__(self):
        return len(range(self.rank, self.length, self.world))


class EpochShuffleSampler(DistributedSampler):
    """``DistributedSampler`` whose epoch order is a permutation seeded by ``stream_seed(DATA_ORDER, seed, epoch)``.

    ``DistributedSampler`` seeds with ``seed + epoch``, so (seed k, epoch e) repeats the order of
    (seed k + 1, epoch e - 1). Here every (seed, epoch) has its own stream (PCG64), every rank
    computes the same permutation, then takes its share as ``DistributedSampler`` does (padded by
    repeating the start). The order depends on (seed, epoch) only, so a resumed run continues it.
    """

    def __iter__(self):
        rng = np.random.default_rng(stream_seed(DATA_ORDER, self.seed, self.epoch))
        indices = rng.permutation(len(self.dataset)).tolist()
        if self.drop_last:
            indices = indices[:self.total_size]
        else:
            indices += (indices * (self.total_size // max(len(indices), 1) + 1))[:self.total_size - len(indices)]
        return iter(indices[self.rank:self.total_size:self.num_replicas])


@dataclass
class Data:
    train: Dataset  # training share, training transforms
    train_eval: Dataset  # the same images with eval transforms (class statistics)
    val: Dataset | None  # held-out share of the training set, eval transforms (None when VAL_FRACTION = 0)
    test: Dataset
    num_classes: int
    classes: list
    test_class_indices: list | None  # logits kept at test time (ImageNet-R/-A: 200 of 1000), None = all


def raw_train_set(cfg: CfgNode) -> Any:
    """The training split without transforms (its size and classes size the model)."""
    return datasets.build_dataset(cfg.DATASET.NAME, cfg.DATASET.ROOT, "train")


def build_data(cfg: CfgNode, raw: Any, mean: Sequence[float], std: Sequence[float]) -> Data:
    """Seeded per-class subset (DATASET.FRACTION) of ``raw``, then a seeded train/val split of it."""
    d = cfg.DATASET
    keep = list(range(len(raw.targets)))
    if d.FRACTION < 1.0:
        keep = list(splits.per_class_subset(raw.targets, d.FRACTION, seed=d.SEED))
    kept_targets = [raw.targets[i] for i in keep]
    if d.VAL_FRACTION > 0:
        train_pos, val_pos = splits.train_val_split(kept_targets, val_fraction=d.VAL_FRACTION, seed=d.SEED)
    else:
        train_pos, val_pos = range(len(keep)), []
    train_idx, val_idx = [keep[i] for i in train_pos], [keep[i] for i in val_pos]
    train_t = transforms.build_transforms(cfg.INPUT.AUGMENT, size=cfg.INPUT.SIZE, mean=mean, std=std)
    eval_t = transforms.build_transforms(False, size=cfg.INPUT.SIZE, mean=mean, std=std)
    test = datasets.build_dataset(d.NAME, d.ROOT, d.TEST_SPLIT, transform=eval_t)
    return Data(
        train=TransformedSubset(raw, train_idx, train_t),
        train_eval=TransformedSubset(raw, train_idx, eval_t),
        val=TransformedSubset(raw, val_idx, eval_t) if val_idx else None,
        test=test, num_classes=raw.num_classes, classes=list(raw.classes),
        test_class_indices=getattr(test, "imagenet_class_indices", None),
    )


def extra_test_sets(cfg: CfgNode, mean: Sequence[float], std: Sequence[float]) -> list[tuple[str, Dataset]]:
    """``[(name, test split)]`` of DATASET.EXTRA_TESTS ("name" beside DATASET.ROOT, or "name=ROOT"),
    with the evaluation transforms."""
    eval_t = transforms.build_transforms(False, size=cfg.INPUT.SIZE, mean=mean, std=std)
    sets = []
    for item in cfg.DATASET.EXTRA_TESTS:
        name, _, root = item.partition("=")
        root = root or os.path.join(os.path.dirname(os.path.normpath(cfg.DATASET.ROOT)), name)
        sets.append((name, datasets.build_dataset(name, root, "test", transform=eval_t)))
    return sets


def build_model(cfg: CfgNode, num_classes: int) -> backbones.ImageClassifier:
    m = cfg.MODEL
    weights.check_weights_file(m.WEIGHTS, m.BACKBONE, m.CHECKPOINT_FORMAT)
    return backbones.build_classifier(m.BACKBONE, num_classes, weights=m.WEIGHTS, checkpoint_format=m.CHECKPOINT_FORMAT)


def normalization(cfg: CfgNode, model: backbones.ImageClassifier) -> tuple[list[float], list[float]]:
    """INPUT.MEAN/STD when set, else the loaded weights' own normalisation."""
    mean = list(cfg.INPUT.MEAN) or list(model.input_mean)
    std = list(cfg.INPUT.STD) or list(model.input_std)
    return mean, std


def train_loader(cfg: CfgNode, dataset: Dataset, rank: int, world: int, generator: torch.Generator) -> DataLoader:
    """Shuffled, split over ranks (:class:`EpochShuffleSampler`, call ``sampler.set_epoch``): the order
    of each epoch is its own stream of the training ``SEED``, so training seeds differ in data order and no
    (seed, epoch) repeats another's. DATASET.SEED fixes only the subset and the split."""
    if cfg.SOLVER.BATCH_SIZE % world:
        raise ValueError(f"SOLVER.BATCH_SIZE = {cfg.SOLVER.BATCH_SIZE} is not divisible by {world} processes")
    sampler = EpochShuffleSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.SEED)
    return DataLoader(dataset, batch_size=cfg.SOLVER.BATCH_SIZE // world, sampler=sampler,
                      num_workers=cfg.DATALOADER.NUM_WORKERS, pin_memory=torch.cuda.is_available(),
                      generator=generator, persistent_workers=False, drop_last=cfg.DATALOADER.DROP_LAST)


def eval_loader(cfg: CfgNode, dataset: Dataset, rank: int, world: int, batch_size: int | None = None) -> DataLoader:
    """In order, each sample on one rank; its own generator so it never draws from the global RNG."""
    return DataLoader(dataset, batch_size=batch_size or cfg.TEST.BATCH_SIZE,
                      sampler=ShardSampler(len(dataset), rank, world),
                      num_workers=cfg.DATALOADER.NUM_WORKERS, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(0))


def build_regularizer(cfg: CfgNode, num_classes: int, feat_dim: int, total_steps: int) -> adarand.Regularizer:
    """The core regularizer MODEL.ADARAND.METHOD (:func:`adarand.build_regularizer_from_config`)."""
    return adarand.build_regularizer_from_config(cfg.MODEL.ADARAND, num_classes, feat_dim, total_steps)


def build_baseline(cfg: CfgNode, model: nn.Module) -> baselines.Baseline | None:
    """The baseline BASELINE.METHOD for ``model`` with the options it accepts (None for "")."""
    b = cfg.BASELINE
    if not b.METHOD:
        return None
    values = {"alpha": b.ALPHA, "beta": b.BETA, "layers": list(b.DELTA_LAYERS), "attention": b.DELTA_ATTENTION,
              "scale": b.DELTA_SCALE, "bn_stats": b.DELTA_ATTENTION_BN, "eta": b.BSS_ETA, "k": b.BSS_K}
    options = adarand.select_options(baselines.baseline_options(b.METHOD), values)
    return baselines.build_baseline(b.METHOD, model, **options)


def baseline_data(cfg: CfgNode, data: Data) -> tuple[DataLoader, DataLoader]:
    """``(fit_batches, probe_batches)`` for ``baseline.init_from_data``: every training image in an
    order drawn with DATASET.SEED (BatchNorm statistics estimated on these batches see mixed classes),
    and the first BASELINE.DELTA_ATTENTION_IMAGES of that order; eval transforms, and the whole set in
    every process (each rank computes the same result, no communication)."""
    generator = torch.Generator().manual_seed(cfg.DATASET.SEED)
    order = torch.randperm(len(data.train_eval), generator=generator).tolist()
    return (eval_loader(cfg, Subset(data.train_eval, order), 0, 1),
            eval_loader(cfg, Subset(data.train_eval, order[:cfg.BASELINE.DELTA_ATTENTION_IMAGES]), 0, 1))

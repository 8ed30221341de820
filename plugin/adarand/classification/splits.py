"""Which images of a training set a run uses: a seeded per-class subset (:func:`per_class_subset`,
DATASET.FRACTION) and a seeded stratified train/validation split of it (:func:`train_val_split`,
DATASET.VAL_FRACTION), both drawn with DATASET.SEED (the readers: :mod:`adarand.classification.datasets`)."""
import math
from collections.abc import Sequence

import numpy as np


def _by_class(targets):
    targets = np.asarray(targets, dtype=np.int64)
    return [np.flatnonzero(targets == c) for c in np.unique(targets)]


def train_val_split(targets: Sequence[int], val_fraction: float = 0.1,
                    seed: int = 0) -> tuple[Sequence[int], Sequence[int]]:
    """Seeded stratified split with ``round(val_fraction * N)`` validation images in total.

    Largest-remainder apportionment over classes: class c gets ``floor(val_fraction * n_c)``
    images, and the images still missing to reach the total (``val_fraction * N`` rounded half
    up) go one each to the classes with the largest remainders ``val_fraction * n_c - floor``
    (ties in a seeded random order). A class never gives all of its images, so a class of one
    image stays in training. Raises ``ValueError`` when ``val_fraction > 0`` but no image can
    be held out (the trainer would otherwise have no validation split to select with).
    Returns sorted ``(train_indices, val_indices)``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction = {val_fraction}; expected 0 <= x < 1")
    rng = np.random.default_rng(seed)
    classes = _by_class(targets)
    quotas = [val_fraction * len(members) for members in classes]
    counts = [int(math.floor(q)) for q in quotas]
    missing = int(math.floor(val_fraction * len(targets) + 0.5)) - sum(counts)
    tie_break = rng.permutation(len(classes))
    for c in sorted(range(len(classes)), key=lambda c: (counts[c] - quotas[c], tie_break[c])):
        if missing <= 0:
            break
        if counts[c] + 1 < len(classes[c]):  # never the whole class
            counts[c] += 1
            missing -= 1
    if val_fraction > 0 and sum(counts) == 0:
        raise ValueError(
            f"DATASET.VAL_FRACTION = {val_fraction} leaves no validation image out of {len(targets)} training "
            f"images in {len(classes)} classes (round({val_fraction} * {len(targets)}) = 0, or every class has a "
            "single image); raise VAL_FRACTION, or set it to 0 to keep the last epoch's model")
    train, val = [], []
    for members, n_val in zip(classes, counts):
        order = rng.permutation(members)
        val.extend(order[:n_val].tolist())
        train.extend(order[n_val:].tolist())
    return sorted(train), sorted(val)


def per_class_subset(targets: Sequence[int], fraction: float, seed: int = 0) -> list[int]:
    """Seeded per-class sample keeping max(1, round(fraction * n_c)) indices of each class (sorted)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction = {fraction}; expected 0 < x <= 1")
    rng = np.random.default_rng(seed)
    keep = []
    for members in _by_class(targets):
        n_keep = max(1, int(round(fraction * len(members))))
        keep.extend(rng.permutation(members)[:n_keep].tolist())
    return sorted(keep)

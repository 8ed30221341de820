"""Class-wise statistics of a pre-trained extractor's features (AdaRand Eq. 9-10).

One streaming pass accumulates, in float64, per-class sums, sums of squares and
counts; features are never all held in memory. Under torch.distributed the sums and
counts (never the means) are all-reduced, so every rank gets the statistics of the
whole dataset. Standard deviations are population ones (divide by N): a class seen
once has std 0, so its prior draws exactly its one feature vector.
"""
from dataclasses import dataclass, field
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from .ops.common import IGNORE_INDEX
from .distributed import all_reduce_sum_
from .files import load_torch, save_torch
from .checks import check_finite

FORMAT_VERSION = 1


@dataclass
class ClassStats:
    """Per-class mean/std (C x D), class-agnostic mean/std (D), samples per class (C).

    ``mu_c`` and ``sigma_c`` of Eq. 9-10 (population std: a single-sample class gets std 0).
    Built by :func:`compute_class_stats` / :meth:`from_sums`, or read by :meth:`load`.

    Args:
        mean, std, count, global_mean, global_std: the tensors below.
        extractor: name of the feature extractor. meta: plain-data metadata (identity of the run).

    Shape:
        - mean, std: (C, D), float32; count: (C,), int64; global_mean, global_std: (D,), float32
    """

    mean: torch.Tensor
    std: torch.Tensor
    count: torch.Tensor
    global_mean: torch.Tensor
    global_std: torch.Tensor
    extractor: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.mean.shape[0]

    @property
    def feat_dim(self) -> int:
        return self.mean.shape[1]

    @classmethod
    def from_sums(cls, sums: torch.Tensor, sq_sums: torch.Tensor, counts: torch.Tensor, extractor: str = "",
                  meta: dict | None = None, allow_missing: bool = False) -> "ClassStats":
        """Build from float64 per-class sums (C x D), squared sums (C x D) and counts (C).

        A class without samples is an error, unless ``allow_missing``: then its mean and
        std are 0. Such a class never appears as a label, so its prior row is never
        sampled, and a zero row gets zero gradient from L_mean and L_dist: it stays put
        and does not push the other classes.

        Args:
            sums, sq_sums: (C, D) float64. counts: (C,). extractor: a name recorded with the
            statistics. meta: a dict stored with them (e.g. the identity of what produced them).
            allow_missing: accept classes without samples (mean and std 0).

        Returns:
            :class:`ClassStats`: float32 means/stds, int64 counts.

        Raises:
            ValueError: a class without samples (unless ``allow_missing``), or no sample at all.
        """
        missing = (counts == 0).nonzero().flatten().tolist()
        if missing and not allow_missing:
            raise ValueError(f"no sample of class(es) {missing}: every class needs at least one sample")
        if counts.sum() == 0:
            raise ValueError("no sample of any class")
        per_class = counts.clamp(min=1).to(sums.dtype)[:, None]
        mean = sums / per_class
        std = (sq_sums / per_class - mean.pow(2)).clamp(min=0).sqrt()
        total = counts.sum().to(sums.dtype)
        global_mean = sums.sum(0) / total
        global_std = (sq_sums.sum(0) / total - global_mean.pow(2)).clamp(min=0).sqrt()
        return cls(mean.float(), std.float(), counts.long(), global_mean.float(), global_std.float(),
                   extractor, dict(meta or {}))

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "num_classes": self.num_classes,
            "feat_dim": self.feat_dim,
            "extractor": self.extractor,
            "meta": self.meta,
            **{k: getattr(self, k).cpu() for k in ("mean", "std", "count", "global_mean", "global_std")},
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (unique temporary file, fsync, rename): a crash never leaves half a file.

        Args:
            path: the file; read back with :meth:`load` (plain tensors and types: ``weights_only``).

        Returns:
            None.
        """
        save_torch(self.to_dict(), path)

    def check_size(self, path: str | os.PathLike, num_classes: int | None = None, feat_dim: int | None = None) -> None:
        """Raise unless these statistics have C = ``num_classes`` and D = ``feat_dim`` (None: not checked).

        Args:
            path: the file they came from (named in the error). num_classes, feat_dim: expected C and D.

        Raises:
            ValueError: ``"<path>: statistics have num_classes=<C>, expected <want>"`` (or ``feat_dim``).
        """
        for name, want, got in (("num_classes", num_classes, self.num_classes), ("feat_dim", feat_dim, self.feat_dim)):
            if want is not None and want != got:
                raise ValueError(f"{path}: statistics have {name}={got}, expected {want}")

    @classmethod
    def load(cls, path: str | os.PathLike, num_classes: int | None = None,
             feat_dim: int | None = None) -> "ClassStats":
        """Read a file written by :meth:`save`, checking C and D when given.

        Args:
            path: the file. num_classes, feat_dim: expected C and D (None: not checked).

        Returns:
            :class:`ClassStats`, the tensors on the CPU as saved.

        Raises:
            ValueError: naming ``path``: not a statistics file, truncated, an entry missing, other
                C or D, a non-finite mean/std or a negative std. :class:`adarand.files.UnsafeFileError`: a
                pickled payload.
        """
        data = load_torch(path, what="class statistics file")
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} is not an AdaRand class-statistics file (format {FORMAT_VERSION})")
        try:
            stats = cls(data["mean"], data["std"], data["count"], data["global_mean"], data["global_std"],
                        data["extractor"], data["meta"])
        except KeyError as err:
            raise ValueError(f"{path}: class-statistics file without the entry {err}") from None
        stats.check_size(path, num_classes, feat_dim)
        for name in ("mean", "std", "global_mean", "global_std"):
            check_finite(f"{path}: {name}", getattr(stats, name))
        for name in ("std", "global_std"):
            if (getattr(stats, name) < 0).any():
                raise ValueError(f"{path}: class-statistics file with a negative {name} (a standard deviation "
                                 "is >= 0): corrupt or not written by adarand")
        return stats


class ClassStatsAccumulator:
    """Float64 per-class sums, squared sums and counts, fed batch by batch.

    Args:
        num_classes: C.
        device: recorded only; the sums live on the device of the first batch's features.

    Shape (``update(features, labels)``):
        - features: (B, D); labels: (B,) int64; sums, sq_sums: (C, D), float64; counts: (C,), float64
    """

    def __init__(self, num_classes: int, device: torch.device | str | None = None):
        self.num_classes, self.device = num_classes, device
        # (C, D), (C, D), (C,) float64 tensors from the first batch on
        self.sums: Any = None
        self.sq_sums: Any = None
        self.counts: Any = None

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch (rows labelled ``IGNORE_INDEX`` are skipped; reads values back: not for a training step).

        Args:
            features: (B, D), finite. labels: (B,) int64 in [0, C) or ``IGNORE_INDEX``.

        Returns:
            None.

        Raises:
            ValueError: features not 2-D, non-finite, a changed D, or labels outside [0, C).
        """
        if features.dim() != 2:
            raise ValueError(f"the extractor must return (batch, dim) features; got {tuple(features.shape)}")
        kept = labels != IGNORE_INDEX  # ignored rows are not counted (not on the training step: may sync)
        features, labels = features[kept.to(features.device)], labels[kept]
        check_finite("features", features)
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}); got [{labels.min()}, {labels.max()}]")
        z = features.double()
        if self.sums is None:
            shape = (self.num_classes, z.shape[1])
            self.sums = z.new_zeros(shape)
            self.sq_sums = z.new_zeros(shape)
            self.counts = torch.zeros(self.num_classes, dtype=torch.float64, device=z.device)
        elif z.shape[1] != self.sums.shape[1]:
            raise ValueError(f"feature dimension changed from {self.sums.shape[1]} to {z.shape[1]}")
        labels = labels.to(z.device)
        self.sums.index_add_(0, labels, z)
        self.sq_sums.index_add_(0, labels, z * z)
        self.counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))

    def finalize(self, extractor: str = "", meta: dict | None = None, allow_missing: bool = False) -> ClassStats:
        """All-reduce (when distributed) and build the statistics; see ClassStats.from_sums.

        Args:
            extractor, meta, allow_missing: as in :meth:`ClassStats.from_sums`.

        Returns:
            :class:`ClassStats`.

        Raises:
            ValueError: no batch was seen, or those of :meth:`ClassStats.from_sums`.
        """
        if self.sums is None:
            raise ValueError("no features were seen: the data loader is empty")
        all_reduce_sum_(self.sums, self.sq_sums, self.counts)
        return ClassStats.from_sums(self.sums, self.sq_sums, self.counts, extractor, meta, allow_missing)


def _to_device(inputs, device):
    """``inputs`` on ``device``: a tensor, or the tensors of a dict (nested); anything else as it is."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    if isinstance(inputs, dict):
        return {key: _to_device(value, device) for key, value in inputs.items()}
    return inputs


@torch.no_grad()
def compute_class_stats(extractor: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, num_classes: int,
                        device: torch.device | str | None = None, name: str | None = None,
                        progress: bool = True, rows: Callable | None = None) -> ClassStats:
    """Per-class mean/std of ``extractor(images)`` over ``loader`` (batches of (images, labels)).

    ``extractor`` is called as is (put a network in eval mode first so BatchNorm
    statistics are untouched). ``name`` is recorded in the file's metadata.

    Args:
        extractor: callable, (B, 3, H, W) images -> (B, D) features.
        loader: iterable of (images, labels) batches; under torch.distributed each rank's share
            (the sums are all-reduced).
        num_classes: C. device: where images go, a tensor or a dict's tensors (None: as they come).
        name: recorded as the statistics' ``extractor`` (None: the extractor's class name).
        progress: a progress bar.
        rows: optional ``(features, labels) -> (features (N, D), labels (N,))`` applied to each batch, e.g.
            a dense head's cells (:func:`adarand.dense.cell_rows`); None: the extractor returns rows.

    Returns:
        :class:`ClassStats`.

    Raises:
        ValueError: an empty loader, a class without samples, or those of
            :meth:`ClassStatsAccumulator.update`.
    """
    acc = ClassStatsAccumulator(num_classes)
    for images, labels in tqdm(loader, desc="class statistics", disable=not progress, leave=False):
        if device is not None:
            images = _to_device(images, device)
        features, labels = extractor(images), torch.as_tensor(labels)
        acc.update(*(rows(features, labels) if rows is not None else (features, labels)))
    name = name if name is not None else type(extractor).__name__
    return acc.finalize(extractor=name)

"""AdaRand on per-pixel features: the rows of a dense head (a 1x1 convolution over B x D x H x W features).

Each cell (h, w) of the H x W feature grid is one row of Eq. 1-3 and of the statistics (Eq. 9-10). Its
label is the ground truth at the cell's centre, read from a label map of any resolution H' x W' with
H' >= H, W' >= W (nearest): row ``floor((h + 1/2) H' / H)``, column ``floor((w + 1/2) W' / W)``,
computed in integers as ``((2h + 1) H') // (2H)`` (PyTorch's ``nearest-exact`` rule, without its float
scale). Cells whose label is the head's ignore value become :data:`adarand.IGNORE_INDEX` rows, kept in
place. A training step regularizes a fixed number of cells per image, drawn on the device without
replacement (Gumbel top-k on exponential keys: fixed shapes, no host sync), uniformly or class-balanced.

The functions are pure (the generator is the only state), so any dense head can reuse them.
"""
from dataclasses import dataclass

import torch

from .ops.common import IGNORE_INDEX, active_rows

__all__ = ["PixelSampling", "cell_labels", "cell_rows", "centre_index", "gather_pixels", "sample_pixels"]

BALANCES = ("uniform", "class")
DEFAULT_IGNORE_INDEX = 255  # VOC's and torchvision's segmentation ignore value
DEFAULT_PIXELS_PER_IMAGE = 256  # docs/library.md, "Dense heads", says how it was chosen


def centre_index(size: int, source_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Index into ``source_size`` ground-truth pixels of the centre of each of ``size`` cells (one axis).

    Args:
        size: cells on the axis (H). source_size: ground-truth pixels on it (H' >= H). device: of the result.

    Returns:
        (size,) int64, ``((2i + 1) * source_size) // (2 * size)`` = ``floor((i + 1/2) * source_size / size)``.
    """
    return (torch.arange(size, device=device) * 2 + 1) * source_size // (2 * size)


def cell_labels(label_map: torch.Tensor, size: tuple[int, int],
                ignore_index: object = DEFAULT_IGNORE_INDEX) -> torch.Tensor:
    """The label of each feature cell: the ground truth at its centre, ``ignore_index`` mapped to IGNORE_INDEX.

    Args:
        label_map: (B, H', W') integer ground truth (any integer dtype, e.g. uint8 masks).
        size: (H, W), the feature grid, H <= H' and W <= W'.
        ignore_index: the ground truth's "no label" value (None: none).

    Returns:
        (B, H, W) int64 on the label map's device; cells on an ``ignore_index`` pixel hold ``IGNORE_INDEX``.

    Raises:
        ValueError: a label map that is not (B, H', W') integers, or coarser than the grid.
    """
    height, width = size
    if label_map.dim() != 3 or label_map.dtype.is_floating_point or label_map.dtype == torch.bool \
            or label_map.is_complex():
        raise ValueError(f"the label map must be (B, H', W') integers; got {tuple(label_map.shape)} {label_map.dtype}")
    if label_map.shape[1] < height or label_map.shape[2] < width:
        raise ValueError(f"the label map ({label_map.shape[1]} x {label_map.shape[2]}) is coarser than the feature "
                         f"grid ({height} x {width}): give the ground truth at least at the grid's resolution")
    rows = centre_index(height, label_map.shape[1], label_map.device)
    cols = centre_index(width, label_map.shape[2], label_map.device)
    labels = label_map.index_select(1, rows).index_select(2, cols).long()
    if ignore_index is None:
        return labels
    return torch.where(labels == ignore_index, torch.full_like(labels, IGNORE_INDEX), labels)


def cell_rows(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every cell as a row: ``(B*H*W, D)`` features and ``(B*H*W,)`` labels, cells in (b, h, w) order.

    Args:
        features: (B, D, H, W). labels: (B, H, W), e.g. from :func:`cell_labels`.

    Returns:
        ``(rows, labels)``: (B*H*W, D) (a copy) and (B*H*W,).
    """
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]), labels.reshape(-1)


def sample_pixels(labels: torch.Tensor, pixels_per_image: int, num_classes: int, balance: str = "uniform",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``P = min(pixels_per_image, N)`` distinct cells per image on the device, no host sync.

    Weights: ``uniform`` gives every labelled cell weight 1; ``class`` gives a cell of class c weight
    ``1 / n_c`` (n_c: cells of class c in that image), so each class present gets an equal expected
    share. Labels outside [0, C) that are not IGNORE_INDEX share one extra bucket (they are drawn, so the
    regularizer counts or refuses them). IGNORE_INDEX cells have weight 0: drawn only when an image has
    fewer than P labelled cells (then all its labelled cells are drawn once, and the rest are ignored rows).
    The draw is the top P of ``w / E``, E ~ Exp(1) per cell (Gumbel top-k: sampling without
    replacement proportional to w), from ``generator`` only.

    Args:
        labels: (B, N) int64 cell labels (IGNORE_INDEX for ignored cells).
        pixels_per_image: P requested, >= 1. num_classes: C. balance: ``uniform`` or ``class``.
        generator: the ``torch.Generator`` of the draw (None: torch's global RNG).

    Returns:
        (B, P) int64 indices into N, distinct within an image.
    """
    batch, cells = labels.shape
    valid = labels != IGNORE_INDEX
    weights = valid.float()
    if balance == "class":
        bucket = torch.where(active_rows(labels, num_classes), labels, torch.full_like(labels, num_classes))
        counts = torch.zeros(batch, num_classes + 1, device=labels.device).scatter_add_(1, bucket, weights)
        weights = weights / counts.gather(1, bucket).clamp(min=1)
    elif balance != "uniform":
        raise ValueError(f"unknown balance {balance!r}; choose one of {BALANCES}")
    exponential = torch.empty(batch, cells, device=labels.device).exponential_(generator=generator)
    keys = torch.where(valid, weights / exponential, torch.full_like(weights, -1.0))
    return keys.topk(min(pixels_per_image, cells), dim=1).indices


def gather_pixels(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The cells ``index`` of each image of ``maps`` as rows (differentiable; distinct indices, so its backward
    adds nothing twice).

    Args:
        maps: (B, K, H, W), e.g. features or logits. index: (B, P) indices into H*W.

    Returns:
        (B*P, K), image-major.
    """
    flat = maps.flatten(2)
    picked = flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1))
    return picked.transpose(1, 2).reshape(-1, flat.shape[1])


@dataclass(frozen=True)
class PixelSampling:
    """How a dense head's rows are chosen for the loss and the prior's update.

    Args:
        ignore_index: the label maps' "no label" value (None: none).
        pixels_per_image: cells drawn per image, >= 1.
        balance: ``uniform`` or ``class`` (see :func:`sample_pixels`).

    Raises:
        ValueError: ``pixels_per_image`` < 1 or not an int, an unknown ``balance``.
    """

    ignore_index: object = DEFAULT_IGNORE_INDEX
    pixels_per_image: int = DEFAULT_PIXELS_PER_IMAGE
    balance: str = "class"

    def __post_init__(self):
        if isinstance(self.pixels_per_image, bool) or not isinstance(self.pixels_per_image, int) \
                or self.pixels_per_image < 1:
            raise ValueError(f"pixels_per_image must be an int >= 1; got {self.pixels_per_image!r}")
        if self.balance not in BALANCES:
            raise ValueError(f"unknown balance {self.balance!r}; choose one of {BALANCES}")
        if self.ignore_index is not None and (isinstance(self.ignore_index, bool)
                                              or not isinstance(self.ignore_index, int)):
            raise ValueError(f"ignore_index must be an int or None; got {self.ignore_index!r}")

    def rows(self, features: torch.Tensor, logits: torch.Tensor | None, label_map: torch.Tensor, num_classes: int,
             generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """The drawn rows of a forward: ``(features, logits, labels, index)``.

        Args:
            features: (B, D, H, W). logits: (B, K, H, W) or None. label_map: (B, H', W').
            num_classes: C. generator: the draw's ``torch.Generator``.

        Returns:
            (B*P, D) features, (B*P, K) logits (None when None), (B*P,) int64 labels, (B, P) cell indices.
        """
        labels = cell_labels(label_map.to(features.device, non_blocking=True), features.shape[-2:],
                             self.ignore_index).flatten(1)
        index = sample_pixels(labels, self.pixels_per_image, num_classes, self.balance, generator)
        picked = labels.gather(1, index).reshape(-1)
        return (gather_pixels(features, index), None if logits is None else gather_pixels(logits, index),
                picked, index)

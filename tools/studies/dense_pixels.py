#!/usr/bin/env python
"""How many cells per image should a dense head regularize? Cost against estimate noise.

    OMP_NUM_THREADS=1 python tools/studies/dense_pixels.py [--cells 64] [--dim 256] [--batch 8]

On a synthetic batch shaped like a DeepLab/Semantic-FPN head's input (B x D x H x W, VOC-like label maps:
about 70 % background, a few rectangles of 20 classes, a 255 border), for each ``pixels_per_image`` P and
both balances, prints: the loss's relative spread over draws (std / mean, the prior's own noise included),
the same for every cell (P = all: the floor), the error of the smallest class's batch mean (what Eq. 14
averages) relative to its all-cells mean, in units of the class's feature std, and the time of one
``loss + backward + step`` on this machine. The last line is the same as JSON.
"""
import argparse
import copy
import json
import statistics
import time

import torch

import adarand

CLASSES = 21


def make_batch(batch, dim, cells, seed=0):
    """Features clustered by class (B, D, H, W) and a label map at 8x the grid's resolution."""
    g = torch.Generator().manual_seed(seed)
    size = cells * 8
    label_map = torch.zeros(batch, size, size, dtype=torch.int64)
    for b in range(batch):
        for _ in range(3):
            c = int(torch.randint(1, CLASSES, (), generator=g))
            h, w = (int(v) for v in torch.randint(size // 16, size // 3, (2,), generator=g))
            top, left = (int(v) for v in torch.randint(0, size - max(h, w), (2,), generator=g))
            label_map[b, top:top + h, left:left + w] = c
    label_map[:, :size // 32] = 255
    cell = adarand.dense.cell_labels(label_map, (cells, cells)).clamp(min=0)
    centres = torch.randn(CLASSES, dim, generator=g)
    features = centres[cell].permute(0, 3, 1, 2) + 0.5 * torch.randn(batch, dim, cells, cells, generator=g)
    return features.contiguous(), label_map


def measure(features, label_map, pixels, balance, draws=10):
    """(loss spread, smallest class's mean error in stds, seconds per loss+backward+step)."""
    batch, dim = features.shape[:2]
    rows, labels = adarand.dense.cell_rows(features, adarand.dense.cell_labels(label_map, features.shape[-2:]))
    stats = adarand.ClassStatsAccumulator(CLASSES)
    stats.update(rows, labels)
    present = stats.counts > 0
    smallest = int(torch.where(present, stats.counts, torch.full_like(stats.counts, float("inf"))).argmin())
    full_mean = stats.sums[smallest] / stats.counts[smallest]
    std = (stats.sq_sums[smallest] / stats.counts[smallest] - full_mean ** 2).clamp(min=1e-12).sqrt().mean()
    sampling = adarand.dense.PixelSampling(pixels_per_image=pixels, balance=balance)
    reg = adarand.build_regularizer("adarand", CLASSES, dim, total_steps=100)
    reg.init_from_stats(adarand.ClassStats.from_sums(stats.sums, stats.sq_sums, stats.counts, allow_missing=True))
    generator = torch.Generator().manual_seed(1)
    reg.noise_generator = generator
    losses, errors, seconds = [], [], []
    state = copy.deepcopy(reg.state_dict())
    for _ in range(draws):
        f = features.clone().requires_grad_(True)
        start = time.perf_counter()
        picked, _, picked_labels, _ = sampling.rows(f, None, label_map, CLASSES, generator)
        loss = reg(picked, picked_labels)
        loss.backward()
        reg.step(picked.detach(), picked_labels)
        seconds.append(time.perf_counter() - start)
        reg.load_state_dict(state)
        losses.append(float(loss.detach()))
        mask = picked_labels == smallest
        if mask.any():
            errors.append(float((picked.detach()[mask].double().mean(0) - full_mean).norm() / dim ** 0.5 / std))
    spread = statistics.pstdev(losses) / statistics.mean(losses)
    return spread, (statistics.mean(errors) if errors else float("nan")), statistics.median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=64, help="H = W of the feature grid (64: a 512 crop at stride 8)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    features, label_map = make_batch(args.batch, args.dim, args.cells)
    results = []
    for pixels in sorted({64, 256, 1024, 4096, args.cells ** 2}):
        for balance in adarand.dense.BALANCES:
            spread, error, seconds = measure(features, label_map, pixels, balance)
            results.append({"pixels_per_image": pixels, "balance": balance, "loss_spread": round(spread, 4),
                            "small_class_mean_error": round(error, 3), "ms": round(1e3 * seconds, 1)})
            print(f"P={pixels:6d} {balance:8s} loss std/mean {spread:.4f}  smallest class mean error "
                  f"{error:.3f} std  {1e3 * seconds:8.1f} ms")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Cost of AdaRand in a Mask R-CNN R50-FPN training step, measured against plain fine-tuning.

    python tools/bench_det_step.py [--size 256] [--images 2] [--iters 4] [--device cpu|cuda]

Both models are built from configs/detection/Base-AdaRand-RCNN-FPN.yaml (random init,
NORM "BN", 20 classes) on the same synthetic batch: "ft" uses detectron2's
StandardROIHeads, "adarand" AdaRandROIHeads plus the prior step of the hook. A step is
forward + backward + SGD step (+ prior step). Both models start from the same weights,
use lr 0 (all the work of a step, weights unchanged) and reseed before each step, so
they sample the same ROIs and differ only by AdaRand's own work. Steps of the two
models alternate, each going first every other iteration; the time ratio uses each model's fastest
step (the least disturbed by other load on the machine), medians are reported too. Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on
CPU, the bytes of parameters, gradients, momentum, buffers and every tensor saved for
backward (counted with ``torch.autograd.graph.saved_tensors_hooks``). Prints a table,
writes ``benchmarks/det_step.md`` and ends with one JSON line.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import time

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

import adarand
from adarand.detection import add_adarand_config, box_regularizations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "detection", "Base-AdaRand-RCNN-FPN.yaml")


def build(method, device):
    cfg = get_cfg()
    add_adarand_config(cfg)
    cfg.merge_from_file(CONFIG)
    heads = "StandardROIHeads" if method == "ft" else "AdaRandROIHeads"
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", device, "MODEL.RESNETS.NORM", "BN",
                         "MODEL.ROI_HEADS.NAME", heads, "MODEL.ADARAND.METHOD", "adarand"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    if method != "ft":
        reg = box_regularizations(model)[0].regularizer
        gen = torch.Generator().manual_seed(1)
        reg.prior.init_from_stats(torch.rand(reg.num_classes, reg.feat_dim, generator=gen).to(device),
                                  0.1 * torch.ones(reg.num_classes, reg.feat_dim, device=device))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0, momentum=0.9)
    return model, optimizer


def make_batch(images, size, device, seed=0):
    """Random images, each with 3 boxes of random classes and their rectangular masks."""
    gen = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(images):
        boxes = []
        for _ in range(3):
            x0, y0 = torch.randint(0, size // 2, (2,), generator=gen).tolist()
            w, h = torch.randint(size // 8, size // 2, (2,), generator=gen).tolist()
            boxes.append([x0, y0, x0 + w, y0 + h])
        masks = torch.zeros(3, size, size, dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            masks[k, y0:y1, x0:x1] = True
        inst = Instances((size, size), gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                         gt_classes=torch.randint(0, 20, (3,), generator=gen), gt_masks=BitMasks(masks))
        image = torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
        batch.append({"image": image.to(device), "instances": inst.to(device), "height": size, "width": size})
    return batch


def state_bytes(model, optimizer):
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


kept_rows = [0]  # ROIs regularized in the last AdaRand step


def step(model, optimizer, batch):
    """One training step; returns (seconds, saved-for-backward bytes)."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    sync = torch.cuda.synchronize if batch[0]["image"].is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model(batch)
    optimizer.zero_grad(set_to_none=False)
    sum(losses.values()).backward()
    optimizer.step()
    for branch in box_regularizations(model):
        features, labels = branch.pop_regularized()
        kept_rows[0] = int((labels != adarand.IGNORE_INDEX).sum())
        branch.regularizer.step(features, labels)
    sync()
    return time.perf_counter() - start, saved[0]


def time_regularizer(reg, rows, reps=20):
    """Median ms of AdaRand's own work on ``rows`` ROIs: loss, its backward, prior step."""
    device = reg.prior.mu.device
    features = torch.randn(rows, reg.feat_dim, device=device, requires_grad=True)
    labels = torch.randint(0, reg.num_classes, (rows,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(reps + 2):
        sync()
        start = time.perf_counter()
        reg(features, labels).backward()
        reg.step(features.detach(), labels)
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[2:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "det_step.md"))
    args = parser.parse_args()

    batch = make_batch(args.images, args.size, args.device)
    runs = {m: build(m, args.device) for m in ("ft", "adarand")}
    times = {m: [] for m in runs}
    peak = {}
    with EventStorage():
        for it in range(args.warmup + args.iters):
            order = list(runs.items())
            for method, (model, optimizer) in (order if it % 2 else order[::-1]):
                torch.manual_seed(1000 + it)
                if args.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                seconds, saved = step(model, optimizer, batch)
                if it >= args.warmup:
                    times[method].append(seconds)
                    mem = (torch.cuda.max_memory_allocated() if args.device == "cuda"
                           else state_bytes(model, optimizer) + saved)
                    peak[method] = max(peak.get(method, 0), mem)
    n_rois = kept_rows[0]
    reg = box_regularizations(runs["adarand"][0])[0].regularizer
    reg_ms = time_regularizer(reg, n_rois)
    # Fine-tuning a pre-trained detector gives up to 25 % x 512 foreground ROIs an image.
    reg_ms_full = time_regularizer(reg, args.images * 128)
    ms = {m: 1e3 * statistics.median(t) for m, t in times.items()}
    best = {m: 1e3 * min(t) for m, t in times.items()}
    mb = {m: b / 2**20 for m, b in peak.items()}
    result = {
        "time_ratio": best["adarand"] / best["ft"], "median_time_ratio": ms["adarand"] / ms["ft"],
        "memory_ratio": mb["adarand"] / mb["ft"], "regularizer_ms": reg_ms, "regularized_rois": n_rois,
        "regularizer_fraction": reg_ms / best["ft"], "regularizer_ms_full_fg": reg_ms_full,
        "full_fg_rois": args.images * 128,
        "ft_min_ms": best["ft"], "adarand_min_ms": best["adarand"], "ft_median_ms": ms["ft"],
        "adarand_median_ms": ms["adarand"], "ft_peak_mb": mb["ft"], "adarand_peak_mb": mb["adarand"],
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "memory_kind": "cuda max_memory_allocated" if args.device == "cuda" else "state + saved-for-backward bytes",
        "images": args.images, "size": args.size, "iters": args.iters, "torch": torch.__version__,
        "adarand_backend": adarand.get_backend(), "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    rows = [f"| {m} | {ms[m]:.1f} | {1e3 * min(times[m]):.1f} | {1e3 * max(times[m]):.1f} | {mb[m]:.1f} |" for m in ("ft", "adarand")]
    table = "\n".join(["| method | median ms | min ms | max ms | peak MB |", "|---|---|---|---|---|", *rows])
    print(table)
    summary = (f"AdaRand / FT: time x{result['time_ratio']:.4f} (fastest steps; medians "
               f"x{result['median_time_ratio']:.4f}), memory x{result['memory_ratio']:.4f}; AdaRand's own work "
               f"(loss + backward + prior step, {n_rois} ROIs) alone: {reg_ms:.2f} ms = "
               f"{100 * result['regularizer_fraction']:.3f} % of the fastest FT step; with {args.images * 128} ROIs "
               f"(the sampler's foreground maximum): {reg_ms_full:.2f} ms")
    print(summary)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("# Mask R-CNN R50-FPN training step: AdaRand vs plain fine-tuning\n\n"
                f"`python tools/bench_det_step.py --size {args.size} --images {args.images} --iters {args.iters} "
                f"--device {args.device}` ({result['timestamp']}, {result['device']}, torch {torch.__version__}).\n"
                f"Peak memory = {result['memory_kind']}.\n\n{table}\n\n"
                f"{summary}\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

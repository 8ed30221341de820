#!/usr/bin/env python
"""Cost of AdaRand in a Mask R-CNN R50-FPN training step, measured against plain fine-tuning.

    python tools/bench/bench_det_step.py [--size 256] [--images 2] [--rounds 16] [--device cpu|cuda] [--quick]

Both models are built from configs/detection/Base-AdaRand-RCNN-FPN.yaml (random init,
NORM "BN", 20 classes) on the same synthetic batch: "ft" uses detectron2's
StandardROIHeads, "adarand" AdaRandROIHeads plus the prior step of the hook. A step is
forward + backward + SGD step (+ prior step). Both models start from the same weights,
use lr 0 (all the work of a step, weights unchanged) and reseed before each step, so
they sample the same ROIs and differ only by AdaRand's own work. Steps of the two
models alternate round-robin (``adarand_projects.bench.timing.round_robin``: each goes first every other
round); the time ratio is the median over rounds of the paired per-round ratios, with a
95 % bootstrap confidence interval ("within noise" when it holds 1.0). On CUDA the
clock is wall time; on a CPU, the process's CPU time with one torch thread (``--threads``),
which other jobs on a shared machine disturb far less than wall time. The load average
is recorded before and after. CPU defaults (16 timed rounds) are meant to give an
interval within +-3 % on an idle 2-core machine. Peak memory:
``torch.cuda.max_memory_allocated`` on CUDA; on CPU, the bytes of parameters, gradients,
momentum, buffers and every tensor saved for backward (counted with
``torch.autograd.graph.saved_tensors_hooks``). Prints a table, writes
``benchmarks/det_step.md`` and ends with one JSON line (``time_ratio``, ``ci_low``,
``ci_high``). ``--quick``: a seconds-long smoke run on a ResNet-18-FPN at 64 px (no file
unless --out is given).
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

import adarand
from adarand_projects.bench.timing import describe, load_average, paired_ratio, round_robin, write_report
from adarand.detection import adarand_heads, box_regularizations, load_detection_cfg


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "detection", "Base-AdaRand-RCNN-FPN.yaml")
QUICK_OPTS = ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.FPN.OUT_CHANNELS", 32,
              "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
              "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16, "MODEL.ROI_MASK_HEAD.NUM_CONV", 1]


def build(method, device, extra=()):
    heads = "StandardROIHeads" if method == "ft" else "AdaRandROIHeads"
    cfg = load_detection_cfg(CONFIG, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device, "MODEL.RESNETS.NORM", "BN",
                         "MODEL.ROI_HEADS.NAME", heads, "MODEL.ADARAND.METHOD", "adarand", *map(str, extra)])
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
    """One training step; returns (wall seconds, process CPU seconds, saved-for-backward bytes)."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    sync = torch.cuda.synchronize if batch[0]["image"].is_cuda else (lambda: None)
    sync()
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model(batch)
    optimizer.zero_grad(set_to_none=False)
    sum(losses.values()).backward()
    optimizer.step()
    records = [heads.take_sampled_rows() for heads in adarand_heads(model)]  # none for "ft"
    for branch, (features, labels) in (item for record in records for item in record.items()):
        kept_rows[0] = int((labels != adarand.IGNORE_INDEX).sum())
        branch.regularizer.step(features, labels)
    sync()
    return time.perf_counter() - start, time.process_time() - cpu_start, saved[0]


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=0, help="timed rounds (default 30 on CUDA, 16 on CPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (default 1, see above)")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples of the rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (see above)")
    parser.add_argument("--out", default=None, help="report file (default benchmarks/det_step.md; none with --quick)")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    extra = QUICK_OPTS if args.quick else []
    if args.quick:
        args.size, args.images, args.warmup = 64, 1, 1
        args.rounds, args.resamples = args.rounds or 4, min(args.resamples, 500)
    rounds = args.rounds or (30 if cuda else 16)
    out = args.out if args.out is not None else ("" if args.quick else os.path.join(REPO, "benchmarks", "det_step.md"))
    if not cuda:
        torch.set_num_threads(args.threads)

    batch = make_batch(args.images, args.size, args.device)
    runs = {m: build(m, args.device, extra) for m in ("ft", "adarand")}
    peak = {}

    def provider(method):
        calls = [0]

        def run():
            torch.manual_seed(1000 + calls[0])  # both models sample the same ROIs in a round
            calls[0] += 1
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            wall, cpu, saved = step(*runs[method], batch)
            mem = torch.cuda.max_memory_allocated() if cuda else state_bytes(*runs[method]) + saved
            peak[method] = max(peak.get(method, 0), mem)
            return wall, cpu

        return run

    load_before = load_average()
    with EventStorage():
        times = round_robin({m: provider(m) for m in runs}, rounds, args.warmup)
    load_after = load_average()
    clock = 0 if cuda else 1
    ratio = paired_ratio([t[clock] for t in times["ft"]], [t[clock] for t in times["adarand"]],
                         resamples=args.resamples)
    n_rois = kept_rows[0]
    reg = box_regularizations(runs["adarand"][0])[0].regularizer
    reg_ms = time_regularizer(reg, n_rois)
    # Fine-tuning a pre-trained detector gives up to 25 % x 512 foreground ROIs an image.
    reg_ms_full = time_regularizer(reg, args.images * 128)
    ms = {m: {k: 1e3 * statistics.median(t[k] for t in times[m]) for k in (0, 1)} for m in runs}
    mb = {m: b / 2**20 for m, b in peak.items()}
    device = torch.cuda.get_device_name() if cuda else \
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s))"
    result = {
        "time_ratio": round(ratio["ratio"], 4), "ci_low": round(ratio["ci_low"], 4),
        "ci_high": round(ratio["ci_high"], 4), "within_noise": ratio["within_noise"], "rounds": rounds,
        "clock": "wall" if cuda else "process CPU time", "load_before": load_before, "load_after": load_after,
        "memory_ratio": round(mb["adarand"] / mb["ft"], 5), "regularizer_ms": round(reg_ms, 3),
        "regularized_rois": n_rois, "regularizer_fraction": round(reg_ms / ms["ft"][clock], 5),
        "regularizer_ms_full_fg": round(reg_ms_full, 3), "full_fg_rois": args.images * 128,
        "ft_median_ms": round(ms["ft"][clock], 1), "adarand_median_ms": round(ms["adarand"][clock], 1),
        "ft_peak_mb": round(mb["ft"], 1), "adarand_peak_mb": round(mb["adarand"], 1), "device": device,
        "memory_kind": "cuda max_memory_allocated" if cuda else "state + saved-for-backward bytes",
        "images": args.images, "size": args.size, "torch": torch.__version__,
        "adarand_backend": adarand.get_backend(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    rows = [f"| {m} | {ms[m][0]:.1f} | {ms[m][1]:.1f} | {mb[m]:.1f} |" for m in ("ft", "adarand")]
    table = "\n".join(["| method | wall ms (p50) | CPU ms (p50) | peak MB |", "|---|---|---|---|", *rows])
    summary = (f"AdaRand / FT time ({result['clock']}, median of {rounds} paired rounds, 95 % bootstrap CI): "
               f"{describe(ratio)}; memory x{result['memory_ratio']:.4f}. AdaRand's own work "
               f"(loss + backward + prior step, {n_rois} ROIs) alone: {reg_ms:.2f} ms = "
               f"{100 * result['regularizer_fraction']:.3f} % of the median FT step; with {args.images * 128} ROIs "
               f"(the sampler's foreground maximum): {reg_ms_full:.2f} ms. Load average (1, 5, 15 min): "
               f"{load_before} before, {load_after} after.")
    command = " ".join(["python tools/bench/bench_det_step.py", *(argv if argv is not None else sys.argv[1:])])
    report = ("# Mask R-CNN R50-FPN training step: AdaRand vs plain fine-tuning\n\n"
              f"`{command}` ({result['timestamp']}, {device}, torch {torch.__version__}, "
              f"{args.images} image(s) of {args.size} px, {rounds} rounds after {args.warmup} warm-up).\n"
              f"Peak memory = {result['memory_kind']}.\n\n{table}\n\n{summary}\n")
    write_report(out, report, table + "\n" + summary, result)
    return result


if __name__ == "__main__":
    main()

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
import os
import sys

import torch
from detectron2.structures import BitMasks, Boxes, Instances

from adarand.detection import box_regularizations
from adarand_projects.bench.timing import write_report
from adarand_projects.bench.train_step import (build_step_model, load_sentence, paired_steps, ratio_sentence,
                                               step_arguments, step_result, step_settings, time_regularizer)


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "detection", "Base-AdaRand-RCNN-FPN.yaml")
QUICK_OPTS = ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.FPN.OUT_CHANNELS", 32,
              "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
              "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16, "MODEL.ROI_MASK_HEAD.NUM_CONV", 1]


def build(method, device, extra=()):
    heads = "StandardROIHeads" if method == "ft" else "AdaRandROIHeads"
    return build_step_model(CONFIG, ["MODEL.RESNETS.NORM", "BN", "MODEL.ROI_HEADS.NAME", heads,
                                     "MODEL.ADARAND.METHOD", "adarand", *extra], device)


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


def main(argv=None):
    args = step_arguments(__doc__, "benchmarks/det_step.md").parse_args(argv)
    cuda, rounds, out = step_settings(args, os.path.join(REPO, "benchmarks", "det_step.md"))
    extra = QUICK_OPTS if args.quick else []

    batch = make_batch(args.images, args.size, args.device)
    runs = {m: build(m, args.device, extra) for m in ("ft", "adarand")}
    measured = paired_steps(runs, batch, rounds, args.warmup, args.resamples, cuda)
    n_rois = measured["rows"]
    (branch,) = box_regularizations(runs["adarand"][0])  # the one box branch of AdaRandROIHeads
    reg = branch.regularizer
    reg_ms = time_regularizer(reg, n_rois)
    # Fine-tuning a pre-trained detector gives up to 25 % x 512 foreground ROIs an image.
    reg_ms_full = time_regularizer(reg, args.images * 128)
    result, table, device = step_result(measured, rounds, args.images, args.size, cuda)
    result.update({"regularizer_ms": round(reg_ms, 3), "regularized_rois": n_rois,
                   "regularizer_fraction": round(reg_ms / result["ft_median_ms"], 5),
                   "regularizer_ms_full_fg": round(reg_ms_full, 3), "full_fg_rois": args.images * 128})
    summary = (f"{ratio_sentence(result, measured['ratio'])} AdaRand's own work "
               f"(loss + backward + prior step, {n_rois} ROIs) alone: {reg_ms:.2f} ms = "
               f"{100 * result['regularizer_fraction']:.3f} % of the median FT step; with {args.images * 128} ROIs "
               f"(the sampler's foreground maximum): {reg_ms_full:.2f} ms. {load_sentence(result)}")
    command = " ".join(["python tools/bench/bench_det_step.py", *(argv if argv is not None else sys.argv[1:])])
    report = ("# Mask R-CNN R50-FPN training step: AdaRand vs plain fine-tuning\n\n"
              f"`{command}` ({result['timestamp']}, {device}, torch {torch.__version__}, "
              f"{args.images} image(s) of {args.size} px, {rounds} rounds after {args.warmup} warm-up).\n"
              f"Peak memory = {result['memory_kind']}.\n\n{table}\n\n{summary}\n")
    write_report(out, report, table + "\n" + summary, result)
    return result


if __name__ == "__main__":
    main()

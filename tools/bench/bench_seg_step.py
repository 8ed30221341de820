#!/usr/bin/env python
"""Cost of AdaRand in a Semantic FPN R-50 training step, measured against plain fine-tuning.

    python tools/bench/bench_seg_step.py [--size 256] [--images 2] [--rounds 16] [--device cpu|cuda] [--quick]

Both models are built from configs/segmentation/Base-AdaRand-SemanticFPN.yaml (SemanticSegmentor,
21 classes, random init, NORM "BN") on the same synthetic batch: random images with label maps of
about 70 % background, a few rectangles of random VOC classes and a 255 (ignore) border around each,
as VOC's void border. "ft" uses Detectron2's SemSegFPNHead, "adarand" AdaRandSemSegFPNHead (the
default pixel draw, ``MODEL.ADARAND.PIXELS_PER_IMAGE`` cells an image) plus the prior step of the
hook. Timing, pairing, clocks and memory as in bench_det_step.py
(``adarand_projects.bench.train_step``): round-robin paired rounds, lr 0, both reseeded per round,
process CPU time with one torch thread on a CPU, the median of paired ratios with a 95 % bootstrap
interval, peak memory = state + saved-for-backward bytes on a CPU, ``max_memory_allocated`` on CUDA.
Prints a table, writes ``benchmarks/seg_step.md`` and ends with one JSON line (``time_ratio``,
``ci_low``, ``ci_high``). ``--quick``: a seconds-long smoke run on a ResNet-18 at 64 px (no file
unless --out is given).
"""
import os
import sys

import torch

from adarand.detection import regularizations
from adarand_projects.bench.timing import write_report
from adarand_projects.bench.train_step import (build_step_model, load_sentence, paired_steps, ratio_sentence,
                                               step_arguments, step_result, step_settings, time_regularizer)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "segmentation", "Base-AdaRand-SemanticFPN.yaml")
QUICK_OPTS = ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.FPN.OUT_CHANNELS", 32,
              "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32]
IGNORE, NUM_CLASSES, VOID_WIDTH = 255, 21, 3


def build(method, device, extra=()):
    head = "SemSegFPNHead" if method == "ft" else "AdaRandSemSegFPNHead"
    return build_step_model(CONFIG, ["MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NAME", head,
                                     "MODEL.ADARAND.METHOD", "adarand", *extra], device)


def make_batch(images, size, device, seed=0):
    """Random images, each label map 3 squares of random classes (1-20, 0.3 of the side each: at most 27 % of
    the pixels) with a ``VOID_WIDTH`` px ignore border, the rest background."""
    gen = torch.Generator().manual_seed(seed)
    batch = []
    side, w = round(0.3 * size), VOID_WIDTH
    for _ in range(images):
        label = torch.zeros(size, size, dtype=torch.long)
        for _ in range(3):
            y0, x0 = torch.randint(w, size - side - w + 1, (2,), generator=gen).tolist()
            border = label[y0 - w:y0 + side + w, x0 - w:x0 + side + w]  # a view
            border[border == 0] = IGNORE
            label[y0:y0 + side, x0:x0 + side] = torch.randint(1, NUM_CLASSES, (1,), generator=gen)
        image = torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
        batch.append({"image": image.to(device), "sem_seg": label.to(device), "height": size, "width": size})
    return batch


def label_shares(batch):
    """(background share, ignore share) of the batch's labelled pixels."""
    labels = torch.stack([b["sem_seg"] for b in batch])
    return float((labels == 0).float().mean()), float((labels == IGNORE).float().mean())


def main(argv=None):
    args = step_arguments(__doc__, "benchmarks/seg_step.md").parse_args(argv)
    cuda, rounds, out = step_settings(args, os.path.join(REPO, "benchmarks", "seg_step.md"))
    extra = QUICK_OPTS if args.quick else []

    batch = make_batch(args.images, args.size, args.device)
    background, ignore = label_shares(batch)
    runs = {m: build(m, args.device, extra) for m in ("ft", "adarand")}
    measured = paired_steps(runs, batch, rounds, args.warmup, args.resamples, cuda)
    pixels = measured["rows"]
    reg_ms = time_regularizer(regularizations(runs["adarand"][0])[0].regularizer, pixels)
    result, table, device = step_result(measured, rounds, args.images, args.size, cuda)
    result.update({"regularizer_ms": round(reg_ms, 3), "regularized_pixels": pixels,
                   "regularizer_fraction": round(reg_ms / result["ft_median_ms"], 5),
                   "background_share": round(background, 4), "ignore_share": round(ignore, 4)})
    summary = (f"{ratio_sentence(result, measured['ratio'])} AdaRand's own work (loss + backward + prior step, "
               f"{pixels} drawn pixels) alone: {reg_ms:.2f} ms = {100 * result['regularizer_fraction']:.3f} % of the "
               f"median FT step. Labels: {100 * background:.0f} % background, {100 * ignore:.1f} % ignore. "
               f"{load_sentence(result)}")
    command = " ".join(["python tools/bench/bench_seg_step.py", *(argv if argv is not None else sys.argv[1:])])
    report = ("# Semantic FPN R-50 training step: AdaRand vs plain fine-tuning\n\n"
              f"`{command}` ({result['timestamp']}, {device}, torch {torch.__version__}, "
              f"{args.images} image(s) of {args.size} px, {NUM_CLASSES} classes, {rounds} rounds after "
              f"{args.warmup} warm-up).\nPeak memory = {result['memory_kind']}.\n\n{table}\n\n{summary}\n")
    write_report(out, report, table + "\n" + summary, result)
    return result


if __name__ == "__main__":
    main()

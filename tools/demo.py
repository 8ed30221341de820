#!/usr/bin/env python
"""`make demo`: ImageNet-pre-trained networks fine-tuned offline, with and without the regularizers.

Runs the same entry points a user runs, with real weights and real images that ship in
registry packages, on a CPU, in minutes:

1. classification — torchvision's ImageNet MobileNetV2 fine-tuned on scikit-learn's real
   handwritten digits, about 18 training images a class, with FT, FNP, RandReg N(0,1),
   RandReg-CP and AdaRand, identical seeds and budget (``tools/train_cls.py``);
2. detection — Mask R-CNN with an ImageNet MobileNetV2-FPN backbone fine-tuned on a small
   Pascal-VOC-layout set built from real photos (``tools/make_demo_voc.py``), FT vs AdaRand
   (``tools/train_net.py``), evaluated by bbox/mask AP, drawn side by side with the ground
   truth (``tools/visualize.py``);
3. semantic segmentation — Semantic FPN on the same backbone: its head pre-trained by a short FT
   run on a source set of other photos composited the same way (a disjoint set, same three
   categories), then fine-tuned on the demo set with FT and AdaRand for each seed, evaluated by
   mIoU with the paired comparison, drawn as ground truth | FT | AdaRand.

Finished runs are kept and skipped on a re-run. Tables go to stdout and <out>/demo_results.md.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

from adarand_projects.paper.paired import results_markdown
from adarand.classification.run_log import read_jsonl, read_results
from adarand_projects.paper.paper_table import mean_std
from adarand.files import write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLS_METHODS = [("ft", "FT"), ("fnp", "FNP"), ("randreg-normal", "RandReg N(0,1)"), ("randreg-cp", "RandReg-CP"),
               ("adarand", "AdaRand")]
DET_METHODS = [("ft", "FT"), ("adarand", "AdaRand")]
SEG_METHODS = [("ft", "FT"), ("adarand", "AdaRand")]
SEG_CONFIG = "configs/segmentation/demo/semantic_mobilenetv2_fpn_demo_{}.yaml"
# The sem-seg head's source task: AdaRand starts its prior from a pre-trained head's per-pixel
# statistics; the ImageNet backbone has no such head, so one is trained first, by FT, on a set built
# like the demo's from other draws (its own generator seed: other crops, scales and positions of the
# same photos and objects), for the target runs to start from.
SEG_SOURCE_SEED, SEG_SOURCE_TRAIN = 1, 80
SEG_FIGURE_IMAGES = 4
SEG_HEAD_NOTE = ("The semantic head (scale heads and 1x1 predictor) is pre-trained on the source set, not new; "
                     "the source set holds the target's three categories (other composites), so this is a "
                     "continuation on new images rather than a transfer to new classes.")
# The side-by-side figure: the first validation images, each run's 3 best detections among all it
# outputs (score >= MODEL.ROI_HEADS.SCORE_THRESH_TEST). Not one common score cut: after 60
# iterations FT's best scores are about 0.3 and AdaRand's below 0.1, although AdaRand's AP is
# higher (AP ranks detections; it does not ask for calibrated scores).
DET_FIGURE_IMAGES, DET_FIGURE_SCORE, DET_FIGURE_TOP_K = 4, 0.05, 3
# The runs are made one after another, under whatever else the machine does: their times are no
# comparison of the methods (a fresh clone once printed AdaRand 0.50x FT); the benchmarks time them
# paired and interleaved.
TIMES_NOTE = ("Times: of runs made one after another, not a comparison of the methods; each method's step time "
              "against FT, measured paired and interleaved with its 95 % interval: docs/benchmarks.md.")


def run(cmd, env=None):
    print("\n$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, **(env or {})})


def tool(name):
    return [sys.executable, os.path.join(ROOT, "tools", name)]


def classification(out, seeds, epochs):
    rows, run_dirs = [], []
    for method, label in CLS_METHODS:
        results = []
        for seed in seeds:
            run_dir = os.path.join(out, "classification", f"{method}_seed{seed}")
            if not os.path.isfile(os.path.join(run_dir, "results.json")):
                # --resume: a run killed earlier continues; a new directory starts afresh
                config = f"configs/classification/digits_mobilenetv2_{method}.yaml"
                run(tool("train_cls.py") + ["--resume", "--config-file", config, "SEED", str(seed),
                                            "SOLVER.EPOCHS", str(epochs), "OUTPUT_DIR", run_dir])
            results.append(read_results(run_dir))
            run_dirs.append(run_dir)
        rows.append((label, results))
    table = ["| method | test top-1 (%) | mean per-class acc. (%) | time / epoch (s) |", "|---|---:|---:|---:|"]
    for label, results in rows:
        top1 = mean_std([100 * r["test_top1"] for r in results])
        per_class = mean_std([100 * r["test_mean_class_acc"] for r in results])
        epoch_time = statistics.mean(r["time_per_epoch_s"] for r in results)
        table.append(f"| {label} | {top1[0]:.1f} ± {top1[1]:.1f} | {per_class[0]:.1f} ± {per_class[1]:.1f} | "
                     f"{epoch_time:.1f} |")
    table += ["", TIMES_NOTE]
    figures = os.path.join(out, "figures")
    first_seed = [d for d in run_dirs if d.endswith(f"_seed{seeds[0]}")]
    run(tool("plot_features.py") + first_seed + ["--out-dir", figures, "--labels"] + [label for _, label in CLS_METHODS])
    paired = results_markdown([r for _, results in rows for r in results], "ft", labels=dict(CLS_METHODS))
    return "\n".join(table) + "\n\nEach method against FT on the same seeds:\n\n" + paired.rstrip("\n"), figures


def detection(out, iters):
    weights = os.path.join(out, "weights", "mobilenet_v2_d2.pth")
    data_root = os.path.join(out, "datasets", "demo_voc")  # holds VOC2012/, as a real VOC root does
    run(tool("convert_mobilenet_weights.py") + ["--out", weights])
    run(tool("make_demo_voc.py") + ["--root", data_root])
    rows = []
    for method, label in DET_METHODS:
        run_dir = os.path.join(out, "detection", method)
        metrics = os.path.join(run_dir, "metrics.json")
        if not os.path.isfile(os.path.join(run_dir, "model_final.pth")):
            config = f"configs/detection/demo/mask_rcnn_mobilenetv2_fpn_demo_{method}.yaml"
            run(tool("train_net.py") + ["--resume", "--config-file", config, "MODEL.WEIGHTS", weights,
                                        "SOLVER.MAX_ITER", str(iters), "OUTPUT_DIR", run_dir],
                env={"DETECTRON2_DATASETS": data_root})
        records = read_jsonl(metrics)  # Detectron2's metrics.json: one JSON object a line
        evaluation = [r for r in records if "bbox/AP" in r][-1]
        step_times = [r["time"] for r in records if "time" in r]
        rows.append((label, evaluation, statistics.median(step_times)))
    table = ["| method | bbox AP | bbox AP50 | mask AP | mask AP50 | time / iter (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, ev, step in rows:
        table.append(f"| {label} | {ev['bbox/AP']:.1f} | {ev['bbox/AP50']:.1f} | {ev['segm/AP']:.1f} | "
                     f"{ev['segm/AP50']:.1f} | {step:.2f} |")
    return "\n".join(table + ["", TIMES_NOTE]), detection_figure(out, data_root)


def detection_figure(out, data_root):
    """Ground truth | FT | AdaRand on the first validation images, from the runs' saved predictions."""
    figure = os.path.join(out, "figures", "detection_comparison.png")
    runs = []
    for method, label in DET_METHODS:
        runs += ["--predictions", f"{label}={os.path.join(out, 'detection', method, 'inference', 'instances_predictions.pth')}"]
    run(tool("visualize.py") + ["--config-file", "configs/detection/demo/Base-Demo-MobileNetV2-FPN.yaml",
                                *runs, "--num-images", str(DET_FIGURE_IMAGES), "--score-threshold", str(DET_FIGURE_SCORE),
                                "--top-k", str(DET_FIGURE_TOP_K),
                                "--colors", "256", "--grid", figure], env={"DETECTRON2_DATASETS": data_root})
    return figure


def segmentation(out, seeds, source_iters, iters):
    """Pre-train the semantic head on the source set, then FT and AdaRand from it on the demo set, each seed."""
    weights = os.path.join(out, "weights", "mobilenet_v2_d2.pth")
    data_root = os.path.join(out, "datasets", "demo_voc")
    source_root = os.path.join(out, "datasets", "demo_voc_source")
    run(tool("convert_mobilenet_weights.py") + ["--out", weights])
    run(tool("make_demo_voc.py") + ["--root", data_root, "--quiet"])
    run(tool("make_demo_voc.py") + ["--root", source_root, "--seed", str(SEG_SOURCE_SEED), "--num-train",
                                    str(SEG_SOURCE_TRAIN), "--num-val", "1", "--quiet"])
    source = os.path.join(out, "segmentation", "source")
    if not os.path.isfile(os.path.join(source, "model_final.pth")):
        run(tool("train_net.py") + ["--resume", "--config-file", SEG_CONFIG.format("ft"), "MODEL.WEIGHTS", weights,
                                    "SOLVER.MAX_ITER", str(source_iters), "DATASETS.TEST", "()",
                                    "OUTPUT_DIR", source], env={"DETECTRON2_DATASETS": source_root})
    for method, _ in SEG_METHODS:
        for seed in seeds:
            run_dir = os.path.join(out, "segmentation", f"{method}_seed{seed}")
            if not os.path.isfile(os.path.join(run_dir, "model_final.pth")):
                run(tool("train_net.py") + ["--resume", "--config-file", SEG_CONFIG.format(method), "MODEL.WEIGHTS",
                                            os.path.join(source, "model_final.pth"), "SEED", str(seed),
                                            "SOLVER.MAX_ITER", str(iters), "OUTPUT_DIR", run_dir],
                    env={"DETECTRON2_DATASETS": data_root})
    return segmentation_report(out, seeds, iters), segmentation_figure(out, seeds[0], data_root)


def segmentation_report(out, seeds, iters):
    """The mIoU table (mean ± std over seeds) and each method's paired mIoU difference with FT."""
    table = ["| method | mIoU | fwIoU | mACC | pACC | time / iter (s) |", "|---|---:|---:|---:|---:|---:|"]
    results = []
    for method, label in SEG_METHODS:
        evaluations, step_times = [], []
        for seed in seeds:
            records = read_jsonl(os.path.join(out, "segmentation", f"{method}_seed{seed}", "metrics.json"))
            evaluations.append([r for r in records if "sem_seg/mIoU" in r][-1])
            step_times.append(statistics.median(r["time"] for r in records if "time" in r))
            results.append({"method": method, "seed": seed, "dataset": "demo_voc", "fraction": 1.0,
                            "backbone": "mobilenetv2_fpn", "epochs": iters,
                            "mIoU": evaluations[-1]["sem_seg/mIoU"] / 100})
        cells = [mean_std([e[f"sem_seg/{k}"] for e in evaluations]) for k in ("mIoU", "fwIoU", "mACC", "pACC")]
        table.append(f"| {label} | " + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in cells)
                     + f" | {statistics.mean(step_times):.2f} |")
    paired = results_markdown(results, "ft", metric="mIoU", labels=dict(SEG_METHODS))
    return "\n".join(table + ["", TIMES_NOTE, "", SEG_HEAD_NOTE]) + \
        "\n\nAdaRand against FT on the same seeds:\n\n" + paired.rstrip("\n")


def draws_sem_seg():
    """Whether this checkout's tools/visualize.py draws semantic segmentations (reads sem_seg_predictions.json)."""
    help_text = subprocess.run(tool("visualize.py") + ["--help"], capture_output=True, text=True, cwd=ROOT).stdout
    return "sem_seg_predictions.json" in help_text


def segmentation_figure(out, seed, data_root):
    """Ground truth | FT | AdaRand on the first validation images (seed ``seed``'s runs); None, with a printed
    note, when tools/visualize.py cannot draw semantic segmentations."""
    if not draws_sem_seg():
        print("\nnote: tools/visualize.py here draws no semantic segmentations; the ground truth | FT | AdaRand "
              "segmentation figure is skipped", flush=True)
        return None
    figure = os.path.join(out, "figures", "segmentation_comparison.png")
    runs = []
    for method, label in SEG_METHODS:
        path = os.path.join(out, "segmentation", f"{method}_seed{seed}", "inference", "sem_seg_predictions.json")
        runs += ["--predictions", f"{label}={path}"]
    run(tool("visualize.py") + ["--config-file", SEG_CONFIG.format("ft"), "--dataset", "voc_2012_sem_seg_val", *runs,
                                "--num-images", str(SEG_FIGURE_IMAGES), "--colors", "256", "--grid", figure],
        env={"DETECTRON2_DATASETS": data_root})
    return figure


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cls-epochs", type=int, default=8)
    parser.add_argument("--det-iters", type=int, default=60)
    parser.add_argument("--seg-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seg-source-iters", type=int, default=40, help="FT iterations of the head's source task")
    parser.add_argument("--seg-iters", type=int, default=30)
    parser.add_argument("--skip", choices=["classification", "detection", "segmentation"], nargs="*", default=[])
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    start = time.time()
    sections = []
    if "classification" not in args.skip:
        table, figures = classification(out, args.seeds, args.cls_epochs)
        sections.append(f"## Classification: ImageNet MobileNetV2 → digits ({len(args.seeds)} seed(s), "
                        f"{args.cls_epochs} epochs)\n\n{table}\n\nFigures (Fig. 2 curves, Fig. 3 PCA): {figures}/\n"
                        f"Run directories: {out}/classification/")
    if "detection" not in args.skip:
        table, figure = detection(out, args.det_iters)
        sections.append(f"## Detection: Mask R-CNN, ImageNet MobileNetV2-FPN → demo VOC ({args.det_iters} iterations)"
                        f"\n\n{table}\n\nGround truth | FT | AdaRand (best {DET_FIGURE_TOP_K} detections) on the first "
                        f"{DET_FIGURE_IMAGES} validation images: {figure}\nRun directories: {out}/detection/")
    if "segmentation" not in args.skip:
        table, figure = segmentation(out, args.seg_seeds, args.seg_source_iters, args.seg_iters)
        drawn = (f"Ground truth | FT | AdaRand (seed {args.seg_seeds[0]}) on the first {SEG_FIGURE_IMAGES} validation "
                 f"images: {figure}" if figure else "No figure (tools/visualize.py draws no semantic segmentations).")
        sections.append(f"## Semantic segmentation: Semantic FPN, MobileNetV2-FPN, head pre-trained on a source set "
                        f"({args.seg_source_iters} iterations) → demo VOC ({len(args.seg_seeds)} seed(s), "
                        f"{args.seg_iters} iterations)\n\n{table}\n\n{drawn}\nRun directories: {out}/segmentation/")
    report = "\n\n".join(sections) + f"\n\nTotal demo time: {(time.time() - start) / 60:.1f} min\n"
    write_text(os.path.join(out, "demo_results.md"), report)
    print("\n" + report + f"\nWritten to {os.path.join(out, 'demo_results.md')}")


if __name__ == "__main__":
    main()

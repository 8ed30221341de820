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
   truth (``tools/visualize.py``).

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cls-epochs", type=int, default=8)
    parser.add_argument("--det-iters", type=int, default=60)
    parser.add_argument("--skip", choices=["classification", "detection"], nargs="*", default=[])
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
    report = "\n\n".join(sections) + f"\n\nTotal demo time: {(time.time() - start) / 60:.1f} min\n"
    write_text(os.path.join(out, "demo_results.md"), report)
    print("\n" + report + f"\nWritten to {os.path.join(out, 'demo_results.md')}")


if __name__ == "__main__":
    main()

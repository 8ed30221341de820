#!/usr/bin/env python
"""Draw a dataset's ground truth, and runs' predictions side by side, with Detectron2's Visualizer.

Ground truth (boxes, instance masks, class names) of the config's first training set, e.g.
to check that a VOC tree loads as intended (root: $DETECTRON2_DATASETS, default ./datasets):

    python tools/visualize.py --config-file configs/detection/mask_rcnn_R_50_FPN_voc2012_single_adarand.yaml \\
        --output-dir vis/train_gt --num-images 50

Predictions of one or several runs on the config's first test set, from the
instances_predictions.pth that COCO evaluation writes to <OUTPUT_DIR>/inference/,
right of the ground truth (one PNG per image, or one grid with a row per image):

    python tools/visualize.py --config-file ... \\
        --predictions FT=output/ft/inference/instances_predictions.pth \\
        --predictions AdaRand=output/adarand/inference/instances_predictions.pth \\
        --score-threshold 0.5 --num-images 20 --output-dir vis/ft_vs_adarand [--grid vis/grid.png]

Semantic segmentation (a dataset whose evaluator_type is "sem_seg", e.g. voc_2012_sem_seg_val,
or runs given as sem_seg_predictions.json) is drawn with Visualizer.draw_sem_seg: the ground
truth from each image's sem_seg_file_name (ignore pixels, 255, left undrawn), a run's
predictions from the sem_seg_predictions.json that SemSegEvaluator writes to
<OUTPUT_DIR>/inference/; no score cut (--score-threshold and --top-k are for detections).
The background class is left undrawn (VOC colours it black, which would hide the photo);
--hide-classes picks the classes left undrawn ('' draws all):

    python tools/visualize.py --dataset voc_2012_sem_seg_val \
        --predictions FT=output/ft/inference/sem_seg_predictions.json \
        --predictions AdaRand=output/adarand/inference/sem_seg_predictions.json \
        --num-images 8 --grid vis/sem_seg_grid.png
"""
import argparse


from adarand.detection import load_detection_cfg
from adarand.detection.visualize import visualize_dataset


def parse_run(text):
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", metavar="FILE", help="config whose DATASETS name the dataset")
    parser.add_argument("--dataset", help="registered dataset name (default: the config's first DATASETS.TEST "
                        "with --predictions, else its first DATASETS.TRAIN)")
    parser.add_argument("--predictions", metavar="NAME=PATH", type=parse_run, action="append", default=[],
                        help="a run's instances_predictions.pth (or coco_instances_results.json), or its "
                        "sem_seg_predictions.json; repeatable")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="draw detections scoring at least this")
    parser.add_argument("--top-k", type=int, default=0,
                        help="draw at most the K best detections of each image (0 = all above the threshold)")
    parser.add_argument("--hide-classes", metavar="NAME,...", type=lambda text: [n for n in text.split(",") if n],
                        help="semantic segmentation: classes left undrawn (default: background, if the dataset "
                        "has it; '' draws all)")
    parser.add_argument("--num-images", type=int, default=0, help="the first N images of the dataset (0 = all)")
    parser.add_argument("--no-ground-truth", action="store_true", help="predictions only")
    parser.add_argument("--scale", type=float, default=1.0, help="drawing scale of each image")
    parser.add_argument("--colors", type=int, default=0,
                        help="save N-colour palette PNGs, several times smaller (0 = full colour)")
    parser.add_argument("--output-dir", help="one PNG per image, named after the image")
    parser.add_argument("--grid", metavar="FILE", help="one PNG with a row per image")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if not args.output_dir and not args.grid:
        parser.error("give --output-dir and/or --grid")
    if not args.dataset and not args.config_file:
        parser.error("give --dataset or --config-file")
    return args


def dataset_name(args):
    if args.dataset:
        return args.dataset
    cfg = load_detection_cfg(args.config_file, args.opts)
    names = cfg.DATASETS.TEST if args.predictions else cfg.DATASETS.TRAIN
    if not names:
        raise SystemExit(f"{args.config_file}: DATASETS.{'TEST' if args.predictions else 'TRAIN'} is empty; "
                         "pass --dataset")
    return names[0]


def main(argv=None):
    args = parse_args(argv)
    written = visualize_dataset(dataset_name(args), runs=args.predictions, out_dir=args.output_dir,
                                grid_file=args.grid, score_threshold=args.score_threshold, top_k=args.top_k,
                                num_images=args.num_images, ground_truth=not args.no_ground_truth,
                                scale=args.scale, colors=args.colors, hide_classes=args.hide_classes)
    print(f"wrote {len(written)} PNG file(s)" + (f" to {args.output_dir}" if args.output_dir else "")
          + (f"; grid: {args.grid}" if args.grid else ""))


if __name__ == "__main__":
    main()

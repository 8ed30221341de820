#!/usr/bin/env python
"""Generate a small detection/segmentation set in Pascal VOC's real on-disk layout.

    python tools/make_demo_voc.py --root datasets/demo_voc --num-train 120 --num-val 40 --seed 0

What it holds and where its images come from: ``adarand_projects.detection_demo.demo_voc`` and
docs/demo_detection.md. Re-running with the same arguments does nothing.
"""
import argparse

from adarand_projects.detection_demo.demo_voc import make_demo_voc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="datasets/demo_voc", help="output root; the tree goes to <root>/VOC2012")
    p.add_argument("--num-train", type=int, default=120)
    p.add_argument("--num-val", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="square image side in pixels")
    p.add_argument("--void-border", type=int, default=2, help="width of the 255 border around objects (0: none)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    voc = make_demo_voc(a.root, a.num_train, a.num_val, a.seed, a.size, a.void_border, progress=not a.quiet)
    print(voc)


if __name__ == "__main__":
    main()

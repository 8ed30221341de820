"""A tiny Pascal VOC tree in the real on-disk layout, with its ground truth in memory.

JPEGs, ``Annotations/*.xml`` (with <pose>, <truncated>, <difficult>), palette PNGs in
``SegmentationObject`` (instance id = XML order + 1, 255 = 1-pixel void border) and
``SegmentationClass`` (class index + 1), ``ImageSets/Main`` and ``ImageSets/Segmentation``.
"""
import os

import numpy as np

from adarand.detection.voc import VOC_CLASSES, VOID
from adarand_projects.detection_demo.voc_writer import voc_dirs, write_image_lists, write_sample


# Train: one single-category image per VOC class (1 or 2 objects), then multi-category ones.
TRAIN_LAYOUTS = [(c,) * (1 + i % 2) for i, c in enumerate(VOC_CLASSES)] + [
    ("cat", "dog"), ("person", "car", "cat"), ("bus", "dog"), ("horse", "person")]
VAL_LAYOUTS = [("cat",), ("dog", "dog"), ("person", "cat"), ("car",)]


def make_fake_voc(root, size=(96, 128), seed=0):
    """Write ``root/VOC2012`` (and a VOC2007 detection copy); return {image_id: ground truth}.

    Ground truth per image: list of (class index, box [x0, y0, x1, y1] in detectron2's
    convention, bool mask H x W; empty when fully covered). Objects are rectangles
    painted in XML order; each is trimmed by a void border so masks are exact.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    truth = {}
    dirs = {year: voc_dirs(os.path.join(root, f"VOC{year}")) for year in ("2007", "2012")}
    layouts = TRAIN_LAYOUTS + VAL_LAYOUTS
    ids = [f"2012_{i:06d}" for i in range(len(layouts))]
    for image_id, names in zip(ids, layouts):
        image = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
        obj_png = np.zeros((height, width), np.uint8)
        cls_png = np.zeros((height, width), np.uint8)
        objects, gt = [], []
        for k, name in enumerate(names):
            w, h = rng.integers(24, 48), rng.integers(24, 40)
            x0, y0 = rng.integers(0, width - w), rng.integers(0, height - h)
            x1, y1 = x0 + w, y0 + h
            c = VOC_CLASSES.index(name)
            image[y0:y1, x0:x1] = (40 + 60 * (c % 4), 200 - 20 * (c % 7), 30 * (c % 5))
            obj_png[y0:y1, x0:x1] = VOID
            cls_png[y0:y1, x0:x1] = VOID
            obj_png[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = k + 1
            cls_png[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = c + 1
            objects.append((name, (x0, y0, x1, y1), int(k == 2)))
        for k, (name, box, _) in enumerate(objects):
            gt.append((VOC_CLASSES.index(name), [float(v) for v in box], obj_png == k + 1))
        truth[image_id] = gt
        voc_objects = [(name, (x0 + 1, y0 + 1, x1, y1), difficult) for name, (x0, y0, x1, y1), difficult in objects]
        write_sample(dirs["2007"], image_id, image, voc_objects)
        write_sample(dirs["2012"], image_id, image, voc_objects, obj_png, cls_png)
    n = len(TRAIN_LAYOUTS)
    splits = {"train": ids[:n], "val": ids[n:], "trainval": ids, "test": ids[n:]}
    for year in ("2007", "2012"):
        write_image_lists(dirs[year], splits)
    return truth

"""A tiny Pascal VOC tree in the real on-disk layout, with its ground truth in memory.

JPEGs, ``Annotations/*.xml`` (with <pose>, <truncated>, <difficult>), palette PNGs in
``SegmentationObject`` (instance id = XML order + 1, 255 = 1-pixel void border) and
``SegmentationClass`` (class index + 1), ``ImageSets/Main`` and ``ImageSets/Segmentation``.
"""
import os

import numpy as np
from PIL import Image

from adarand.detection.voc import VOC_CLASSES, VOID


def _palette():
    rng = np.random.default_rng(1)
    pal = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    pal[0] = 0
    pal[255] = (224, 224, 192)
    return pal.flatten().tolist()


def _save_png(path, array):
    im = Image.fromarray(array.astype(np.uint8), mode="P")
    im.putpalette(_palette())
    im.save(path)


def _xml(image_id, height, width, objects):
    rows = [f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>",
            f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size><segmented>1</segmented>"]
    for name, (x0, y0, x1, y1), difficult in objects:
        rows.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                    f"<difficult>{difficult}</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
                    f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    rows.append("</annotation>")
    return "\n".join(rows)


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
    for year in ("2007", "2012"):
        base = os.path.join(root, f"VOC{year}")
        for sub in ("JPEGImages", "Annotations", "SegmentationObject", "SegmentationClass",
                    "ImageSets/Main", "ImageSets/Segmentation"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
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
        for year in ("2007", "2012"):
            base = os.path.join(root, f"VOC{year}")
            Image.fromarray(image).save(os.path.join(base, "JPEGImages", image_id + ".jpg"), quality=95)
            with open(os.path.join(base, "Annotations", image_id + ".xml"), "w") as f:
                f.write(_xml(image_id, height, width, objects))
        _save_png(os.path.join(root, "VOC2012", "SegmentationObject", image_id + ".png"), obj_png)
        _save_png(os.path.join(root, "VOC2012", "SegmentationClass", image_id + ".png"), cls_png)
    n = len(TRAIN_LAYOUTS)
    splits = {"train": ids[:n], "val": ids[n:], "trainval": ids, "test": ids[n:]}
    for year in ("2007", "2012"):
        for split, members in splits.items():
            for kind in ("Main", "Segmentation"):
                with open(os.path.join(root, f"VOC{year}", "ImageSets", kind, split + ".txt"), "w") as f:
                    f.write("".join(m + "\n" for m in members))
    return truth

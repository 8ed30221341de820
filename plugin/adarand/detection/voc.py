"""Pascal VOC in its official layout: detection splits and instance-segmentation splits.

Registered names (root: ``$DETECTRON2_DATASETS``, default ``./datasets``):

- ``voc_{2007,2012}_det_{train,val,trainval}`` (+ ``voc_2007_det_test``): boxes from
  ``Annotations/*.xml``, image list ``ImageSets/Main/<split>.txt``;
- ``voc_2012_seg_{train,val}``: images of ``ImageSets/Segmentation/<split>.txt`` with boxes
  from the XML and instance masks (RLE) from ``SegmentationObject/*.png``;
- ``voc_2012_seg_{train,val}_single``: the images whose objects all belong to one category.
  This filter is this project's reading, not a split the paper names: the paper (appendix
  B.2) says only that the method "can be naïvely applied to the Pascal VOC-2012 because each
  image has a single category object", which holds for this subset only. The full
  ``voc_2012_seg_*`` is the multi-category setting.

The semantic-segmentation splits (``voc_2012_sem_seg_*``) are in :mod:`adarand.detection.voc_sem_seg`.

``SegmentationObject`` PNGs hold instance ids (the i-th ``<object>`` of the XML is id
i + 1; 0 = background, 255 = void border); each instance's class is checked against
``SegmentationClass``. Objects without a single pixel in the PNG are dropped from the
segmentation splits (they cannot be scored by mask AP). Boxes follow detectron2's VOC
convention: XML coordinates are 1-based inclusive, so xmin/ymin lose 1.

Box checks (:func:`checked_box`): an inverted box (xmax < xmin or ymax < ymin), a box of
zero width or height (xmax = xmin - 1 or ymax = ymin - 1: empty in the inclusive convention)
and a box entirely outside the image are errors naming the file and the object. A box
that only extends past the image border is clipped to it, as Detectron2's mapper would
do, and each split logs one warning counting such boxes.
"""
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
VOID = 255
DET_SPLITS = {
    "2007": ("train", "val", "trainval", "test"),
    "2012": ("train", "val", "trainval"),
}
SEG_SPLITS = ("train", "val")
logger = logging.getLogger(__name__)


def _read_ids(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VOC image list not found: {path}")
    with open(path) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise ValueError(f"VOC image list is empty: {path}")
    return ids


def _text(node, tag, path):
    child = node.find(tag)
    if child is None or child.text is None:
        raise ValueError(f"{path}: missing <{tag}>")
    return child.text.strip()


def box_coordinates(path: str, index: int, name: str, bndbox: ET.Element) -> list[float]:
    """(xmin, ymin, xmax, ymax) of a ``<bndbox>``; a non-numeric or non-finite value (``nan``, ``inf``)
    raises ``ValueError`` naming the file, the object and the tag."""
    values = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = _text(bndbox, tag, path)
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{path}: object {index} ({name!r}) has <{tag}>{text}</{tag}>: box coordinates "
                             "must be finite numbers")
        values.append(value)
    return values


def checked_box(path: str, index: int, name: str, raw: Sequence[float], width: int,
                height: int) -> tuple[list[float], bool]:
    """Detectron2 box ``[xmin - 1, ymin - 1, xmax, ymax]`` of the 1-based XML ``raw``, clipped to the
    image; returns (box, clipped). Inverted, empty and fully outside boxes raise ``ValueError``."""
    x0, y0, x1, y1 = raw[0] - 1.0, raw[1] - 1.0, raw[2], raw[3]
    what = f"{path}: object {index} ({name!r}) box (xmin, ymin, xmax, ymax) = {tuple(raw)}"
    if x1 < x0 or y1 < y0:
        raise ValueError(f"{what} is inverted (xmax < xmin or ymax < ymin)")
    if x1 == x0 or y1 == y0:
        raise ValueError(f"{what} has zero area")
    box = [max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))]
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"{what} lies outside the {width} x {height} image")
    return box, box != [x0, y0, x1, y1]


def parse_voc_xml(path: str, class_names: Sequence[str] = VOC_CLASSES,
                  clipped: list[int] | None = None) -> tuple[int, int, list[dict[str, Any]]]:
    """(height, width, [object dicts in XML order]) of one VOC annotation file.

    ``clipped``: a list to which the index of every object clipped to the image is appended.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VOC annotation not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"malformed VOC annotation {path}: {e}") from e
    try:
        size = root.find("size")
        if size is None:
            raise ValueError(f"{path}: missing <size>")
        height, width = int(_text(size, "height", path)), int(_text(size, "width", path))
        objects = []
        for index, obj in enumerate(root.findall("object"), start=1):
            name = _text(obj, "name", path)
            if name not in class_names:
                raise ValueError(f"{path}: unknown class {name!r}")
            box = obj.find("bndbox")
            if box is None:
                raise ValueError(f"{path}: object {name!r} has no <bndbox>")
            raw = box_coordinates(path, index, name, box)
            bbox, was_clipped = checked_box(path, index, name, raw, width, height)
            if was_clipped and clipped is not None:
                clipped.append(index)
            difficult = obj.find("difficult")
            objects.append({
                "category_id": class_names.index(name),
                "bbox": bbox,
                "bbox_mode": BoxMode.XYXY_ABS,
                "difficult": int(difficult.text) if difficult is not None and difficult.text else 0,
            })
    except (TypeError, ValueError) as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"malformed VOC annotation {path}: {e}") from e
    return height, width, objects


def _read_index_png(path, shape, source="the annotation's"):
    """The H x W indices of a palette (P) or grey (L) PNG, never converted through its colours;
    a missing, unreadable or other-mode file, or a size other than ``shape`` (``source``'s), is an
    error naming ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VOC segmentation PNG not found: {path}")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"{path}: expected a palette (P) or grey (L) PNG, got mode {im.mode}")
            array = np.asarray(im)
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read VOC segmentation PNG {path}: {type(e).__name__}: {e}") from e
    if array.shape != shape:
        raise ValueError(f"{path}: size {array.shape} differs from {source} {shape}")
    return array


def instance_masks(object_png: np.ndarray, class_png: np.ndarray, objects: Sequence[dict[str, Any]],
                   class_names: Sequence[str] = VOC_CLASSES) -> list[np.ndarray]:
    """Boolean H x W mask per XML object (id i + 1), checked against the class PNG."""
    ids = np.unique(object_png)
    ids = ids[(ids != 0) & (ids != VOID)]
    if ids.size and ids.max() > len(objects):
        raise ValueError(f"instance id {int(ids.max())} but only {len(objects)} objects in the XML")
    masks = []
    for i, obj in enumerate(objects):
        mask = object_png == i + 1
        if mask.any():
            classes, counts = np.unique(class_png[mask], return_counts=True)
            label = int(classes[counts.argmax()])
            if label != obj["category_id"] + 1:
                raise ValueError(f"instance {i + 1} is {class_names[obj['category_id']]!r} in the XML but "
                                 f"class {label} in SegmentationClass")
        masks.append(mask)
    return masks


def load_voc_detection(root: str, split: str, class_names: Sequence[str] = VOC_CLASSES) -> list[dict[str, Any]]:
    """Detectron2 dicts of ``ImageSets/Main/<split>.txt`` under ``root`` (e.g. .../VOC2007)."""
    dicts: list[dict[str, Any]] = []
    clipped: list[int] = []
    for image_id in _read_ids(os.path.join(root, "ImageSets", "Main", split + ".txt")):
        height, width, objects = parse_voc_xml(os.path.join(root, "Annotations", image_id + ".xml"), class_names,
                                               clipped)
        dicts.append({"file_name": os.path.join(root, "JPEGImages", image_id + ".jpg"), "image_id": image_id,
                      "height": height, "width": width, "annotations": objects})
    _warn_clipped(clipped, root, split)
    return dicts


def _warn_clipped(clipped, root, split):
    if clipped:
        logger.warning("VOC %s split %r: %d box(es) extended past their image and were clipped to it",
                       root, split, len(clipped))


def load_voc_instance_segmentation(root: str, split: str, single_category: bool = False,
                                   class_names: Sequence[str] = VOC_CLASSES) -> list[dict[str, Any]]:
    """Dicts of ``ImageSets/Segmentation/<split>.txt`` with RLE instance masks.

    ``single_category``: keep only images whose objects all have one class (our reading of the
    paper's "each image has a single category object"; see docs/detection.md).
    """
    import pycocotools.mask as mask_util

    dicts: list[dict[str, Any]] = []
    clipped: list[int] = []
    for image_id in _read_ids(os.path.join(root, "ImageSets", "Segmentation", split + ".txt")):
        xml = os.path.join(root, "Annotations", image_id + ".xml")
        height, width, objects = parse_voc_xml(xml, class_names, clipped)
        if single_category and len({o["category_id"] for o in objects}) != 1:
            continue
        obj_path = os.path.join(root, "SegmentationObject", image_id + ".png")
        cls_path = os.path.join(root, "SegmentationClass", image_id + ".png")
        obj_png = _read_index_png(obj_path, (height, width))
        cls_png = _read_index_png(cls_path, (height, width))
        try:
            masks = instance_masks(obj_png, cls_png, objects, class_names)
        except ValueError as e:
            raise ValueError(f"{obj_path}: {e}") from e
        annotations = []
        for obj, mask in zip(objects, masks):
            if mask.any():
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                annotations.append({**obj, "segmentation": rle})
        dicts.append({"file_name": os.path.join(root, "JPEGImages", image_id + ".jpg"), "image_id": image_id,
                      "height": height, "width": width, "annotations": annotations})
    _warn_clipped(clipped, root, split)
    return dicts


def _register(name, loader, **metadata):
    """Register (or re-point) ``name``: ``loader`` runs only when ``DatasetCatalog.get`` is called."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)


def datasets_root(root: str | None = None) -> str:
    """``root``, else ``$DETECTRON2_DATASETS``, else ``datasets`` (Detectron2's rule for its builtin sets)."""
    return root if root is not None else os.getenv("DETECTRON2_DATASETS", "datasets")


def register_voc(root: str | None = None) -> list[str]:
    """Register every split above under ``root`` (default ``$DETECTRON2_DATASETS`` or ``datasets``).

    Calling it again re-points the names (harmless). Returns the registered names.
    """
    root = datasets_root(root)
    names = []
    for year, splits in DET_SPLITS.items():
        dirname = os.path.join(root, f"VOC{year}")
        for split in splits:
            name = f"voc_{year}_det_{split}"
            _register(name, lambda d=dirname, s=split: load_voc_detection(d, s),
                      thing_classes=list(VOC_CLASSES), dirname=dirname, year=int(year), split=split,
                      evaluator_type="pascal_voc")
            names.append(name)
    dirname = os.path.join(root, "VOC2012")
    for split in SEG_SPLITS:
        for single in (False, True):
            name = f"voc_2012_seg_{split}" + ("_single" if single else "")
            _register(name, lambda s=split, o=single: load_voc_instance_segmentation(dirname, s, o),
                      thing_classes=list(VOC_CLASSES), dirname=dirname, year=2012, split=split,
                      evaluator_type="coco")
            names.append(name)
    return names

"""Samples written in Pascal VOC's on-disk layout (used by the demo-set generator and the tests).

``<voc>/JPEGImages/<id>.jpg``, ``Annotations/<id>.xml`` (VOC's fields; boxes 1-based, inclusive),
``SegmentationObject/<id>.png`` and ``SegmentationClass/<id>.png`` (palette PNGs with VOC's colour
map: instance index / class index + 1, 255 = void), ``ImageSets/{Main,Segmentation}/<split>.txt``.
Every file is written atomically (:mod:`adarand.files`).
"""
import os
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from adarand.detection.voc_sem_seg import voc_palette
from adarand.files import save_image, write_text

SUBDIRS = {"jpg": "JPEGImages", "xml": "Annotations", "obj": "SegmentationObject", "cls": "SegmentationClass",
           "main": os.path.join("ImageSets", "Main"), "seg": os.path.join("ImageSets", "Segmentation")}


def voc_dirs(voc):
    """``{kind: directory}`` of a VOC year directory (``SUBDIRS``), created."""
    dirs = {kind: os.path.join(voc, sub) for kind, sub in SUBDIRS.items()}
    for path in dirs.values():
        os.makedirs(path, exist_ok=True)
    return dirs


def annotation_xml(file_id, width, height, objects, database=None):
    """VOC XML of ``objects``: ``[(class name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)]``."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{file_id}.jpg"
    if database:
        ET.SubElement(ET.SubElement(root, "source"), "database").text = database
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for name, box, difficult in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bndbox, tag).text = str(int(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def save_palette_png(array, path, palette=None):
    """``array`` (H x W, values 0..255) as a palette PNG (VOC's colours by default)."""
    image = Image.fromarray(np.asarray(array).astype(np.uint8), mode="P")
    image.putpalette((voc_palette() if palette is None else palette).reshape(-1).tolist())
    save_image(image, path)


def write_sample(dirs, file_id, image, objects, instance_png=None, class_png=None, database=None):
    """One image of a VOC tree: the JPEG (quality 95), its XML and, when given, its two PNGs.

    Args:
        dirs: :func:`voc_dirs` of the tree.
        image: H x W x 3 uint8 RGB.
        objects: as in :func:`annotation_xml`.
        instance_png, class_png: H x W uint8 (instance / class index + 1, 255 void) or None.
    """
    height, width = image.shape[:2]
    save_image(Image.fromarray(image), os.path.join(dirs["jpg"], f"{file_id}.jpg"), quality=95)
    write_text(os.path.join(dirs["xml"], f"{file_id}.xml"), annotation_xml(file_id, width, height, objects, database))
    if instance_png is not None:
        save_palette_png(instance_png, os.path.join(dirs["obj"], f"{file_id}.png"))
    if class_png is not None:
        save_palette_png(class_png, os.path.join(dirs["cls"], f"{file_id}.png"))


def write_image_lists(dirs, splits, kinds=("main", "seg")):
    """``ImageSets/<kind>/<split>.txt`` for ``splits`` = ``{split: [file ids]}``."""
    for kind in kinds:
        for split, ids in splits.items():
            write_text(os.path.join(dirs[kind], f"{split}.txt"), "".join(i + "\n" for i in ids))

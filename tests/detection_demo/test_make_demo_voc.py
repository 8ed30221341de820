"""The generated demo set: Pascal VOC's real layout, boxes = mask extents, one category per image."""
import filecmp
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("skimage")
pytest.importorskip("sklearn")
from adarand_projects.detection_demo.demo_voc import make_demo_voc  # noqa: E402

SIZE = 128
# VOC's published colours (independent of the generator's colour-map code).
VOC_COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 8: (64, 0, 0), 13: (192, 0, 128), 15: (192, 128, 128),
               20: (0, 64, 128), 255: (224, 224, 192)}
VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_voc")
    voc = make_demo_voc(str(root), num_train=6, num_val=3, seed=0, size=SIZE, progress=False)
    return root, voc


def _ids(voc, split, kind="Main"):
    with open(os.path.join(voc, "ImageSets", kind, f"{split}.txt")) as f:
        return f.read().split()


def _objects(voc, file_id):
    root = ET.parse(os.path.join(voc, "Annotations", f"{file_id}.xml")).getroot()
    return root, root.findall("object")


def test_tree_has_voc_layout(tree):
    _, voc = tree
    train, val = _ids(voc, "train"), _ids(voc, "val")
    assert len(train) == 6 and len(val) == 3 and not set(train) & set(val)
    assert _ids(voc, "train", "Segmentation") == train and _ids(voc, "val", "Segmentation") == val
    for file_id in train + val:
        img = Image.open(os.path.join(voc, "JPEGImages", f"{file_id}.jpg"))
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (SIZE, SIZE)
        for kind in ("SegmentationObject", "SegmentationClass"):
            png = Image.open(os.path.join(voc, kind, f"{file_id}.png"))
            assert png.format == "PNG" and png.mode == "P" and png.size == (SIZE, SIZE)
            pal = np.array(png.getpalette()[: 256 * 3]).reshape(256, 3)
            for index, colour in VOC_COLOURS.items():
                assert tuple(pal[index]) == colour, (kind, index)
        root, objs = _objects(voc, file_id)
        assert [int(root.find(f"size/{t}").text) for t in ("width", "height", "depth")] == [SIZE, SIZE, 3]
        assert objs and all(o.find(t) is not None for o in objs for t in ("pose", "truncated", "difficult"))


def test_boxes_are_instance_mask_extents_and_classes_match(tree):
    _, voc = tree
    for file_id in _ids(voc, "trainval"):
        inst = np.array(Image.open(os.path.join(voc, "SegmentationObject", f"{file_id}.png")))
        cls = np.array(Image.open(os.path.join(voc, "SegmentationClass", f"{file_id}.png")))
        _, objs = _objects(voc, file_id)
        assert set(np.unique(inst)) - {0, 255} == set(range(1, len(objs) + 1))
        for k, obj in enumerate(objs, 1):
            rows, cols = np.nonzero(inst == k)
            box = [int(obj.find(f"bndbox/{t}").text) for t in ("xmin", "ymin", "xmax", "ymax")]
            assert box == [cols.min() + 1, rows.min() + 1, cols.max() + 1, rows.max() + 1], (file_id, k)
            assert np.all(cls[inst == k] == VOC_CLASSES.index(obj.find("name").text) + 1)
        assert np.array_equal(inst == 0, cls == 0) and np.array_equal(inst == 255, cls == 255)


def test_one_category_per_image_and_every_demo_class_used(tree):
    _, voc = tree
    seen = set()
    for file_id in _ids(voc, "trainval"):
        names = {o.find("name").text for o in _objects(voc, file_id)[1]}
        assert len(names) == 1 and names <= set(VOC_CLASSES)
        seen |= names
    assert seen == {"cat", "horse", "person"}


def test_detectron2_voc_loader_reads_the_tree(tree):
    pytest.importorskip("detectron2")
    from detectron2.data.datasets.pascal_voc import load_voc_instances

    _, voc = tree
    dicts = load_voc_instances(voc, "val", VOC_CLASSES)
    assert [d["image_id"] for d in dicts] == _ids(voc, "val")
    for d in dicts:
        inst = np.array(Image.open(os.path.join(voc, "SegmentationObject", f"{d['image_id']}.png")))
        for k, ann in enumerate(d["annotations"], 1):
            rows, cols = np.nonzero(inst == k)  # 0-based box with exclusive far edge
            assert ann["bbox"] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_rerun_is_a_no_op_and_same_seed_gives_same_files(tree, tmp_path):
    root, voc = tree
    stamp = os.path.getmtime(os.path.join(voc, "JPEGImages", "2026_000001.jpg"))
    assert make_demo_voc(str(root), num_train=6, num_val=3, seed=0, size=SIZE, progress=False) == voc
    assert os.path.getmtime(os.path.join(voc, "JPEGImages", "2026_000001.jpg")) == stamp
    again = make_demo_voc(str(tmp_path), num_train=6, num_val=3, seed=0, size=SIZE, progress=False)
    for kind in ("Annotations", "SegmentationObject", "SegmentationClass", "JPEGImages"):
        names = sorted(os.listdir(os.path.join(voc, kind)))
        match, mismatch, errors = filecmp.cmpfiles(os.path.join(voc, kind), os.path.join(again, kind), names, False)
        assert not mismatch and not errors, kind


def test_project_voc_loader_reads_the_tree_as_single_category_instances(tree):
    pytest.importorskip("detectron2")
    import pycocotools.mask as mask_util

    from adarand.detection.voc import load_voc_detection, load_voc_instance_segmentation

    _, voc = tree
    for split in ("train", "val"):
        seg = load_voc_instance_segmentation(voc, split, single_category=True)
        det = load_voc_detection(voc, split)
        assert [d["image_id"] for d in seg] == [d["image_id"] for d in det] == _ids(voc, split)
        for s, d in zip(seg, det):
            inst = np.array(Image.open(os.path.join(voc, "SegmentationObject", f"{s['image_id']}.png")))
            assert len(s["annotations"]) == len(d["annotations"]) == inst[inst != 255].max()
            for k, (a, b) in enumerate(zip(s["annotations"], d["annotations"]), 1):
                assert np.array_equal(mask_util.decode(a["segmentation"]).astype(bool), inst == k)
                assert a["bbox"] == b["bbox"] and VOC_CLASSES[a["category_id"]] in ("cat", "horse", "person")

"""VOC loaders on a generated tree: boxes, classes, RLE masks, single-category subset, errors."""
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from fake_voc import TRAIN_LAYOUTS, VAL_LAYOUTS

from adarand.detection import VOC_CLASSES, load_voc_detection, load_voc_instance_segmentation, register_voc


def test_segmentation_split_matches_ground_truth(fake_voc):
    root, truth = fake_voc
    dicts = DatasetCatalog.get("voc_2012_seg_train")
    assert [d["image_id"] for d in dicts] == sorted(truth)[: len(TRAIN_LAYOUTS)]
    for d in dicts:
        expected = [g for g in truth[d["image_id"]] if g[2].any()]  # fully covered objects are dropped
        assert (d["height"], d["width"]) == (96, 128)
        assert len(d["annotations"]) == len(expected)
        for ann, (cls, box, mask) in zip(d["annotations"], expected):
            assert ann["category_id"] == cls
            assert ann["bbox"] == box
            np.testing.assert_array_equal(mask_util.decode(ann["segmentation"]).astype(bool), mask)


def test_detection_split_keeps_every_xml_object(fake_voc):
    root, truth = fake_voc
    dicts = DatasetCatalog.get("voc_2007_det_test")
    assert len(dicts) == len(VAL_LAYOUTS)
    for d in dicts:
        assert [(a["category_id"], a["bbox"]) for a in d["annotations"]] == [(c, b) for c, b, _ in truth[d["image_id"]]]
        assert all("segmentation" not in a for a in d["annotations"])
    assert MetadataCatalog.get("voc_2007_det_test").year == 2007


def test_single_category_subset(fake_voc):
    full = DatasetCatalog.get("voc_2012_seg_train")
    single = DatasetCatalog.get("voc_2012_seg_train_single")
    expected = [d["image_id"] for d, names in zip(full, TRAIN_LAYOUTS) if len(set(names)) == 1]
    assert [d["image_id"] for d in single] == expected
    assert len(single) == len(VOC_CLASSES) < len(full)
    assert all(len({a["category_id"] for a in d["annotations"]}) == 1 for d in single)


def test_register_twice_is_harmless(fake_voc, tmp_path):
    root, _ = fake_voc
    register_voc(str(tmp_path))
    names = register_voc(root)
    assert "voc_2012_seg_val_single" in names and "voc_2012_det_trainval" in names
    assert len(DatasetCatalog.get("voc_2012_seg_val")) == len(VAL_LAYOUTS)


def test_missing_files_are_named(fake_voc, tmp_path):
    root, _ = fake_voc
    with pytest.raises(FileNotFoundError, match="ImageSets/Segmentation/train.txt"):
        load_voc_instance_segmentation(str(tmp_path), "train")
    voc = os.path.join(root, "VOC2012")
    os.makedirs(tmp_path / "ImageSets" / "Main")
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("nothere\n")
    with pytest.raises(FileNotFoundError, match="nothere.xml"):
        load_voc_detection(str(tmp_path), "train")
    assert load_voc_detection(voc, "val")


def test_malformed_files_are_named(fake_voc, tmp_path):
    root, _ = fake_voc
    src = os.path.join(root, "VOC2012")
    for sub in ("Annotations", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(tmp_path / sub)
    image_id = "2012_000000"
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text(image_id + "\n")
    for sub in ("SegmentationObject", "SegmentationClass"):
        os.link(os.path.join(src, sub, image_id + ".png"), tmp_path / sub / (image_id + ".png"))
    xml = open(os.path.join(src, "Annotations", image_id + ".xml")).read()
    (tmp_path / "Annotations" / (image_id + ".xml")).write_text(xml.replace("</annotation>", ""))
    with pytest.raises(ValueError, match=f"malformed VOC annotation .*{image_id}.xml"):
        load_voc_instance_segmentation(str(tmp_path), "train")
    # The XML says dog, SegmentationClass says aeroplane (class 1): the mismatch names the PNG.
    (tmp_path / "Annotations" / (image_id + ".xml")).write_text(xml.replace("aeroplane", "dog"))
    with pytest.raises(ValueError, match=f"{image_id}.png: instance 1 is 'dog'"):
        load_voc_instance_segmentation(str(tmp_path), "train")

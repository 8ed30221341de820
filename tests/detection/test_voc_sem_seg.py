"""VOC 2012 semantic segmentation (+ SBD train_aug) on a generated tree: dicts, labels as Detectron2
reads them, metadata and colours, train_aug's set arithmetic, the label cache, and errors naming files."""
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.visualizer import Visualizer
from PIL import Image
from scipy.io import savemat

import adarand.detection.voc_sem_seg as voc_sem_seg
from adarand.detection import VOC_CLASSES, register_voc_sem_seg, voc_palette
from adarand_projects.detection_demo.voc_writer import save_palette_png, voc_dirs, write_image_lists, write_sample

SHAPE = (24, 32)
VOC_SPLITS = {"train": ["2008_a", "2008_b", "2008_c"], "val": ["2008_d", "2008_e"]}
SBD_SPLITS = {"train": ["2008_b", "2008_x", "2008_d"], "val": ["2008_y", "2008_e", "2008_z"]}
TRAIN_AUG = ["2008_a", "2008_b", "2008_c", "2008_x", "2008_y", "2008_z"]  # VOC val (d, e) left out


def _label(rng, shape=SHAPE):
    label = rng.integers(0, len(VOC_CLASSES) + 1, shape).astype(np.uint8)
    label[0] = 255  # void border row
    return label


def _write_mat(path, segmentation):
    savemat(path, {"GTcls": {"Segmentation": segmentation, "CategoriesPresent": np.unique(segmentation)}})


def make_tree(root, sbd_dir="SBD", seed=0):
    """VOC2012 (JPEGs of every id, P-mode class PNGs of VOC's ids) and SBD's cls/*.mat + lists under
    ``root``; returns ({id: VOC label}, {id: SBD label})."""
    rng = np.random.default_rng(seed)
    dirs = voc_dirs(os.path.join(root, "VOC2012"))
    voc_ids = VOC_SPLITS["train"] + VOC_SPLITS["val"]
    all_ids = sorted(set(voc_ids) | set(SBD_SPLITS["train"] + SBD_SPLITS["val"]))
    voc_labels = {i: _label(rng) for i in voc_ids}
    for i in all_ids:
        image = rng.integers(0, 255, SHAPE + (3,)).astype(np.uint8)
        write_sample(dirs, i, image, [], class_png=voc_labels.get(i))
    write_image_lists(dirs, VOC_SPLITS, kinds=("seg",))
    sbd = os.path.join(root, sbd_dir)
    os.makedirs(os.path.join(sbd, "cls"))
    sbd_labels = {}
    for split, ids in SBD_SPLITS.items():
        with open(os.path.join(sbd, split + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in ids))
        for i in ids:
            sbd_labels[i] = _label(rng)
            sbd_labels[i][0] = 0  # SBD has no void pixels
            _write_mat(os.path.join(sbd, "cls", i + ".mat"), sbd_labels[i])
    return voc_labels, sbd_labels


@pytest.fixture
def tree(tmp_path):
    labels = make_tree(str(tmp_path))
    register_voc_sem_seg(str(tmp_path))
    return str(tmp_path), labels


def _mapped_label(d):
    """The ``sem_seg`` that Detectron2's own DatasetMapper gives the dict (it reads the file with mode "L")."""
    mapper = DatasetMapper(is_train=False, augmentations=[], image_format="RGB")
    return mapper(dict(d))["sem_seg"].numpy()


def test_registered_at_import():
    names = DatasetCatalog.list()
    assert {"voc_2012_sem_seg_train", "voc_2012_sem_seg_val", "voc_2012_sem_seg_train_aug"} <= set(names)


@pytest.mark.parametrize("split", ["train", "val"])
def test_voc_splits_give_detectron2_the_class_indices(tree, split):
    root, (voc_labels, _) = tree
    voc = os.path.join(root, "VOC2012")
    dicts = DatasetCatalog.get(f"voc_2012_sem_seg_{split}")
    assert [d["image_id"] for d in dicts] == VOC_SPLITS[split]
    for d in dicts:
        assert set(d) == {"file_name", "sem_seg_file_name", "height", "width", "image_id"}
        assert d["file_name"] == os.path.join(voc, "JPEGImages", d["image_id"] + ".jpg")
        assert (d["height"], d["width"]) == SHAPE
        np.testing.assert_array_equal(_mapped_label(d), voc_labels[d["image_id"]])
        # Why the dicts name a grey copy: read as "L", VOC's palette PNG gives luminance, not indices.
        original = os.path.join(voc, "SegmentationClass", d["image_id"] + ".png")
        assert Image.open(original).mode == "P"
        assert not np.array_equal(read_image(original, "L")[..., 0], voc_labels[d["image_id"]])


def test_metadata_and_visualizer_colours(tree):
    meta = MetadataCatalog.get("voc_2012_sem_seg_val")
    assert meta.stuff_classes == ["background", *VOC_CLASSES] and len(meta.stuff_classes) == 21
    assert meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
    assert meta.stuff_colors == voc_palette()[:21].tolist()
    assert meta.stuff_colors[1] == [128, 0, 0] and meta.stuff_colors[15] == [192, 128, 128]  # aeroplane, person
    label = np.full((64, 64), 1, np.uint8)
    label[:, 32:] = 15
    label[60:] = 255
    drawn = Visualizer(np.full((64, 64, 3), 255, np.uint8), meta).draw_sem_seg(label, alpha=1.0).get_image()
    assert drawn[5, 5].tolist() == [128, 0, 0] and drawn[5, 60].tolist() == [192, 128, 128]
    assert drawn[62, 5].tolist() == [255, 255, 255]  # ignore pixels are not drawn


@pytest.mark.parametrize("sbd_dir", ["SBD", os.path.join("benchmark_RELEASE", "dataset")])
def test_train_aug_set_arithmetic_and_label_sources(tmp_path, sbd_dir):
    voc_labels, sbd_labels = make_tree(str(tmp_path), sbd_dir)
    register_voc_sem_seg(str(tmp_path))
    dicts = DatasetCatalog.get("voc_2012_sem_seg_train_aug")
    assert [d["image_id"] for d in dicts] == TRAIN_AUG
    for d in dicts:
        i = d["image_id"]
        expected = voc_labels[i] if i in VOC_SPLITS["train"] else sbd_labels[i]
        np.testing.assert_array_equal(_mapped_label(d), expected)
    assert not np.array_equal(voc_labels["2008_b"], sbd_labels["2008_b"])  # so VOC's label is seen to win
    assert MetadataCatalog.get("voc_2012_sem_seg_train_aug").evaluator_type == "sem_seg"


def test_train_aug_without_sbd_names_where_it_looked(tmp_path):
    make_tree(str(tmp_path), sbd_dir="elsewhere")
    register_voc_sem_seg(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="benchmark_RELEASE/dataset") as err:
        DatasetCatalog.get("voc_2012_sem_seg_train_aug")
    assert os.path.join(str(tmp_path), "SBD") in str(err.value)


def test_registration_reads_nothing(tmp_path):
    missing = tmp_path / "no_datasets_here"
    register_voc_sem_seg(str(missing))
    assert not missing.exists()
    with pytest.raises(FileNotFoundError, match="ImageSets/Segmentation/val.txt"):
        DatasetCatalog.get("voc_2012_sem_seg_val")


def test_labels_are_cached_and_refreshed_when_their_source_changes(tree, monkeypatch):
    root, (voc_labels, _) = tree
    first = DatasetCatalog.get("voc_2012_sem_seg_train")

    def refuse(*args):
        raise AssertionError("a cached label was read again")

    with monkeypatch.context() as m:
        m.setattr(voc_sem_seg, "read_class_png", refuse)
        assert DatasetCatalog.get("voc_2012_sem_seg_train") == first
    new = np.full(SHAPE, 7, np.uint8)
    save_palette_png(new, os.path.join(root, "VOC2012", "SegmentationClass", "2008_a.png"))
    d = DatasetCatalog.get("voc_2012_sem_seg_train")[0]
    np.testing.assert_array_equal(_mapped_label(d), new)


def _png(array, mode="P"):
    def write(path):
        if mode == "P":
            save_palette_png(array, path)
        else:
            Image.fromarray(np.stack([array] * 3, -1)).save(path)
    return write


def _garbage(path):
    with open(path, "wb") as f:
        f.write(b"not an image at all")


def _truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _mat(segmentation=None, **fields):
    return lambda path: savemat(path, fields or {"GTcls": {"Segmentation": segmentation}})


BAD_VOC_PNG = {
    "missing": (os.remove, FileNotFoundError, "not found"),
    "unreadable": (_garbage, ValueError, "cannot read"),
    "truncated": (_truncate, ValueError, "cannot read"),
    "rgb": (_png(np.zeros(SHAPE, np.uint8), mode="RGB"), ValueError, "got mode RGB"),
    "size": (_png(np.zeros((SHAPE[0] + 1, SHAPE[1]), np.uint8)), ValueError, "differs from its image"),
    "value": (_png(np.full(SHAPE, 21, np.uint8)), ValueError, r"\[21\] are neither a class index"),
}
BAD_SBD_MAT = {
    "missing": (os.remove, FileNotFoundError, "SBD label not found"),
    "unreadable": (_garbage, ValueError, "cannot read SBD label"),
    "no GTcls": (_mat(other=np.zeros(SHAPE)), ValueError, "no GTcls.Segmentation"),
    "float": (_mat(np.zeros(SHAPE)), ValueError, "float64"),
    "size": (_mat(np.zeros((SHAPE[0], SHAPE[1] - 1), np.uint8)), ValueError, "differs from its image"),
    "value": (_mat(np.full(SHAPE, 30, np.uint8)), ValueError, r"\[30\] are neither a class index"),
}


@pytest.mark.parametrize("case", BAD_VOC_PNG)
def test_bad_class_png_is_named(tree, case):
    root, _ = tree
    spoil, error, message = BAD_VOC_PNG[case]
    path = os.path.join(root, "VOC2012", "SegmentationClass", "2008_c.png")
    spoil(path)
    with pytest.raises(error, match=message) as err:
        DatasetCatalog.get("voc_2012_sem_seg_train")
    assert path in str(err.value)


@pytest.mark.parametrize("case", BAD_SBD_MAT)
def test_bad_sbd_label_is_named(tree, case):
    root, _ = tree
    spoil, error, message = BAD_SBD_MAT[case]
    path = os.path.join(root, "SBD", "cls", "2008_y.mat")
    spoil(path)
    with pytest.raises(error, match=message) as err:
        DatasetCatalog.get("voc_2012_sem_seg_train_aug")
    assert path in str(err.value)


def test_bad_cached_source_is_checked_again(tree):
    """A label already in the cache is read again once its source changes, and checked."""
    root, _ = tree
    DatasetCatalog.get("voc_2012_sem_seg_val")
    path = os.path.join(root, "VOC2012", "SegmentationClass", "2008_e.png")
    save_palette_png(np.full(SHAPE, 99, np.uint8), path)
    with pytest.raises(ValueError, match=r"\[99\] are neither") as err:
        DatasetCatalog.get("voc_2012_sem_seg_val")
    assert path in str(err.value)


@pytest.mark.parametrize("case", ["missing", "unreadable"])
def test_bad_image_is_named(tree, case):
    root, _ = tree
    path = os.path.join(root, "VOC2012", "JPEGImages", "2008_d.jpg")
    (os.remove if case == "missing" else _garbage)(path)
    with pytest.raises((FileNotFoundError, ValueError)) as err:
        DatasetCatalog.get("voc_2012_sem_seg_val")
    assert path in str(err.value)

"""Datasets read from fake trees in their real layouts; splits, subsets and transforms."""
import collections
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import fake_trees as ft
from adarand.classification import datasets
from adarand.classification.datasets import build_dataset, restrict_logits
from adarand.classification.splits import per_class_subset, train_val_split
from adarand.classification.transforms import build_transforms

TRAINABLE = [n for n in ft.MAKERS if n not in datasets.TEST_ONLY]
NUM_CLASSES, PER_CLASS = 4, 4


def _check_split(ds, expected_per_class, num_classes, label_of_colour=lambda c: c):
    assert len(ds) == len(ds.targets) == expected_per_class * num_classes
    counts = collections.Counter(ds.targets)
    assert counts == {label_of_colour(c): expected_per_class for c in range(num_classes)}
    for i in range(len(ds)):  # every label belongs to its image (class colours differ)
        image, label = ds[i]
        assert isinstance(label, int) and label == ds.targets[i]
        assert label == label_of_colour(ft.nearest_class(image, num_classes))


@pytest.mark.parametrize("name", TRAINABLE)
def test_train_and_test_splits(tmp_path, name):
    root = ft.make_fake(name, tmp_path, num_classes=NUM_CLASSES, per_class=PER_CLASS)
    train = build_dataset(name, root, "train")
    test = build_dataset(name, root, "test")
    _check_split(train, PER_CLASS, NUM_CLASSES)
    _check_split(test, ft.num_test(PER_CLASS), NUM_CLASSES)
    for ds in (train, test):
        assert ds.num_classes == len(ds.classes) == NUM_CLASSES
        assert all(isinstance(c, str) for c in ds.classes)
    assert train.classes == test.classes


def test_transform_is_applied(tmp_path):
    root = ft.make_fake("cub", tmp_path, num_classes=2, per_class=2)
    ds = build_dataset("cub", root, "test", transform=build_transforms(False, size=8))
    image, _ = ds[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32


def test_class_names_follow_the_official_files(tmp_path):
    cars = build_dataset("cars", ft.make_fake("cars", tmp_path, num_classes=2, per_class=2), "test")
    assert cars.classes == ["AM General Hummer SUV 2000", "AM General Hummer SUV 2001"]
    flowers = build_dataset("flowers", ft.make_fake("flowers", tmp_path, num_classes=2, per_class=2), "test")
    assert flowers.classes == ["pink primrose", "hard-leaved pocket orchid"]
    cub = build_dataset("cub", ft.make_fake("cub", tmp_path, num_classes=2, per_class=2), "train")
    assert cub.classes == ["001.Bird_0", "002.Bird_1"]


@pytest.mark.parametrize("name", ["imagenet-r", "imagenet-a", "imagenet-sketch"])
def test_imagenet_subsets_map_to_imagenet_indices(tmp_path, name):
    root = ft.make_fake(name, tmp_path, num_classes=3, per_class=2)
    ds = build_dataset(name, root, "test")
    _check_split(ds, ft.num_test(2), 3)
    reference = ft.fake_wnids(7)
    assert ds.classes == reference[1::2]
    assert ds.imagenet_class_indices == [reference.index(w) for w in ds.classes] == [1, 3, 5]
    logits = torch.arange(14.0).reshape(2, 7)
    assert torch.equal(restrict_logits(logits, ds.imagenet_class_indices), logits[:, [1, 3, 5]])
    with pytest.raises(ValueError, match="evaluation-only"):
        build_dataset(name, root, "train")


def test_imagenet_r_reads_wnids_from_a_sibling_imagenet_tree(tmp_path):
    imagenet = ft.make_fake("imagenet", tmp_path, num_classes=5, per_class=2)
    root = tmp_path / "imagenet-r"
    for wnid in sorted(os.listdir(os.path.join(imagenet, "train")))[3:]:
        ft._write(root / wnid / "a.jpg", 0, 0, 8)
    ds = build_dataset("imagenet-r", root, "test")
    assert ds.imagenet_class_indices == [3, 4]
    os.rename(os.path.join(imagenet, "train"), os.path.join(imagenet, "elsewhere"))
    with pytest.raises(FileNotFoundError, match="wnids.txt"):
        build_dataset("imagenet-r", root, "test")


def test_full_imagenet_sketch_needs_no_wnid_list(tmp_path):
    wnids = ft.fake_wnids(1000)
    for wnid in wnids:
        os.makedirs(tmp_path / wnid)
        Image.new("RGB", (1, 1)).save(tmp_path / wnid / "x.png")
    ds = build_dataset("imagenet-sketch", tmp_path, "test")
    assert ds.num_classes == 1000 and ds.imagenet_class_indices == list(range(1000))
    assert ds.targets == list(range(1000))


def test_imagenet_v2_folders_are_class_indices(tmp_path):
    root = ft.make_fake("imagenet-v2", tmp_path, num_classes=3, per_class=2)
    ds = build_dataset("imagenet-v2", root, "test")
    indices = ft.v2_indices(3)  # 2, 9, 16: sorted as strings they would be 16, 2, 9
    _check_split(ds, 1, 3, label_of_colour=lambda c: indices[c])
    assert ds.num_classes == 1000 and ds.imagenet_class_indices == list(range(1000))


def test_digits_are_sklearn_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    train, test = build_dataset("digits", "ignored", "train"), build_dataset("digits", None, "test")
    assert len(train) == 1000 and len(test) == len(digits.target) - 1000
    assert train.targets == digits.target[:1000].tolist() and test.targets == digits.target[1000:].tolist()
    assert train.num_classes == 10
    image, label = test[5]
    assert image.mode == "RGB" and image.size == (32, 32) and label == digits.target[1005]
    pixels = np.asarray(image, dtype=np.float64)
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    # bilinear upsampling keeps the mean grey level of the 8x8 digit (0..16 scaled to 0..255)
    assert abs(pixels.mean() - digits.images[1005].mean() * 255 / 16) < 6


@pytest.mark.parametrize("name", [n for n in datasets.DATASETS if n != "digits"])
def test_missing_tree_names_the_expected_layout(tmp_path, name):
    split = "test" if name in datasets.TEST_ONLY else "train"
    with pytest.raises(FileNotFoundError, match="expected layout") as info:
        build_dataset(name, tmp_path / "nothing", split)
    assert str(tmp_path / "nothing") in str(info.value)


@pytest.mark.parametrize("name, remove", [
    ("aircraft", "fgvc-aircraft-2013b/data/variants.txt"),
    ("cub", "CUB_200_2011/train_test_split.txt"),
    ("cars", "stanford_cars/devkit/cars_train_annos.mat"),
    ("dtd", "dtd/dtd/labels/val1.txt"),
    ("flowers", "flowers-102/setid.mat"),
    ("pets", "oxford-iiit-pet/annotations"),
    ("cifar10", "cifar-10-batches-py/data_batch_3"),
    ("cifar10", "cifar-10-batches-py/batches.meta"),
    ("imagenet", "train"),
])
def test_incomplete_tree(tmp_path, name, remove):
    import shutil

    root = ft.make_fake(name, tmp_path, num_classes=2, per_class=2)
    target = os.path.join(root, remove)
    shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
    with pytest.raises(FileNotFoundError, match="expected layout"):
        build_dataset(name, root, "train")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("mnist", ".", "train")
    with pytest.raises(ValueError, match="split"):
        build_dataset("digits", ".", "val")


def _targets(sizes):
    return [c for c, n in enumerate(sizes) for _ in range(n)]


def test_train_val_split_is_stratified_and_seeded():
    targets = np.random.default_rng(3).permutation(_targets([1, 2, 10, 31])).tolist()
    train, val = train_val_split(targets, val_fraction=0.2, seed=0)
    assert sorted(train + val) == list(range(len(targets))) and not set(train) & set(val)
    val_counts = collections.Counter(targets[i] for i in val)
    # 0.2 * 44 = 8.8 -> 9 in total: floors (0, 0, 2, 6), the missing one to the largest remainder (0.4)
    assert [val_counts[c] for c in range(4)] == [0, 1, 2, 6]
    assert all(collections.Counter(targets[i] for i in train)[c] >= 1 for c in range(4))
    assert train_val_split(targets, 0.2, seed=0) == (train, val)
    assert train_val_split(targets, 0.2, seed=1) != (train, val)
    assert train_val_split(targets, 0.0) == (list(range(len(targets))), [])
    with pytest.raises(ValueError, match="no validation image"):  # a single image never leaves training
        train_val_split(_targets([1]), 0.5)


def _reference_val_counts(sizes, fraction):
    """Hamilton's method, written out: floors, then +1 by decreasing remainder, never a whole class."""
    quotas = [fraction * n for n in sizes]
    counts = [int(q) for q in quotas]
    total = int(fraction * sum(sizes) + 0.5)
    for c in sorted(range(len(sizes)), key=lambda c: -(quotas[c] - counts[c])):
        if sum(counts) < total and counts[c] + 1 < sizes[c]:
            counts[c] += 1
    return counts


@pytest.mark.parametrize("sizes,fraction", [([4, 4, 4, 4], 0.1), ([3, 7, 11, 2, 9], 0.1), ([5, 6, 7], 0.3),
                                            ([20, 1, 1, 1], 0.15)])
def test_train_val_split_total_is_rounded_fraction_of_all_images(sizes, fraction):
    targets = _targets(sizes)
    train, val = train_val_split(targets, fraction, seed=2)
    assert len(val) == round(fraction * len(targets) + 1e-9) and len(val) > 0
    counts = collections.Counter(targets[i] for i in val)
    if len(set(q % 1 for q in (fraction * n for n in sizes))) == len(sizes):  # no tie: counts are determined
        assert [counts[c] for c in range(len(sizes))] == _reference_val_counts(sizes, fraction)
    assert all(counts[c] < n for c, n in enumerate(sizes))  # never a whole class


def test_train_val_split_names_the_key_when_nothing_can_be_held_out():
    with pytest.raises(ValueError, match="VAL_FRACTION"):
        train_val_split(_targets([2, 2]), 0.1)  # round(0.4) = 0


def test_per_class_subset_counts():
    targets = _targets([3, 10, 20, 196])
    for fraction in (0.1, 0.25, 0.5, 0.15, 0.3):
        keep = per_class_subset(targets, fraction, seed=0)
        counts = collections.Counter(targets[i] for i in keep)
        assert [counts[c] for c in range(4)] == [max(1, round(fraction * n)) for n in (3, 10, 20, 196)]
        assert len(set(keep)) == len(keep) and keep == sorted(keep)
    assert per_class_subset(targets, 0.25, seed=0) == per_class_subset(targets, 0.25, seed=0)
    assert per_class_subset(targets, 0.25, seed=0) != per_class_subset(targets, 0.25, seed=1)
    assert per_class_subset(targets, 1.0) == list(range(len(targets)))
    with pytest.raises(ValueError, match="fraction"):
        per_class_subset(targets, 0.0)


def test_transforms():
    image = Image.new("RGB", (40, 30), (255, 128, 0))
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)
    out = build_transforms(False, size=16, mean=mean, std=std)(image)
    expected = torch.tensor([(v / 255 - m) / s for v, m, s in zip((255, 128, 0), mean, std)])
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out, expected[:, None, None].expand(3, 16, 16), atol=1e-6)
    torch.manual_seed(0)
    assert build_transforms(True, size=12)(image).shape == (3, 12, 12)
    names = [type(t).__name__ for t in build_transforms(True).transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    eval_t = build_transforms(False, size=224).transforms
    assert eval_t[0].size == 256 and eval_t[1].size == (224, 224)


@pytest.mark.parametrize("name", ["flowers", "cifar10"])
def test_torchvision_md5_checks_are_kept(tmp_path, monkeypatch, name):
    """The package uses torchvision's checks as they are: files that are not the real downloads are refused
    (the other tests' stand-ins pass only through the conftest fixture, undone here)."""
    root = ft.MAKERS[name](tmp_path / name)
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match=name):
        build_dataset(name, root, "train")


# ------------------------------------------------ issue 20, item 7: index files are checked

def test_cub_split_file_missing_an_id_names_the_file_and_the_id(tmp_path):
    root = ft.make_fake("cub", tmp_path, num_classes=2, per_class=2)
    split = os.path.join(root, "CUB_200_2011", "train_test_split.txt")
    lines = open(split).read().splitlines()
    with open(split, "w") as f:
        f.write("\n".join(line for line in lines if not line.startswith("3 ")) + "\n")
    with pytest.raises(ValueError, match="train_test_split.txt: no line for image id 3"):
        build_dataset("cub", root, "train")


ESCAPES = {  # dataset -> (index file, rewrite of its first line)
    "cub": ("CUB_200_2011/images.txt", lambda line: line.split()[0] + " ../../../elsewhere.jpg"),
    "pets": ("oxford-iiit-pet/annotations/trainval.txt", lambda line: "../../elsewhere " + line.split(" ", 1)[1]),
    "aircraft": ("fgvc-aircraft-2013b/data/images_variant_trainval.txt",
                 lambda line: "/tmp/elsewhere " + line.split(" ", 1)[1]),
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_index_file_paths_outside_the_data_set_are_refused(tmp_path, name):
    root = ft.make_fake(name, tmp_path, num_classes=2, per_class=2)
    relative, rewrite = ESCAPES[name]
    index = os.path.join(root, relative)
    lines = open(index).read().splitlines()
    with open(index, "w") as f:
        f.write("\n".join([rewrite(lines[0])] + lines[1:]) + "\n")
    with pytest.raises(ValueError, match=f"{os.path.basename(index)}, line 1 .*lies outside the data set's "
                                         "directory"):
        build_dataset(name, root, "train")


# ------------------------------------------------ issue 28, item 16: real paths, ids once, labels in range

def _rewrite(path, edit):
    lines = open(path).read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(edit(lines)) + "\n")


def test_cub_image_linked_out_of_the_data_set_is_refused(tmp_path):
    root = ft.make_fake("cub", tmp_path / "data", num_classes=2, per_class=2)
    images = os.path.join(root, "CUB_200_2011", "images")
    first = open(os.path.join(root, "CUB_200_2011", "images.txt")).readline().split()[1]
    outside = tmp_path / "elsewhere.jpg"
    os.replace(os.path.join(images, first), outside)
    os.symlink(outside, os.path.join(images, first))
    with pytest.raises(ValueError, match=r"images.txt, line 1 .*lies outside the data set's directory .*through a "
                                         f"symbolic link: it resolves to {outside}"):
        build_dataset("cub", root, "train")


def test_a_linked_data_set_directory_is_followed(tmp_path):
    """Real paths on both sides: the whole directory on another disk (a link) is fine."""
    root = ft.make_fake("cub", tmp_path / "disk", num_classes=2, per_class=2)
    os.makedirs(tmp_path / "data")
    os.symlink(os.path.join(root, "CUB_200_2011"), tmp_path / "data" / "CUB_200_2011")
    assert len(build_dataset("cub", tmp_path / "data", "train")) == len(build_dataset("cub", root, "train"))


@pytest.mark.parametrize("name, relative", [
    ("cub", "CUB_200_2011/train_test_split.txt"), ("cub", "CUB_200_2011/images.txt"),
    ("cub", "CUB_200_2011/image_class_labels.txt"), ("cub", "CUB_200_2011/classes.txt"),
    ("aircraft", "fgvc-aircraft-2013b/data/images_variant_trainval.txt"),
    ("pets", "oxford-iiit-pet/annotations/trainval.txt"), ("dtd", "dtd/dtd/labels/train1.txt"),
])
def test_an_id_listed_twice_in_a_split_file_names_the_file_the_id_and_the_lines(tmp_path, name, relative):
    """The second line of an id would silently override the first (CUB) or count the image twice."""
    root = ft.make_fake(name, tmp_path, num_classes=2, per_class=2)
    path = os.path.join(root, relative)
    first_id = open(path).readline().split()[0]
    _rewrite(path, lambda lines: lines + [lines[0]])
    count = len(open(path).read().splitlines())
    with pytest.raises(ValueError, match=f"{re.escape(relative)}, line {count}: id {re.escape(first_id)} is "
                                         "listed twice \\(first on line 1\\)"):
        build_dataset(name, root, "train")


@pytest.mark.parametrize("label", ["0", "3", "x"])
def test_cub_class_id_out_of_range_names_the_file_and_the_line(tmp_path, label):
    root = ft.make_fake("cub", tmp_path, num_classes=2, per_class=2)
    path = os.path.join(root, "CUB_200_2011", "image_class_labels.txt")
    _rewrite(path, lambda lines: [lines[0].split()[0] + " " + label] + lines[1:])
    with pytest.raises(ValueError, match=f"image_class_labels.txt, line 1: class id '{label}' of image 1 is not one "
                                         "of 1..2 \\(the classes of .*classes.txt\\)"):
        build_dataset("cub", root, "train")

"""Tiny fake datasets written in each dataset's real on-disk layout (the one torchvision reads).

Every ``make_fake_<name>(root, num_classes=3, per_class=4, image_size=16)`` writes a tree under
``root`` and returns the directory to pass to ``build_dataset(<name>, ...)``. Each class gets
``per_class`` training images and ``num_test(per_class)`` test images; where the dataset
publishes train and val separately (Aircraft, DTD, Flowers) the training images are split
between them, so ``per_class`` must be >= 2 there. Images of class c are a flat colour that
depends on c plus seeded noise, so a small model can learn them.
"""
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def num_test(per_class):
    """Test images per class in every fake tree."""
    return max(1, per_class // 2)


def class_colour(label):
    """The mean RGB colour of class ``label``'s fake images."""
    return np.array([(67 * label) % 256, (151 * label + 40) % 256, (29 * label + 200) % 256], dtype=np.float64)


def nearest_class(image, num_classes):
    """The class whose colour is closest to ``image``'s mean colour (checks a label belongs to its image)."""
    mean = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(0)
    return int(np.argmin([np.abs(mean - class_colour(c)).sum() for c in range(num_classes)]))


def _pixels(label, index, size):
    rng = np.random.default_rng(1000 * label + index)
    base = class_colour(label)
    noise = rng.normal(0, 12, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _write(path, label, index, size):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(_pixels(label, index, size))
    image.save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=95)


def _splits(num_classes, per_class):
    """[(class, index, split)] with split in train | test."""
    rows = []
    for c in range(num_classes):
        rows += [(c, k, "train") for k in range(per_class)]
        rows += [(c, per_class + k, "test") for k in range(num_test(per_class))]
    return rows


def _train_val(index, per_class):
    """First ceil(per_class / 2) training images of a class go to train, the rest to val."""
    if per_class < 2:
        raise ValueError("datasets with official train and val splits need per_class >= 2")
    return "train" if index < (per_class + 1) // 2 else "val"


def _lines(path, lines):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def make_fake_aircraft(root, num_classes=3, per_class=4, image_size=16):
    data = Path(root) / "fgvc-aircraft-2013b" / "data"
    variants = [f"Boeing 7{c}7-200" for c in range(num_classes)]
    _lines(data / "variants.txt", variants)
    split_lines = {"train": [], "val": [], "trainval": [], "test": []}
    for c, k, split in _splits(num_classes, per_class):
        image_id = f"{1000000 + 100 * c + k:07d}"
        _write(data / "images" / f"{image_id}.jpg", c, k, image_size)
        line = f"{image_id} {variants[c]}"
        if split == "train":
            split_lines[_train_val(k, per_class)].append(line)
            split_lines["trainval"].append(line)
        else:
            split_lines["test"].append(line)
    for split, lines in split_lines.items():
        _lines(data / f"images_variant_{split}.txt", lines)
    return str(root)


def make_fake_cub(root, num_classes=3, per_class=4, image_size=16):
    base = Path(root) / "CUB_200_2011"
    names = [f"{c + 1:03d}.Bird_{c}" for c in range(num_classes)]
    images, split, labels = [], [], []
    for i, (c, k, s) in enumerate(_splits(num_classes, per_class), start=1):
        rel = f"{names[c]}/Bird_{c}_{k:04d}_{i}.jpg"
        _write(base / "images" / rel, c, k, image_size)
        images.append(f"{i} {rel}")
        split.append(f"{i} {1 if s == 'train' else 0}")
        labels.append(f"{i} {c + 1}")
    _lines(base / "images.txt", images)
    _lines(base / "train_test_split.txt", split)
    _lines(base / "image_class_labels.txt", labels)
    _lines(base / "classes.txt", [f"{c + 1} {n}" for c, n in enumerate(names)])
    return str(root)


def _annotations(rows):
    """A MATLAB struct array like the Stanford Cars annotation files."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    table = np.empty(len(rows), dtype=[(f, "O") for f in fields])
    for i, (label, fname) in enumerate(rows):
        table[i] = (1, 1, 8, 8, label + 1, fname)
    return table


def make_fake_cars(root, num_classes=3, per_class=4, image_size=16):
    from scipy.io import savemat

    base = Path(root) / "stanford_cars"
    (base / "devkit").mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "test": []}
    for c, k, split in _splits(num_classes, per_class):
        fname = f"{len(rows[split]) + 1:05d}.jpg"
        _write(base / f"cars_{split}" / fname, c, k, image_size)
        rows[split].append((c, fname))
    names = np.array([f"AM General Hummer SUV 20{c:02d}" for c in range(num_classes)], dtype=object)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": names.reshape(1, -1)})
    savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": _annotations(rows["train"]).reshape(1, -1)})
    savemat(base / "cars_test_annos_withlabels.mat", {"annotations": _annotations(rows["test"]).reshape(1, -1)})
    return str(root)


def make_fake_dtd(root, num_classes=3, per_class=4, image_size=16):
    data = Path(root) / "dtd" / "dtd"
    names = [f"texture{c}" for c in range(num_classes)]
    lines = {"train": [], "val": [], "test": []}
    for c, k, split in _splits(num_classes, per_class):
        rel = f"{names[c]}/{names[c]}_{k:04d}.jpg"
        _write(data / "images" / rel, c, k, image_size)
        lines[_train_val(k, per_class) if split == "train" else "test"].append(rel)
    for split, rels in lines.items():
        _lines(data / "labels" / f"{split}1.txt", rels)
    return str(root)


def make_fake_flowers(root, num_classes=3, per_class=4, image_size=16):
    from scipy.io import savemat

    base = Path(root) / "flowers-102"
    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    for image_id, (c, k, split) in enumerate(_splits(num_classes, per_class), start=1):
        _write(base / "jpg" / f"image_{image_id:05d}.jpg", c, k, image_size)
        labels.append(c + 1)
        key = {"train": "trnid", "val": "valid"}[_train_val(k, per_class)] if split == "train" else "tstid"
        ids[key].append(image_id)
    savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(base / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    return str(root)


def make_fake_pets(root, num_classes=3, per_class=4, image_size=16):
    base = Path(root) / "oxford-iiit-pet"
    lines = {"trainval": [], "test": []}
    for c, k, split in _splits(num_classes, per_class):
        image_id = f"breed_{chr(97 + c % 26)}{c}_{k + 1}"
        _write(base / "images" / f"{image_id}.jpg", c, k, image_size)
        species = 1 + c % 2
        lines["trainval" if split == "train" else "test"].append(f"{image_id} {c + 1} {species} {c // 2 + 1}")
    for split, rows in lines.items():
        _lines(base / "annotations" / f"{split}.txt", rows)
    return str(root)


def make_fake_cifar10(root, num_classes=3, per_class=4, image_size=16):
    """CIFAR-10's python pickles; images are always 32x32 (``image_size`` is ignored)."""
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "test": []}
    for c, k, split in _splits(num_classes, per_class):
        rows[split].append((_pixels(c, k, 32).transpose(2, 0, 1).reshape(-1), c))

    def dump(name, items):
        data = np.stack([x for x, _ in items]) if items else np.zeros((0, 3072), np.uint8)
        with open(base / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": [y for _, y in items]}, f)

    for b in range(5):
        dump(f"data_batch_{b + 1}", rows["train"][b::5])
    dump("test_batch", rows["test"])
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"thing{c}" for c in range(num_classes)], "num_vis": 3072}, f)
    return str(root)


def fake_wnids(count):
    """Made-up but well-formed wnids, sorted."""
    return [f"n{1440764 + 37 * i:08d}" for i in range(count)]


def _wnid_folders(base, wnids, per_class, image_size, ext=".JPEG", offset=0):
    for c, wnid in enumerate(wnids):
        for k in range(per_class):
            _write(Path(base) / wnid / f"{wnid}_{offset + k}{ext}", c, offset + k, image_size)


def make_fake_imagenet(root, num_classes=3, per_class=4, image_size=16):
    wnids = fake_wnids(num_classes)
    _wnid_folders(Path(root) / "train", wnids, per_class, image_size)
    _wnid_folders(Path(root) / "val", wnids, num_test(per_class), image_size, offset=per_class)
    return str(root)


def _imagenet_subset(root, num_classes, per_class, image_size, reference_size):
    """Every other wnid of a ``reference_size`` list, plus that list as ``wnids.txt``."""
    reference = fake_wnids(reference_size)
    _lines(Path(root) / "wnids.txt", reference)
    _wnid_folders(root, reference[1::2][:num_classes], num_test(per_class), image_size, ext=".jpg")
    return str(root)


def make_fake_imagenet_r(root, num_classes=3, per_class=4, image_size=16):
    """Test split only; the ImageNet list in wnids.txt has 2 * num_classes + 1 wnids."""
    return _imagenet_subset(root, num_classes, per_class, image_size, 2 * num_classes + 1)


def make_fake_imagenet_a(root, num_classes=3, per_class=4, image_size=16):
    return _imagenet_subset(root, num_classes, per_class, image_size, 2 * num_classes + 1)


def make_fake_imagenet_sketch(root, num_classes=3, per_class=4, image_size=16):
    return _imagenet_subset(root, num_classes, per_class, image_size, 2 * num_classes + 1)


def v2_indices(num_classes):
    """ImageNet indices used as ImageNet-V2 folder names: 2, 9, 16, ... (string order != numeric)."""
    return [2 + 7 * c for c in range(num_classes)]


def make_fake_imagenet_v2(root, num_classes=3, per_class=4, image_size=16):
    for c, index in enumerate(v2_indices(num_classes)):
        for k in range(num_test(per_class)):
            _write(Path(root) / str(index) / f"{k:08x}.jpeg", c, k, image_size)
    return str(root)


def make_fake_imagefolder(root, num_classes=3, per_class=4, image_size=16):
    names = [f"class_{c}" for c in range(num_classes)]
    for c, k, split in _splits(num_classes, per_class):
        _write(Path(root) / split / names[c] / f"{k}.png", c, k, image_size)
    return str(root)


MAKERS = {
    "aircraft": make_fake_aircraft, "cub": make_fake_cub, "cars": make_fake_cars, "dtd": make_fake_dtd,
    "flowers": make_fake_flowers, "pets": make_fake_pets, "cifar10": make_fake_cifar10,
    "imagenet": make_fake_imagenet, "imagenet-r": make_fake_imagenet_r, "imagenet-a": make_fake_imagenet_a,
    "imagenet-sketch": make_fake_imagenet_sketch, "imagenet-v2": make_fake_imagenet_v2,
    "imagefolder": make_fake_imagefolder,
}


def make_fake(name, root, **kwargs):
    """``MAKERS[name](os.path.join(root, name), **kwargs)``."""
    return MAKERS[name](os.path.join(str(root), name), **kwargs)

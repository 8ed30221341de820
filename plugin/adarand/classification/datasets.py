"""Datasets of the classification trainer, read from their official on-disk layouts.

``build_dataset(name, root, split)`` returns a ``torch.utils.data.Dataset`` of
``(image, label)`` pairs with ``.targets`` (list[int]), ``.classes`` (list[str]) and
``.num_classes``. ``split`` is ``"train"`` (the official training set; train+val where
the dataset publishes both: our choice, the paper does not say, see docs/fidelity.md) or ``"test"``. Nothing is ever
downloaded: a missing tree raises ``FileNotFoundError`` naming the expected layout.
Layouts are listed in ``docs/classification_data.md``. Which of a set's images a run uses (subset,
validation split): :mod:`adarand.classification.splits`.
"""
import bisect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from adarand.registry import Registry

SPLITS = ("train", "test")
TEST_ONLY = ("imagenet-r", "imagenet-sketch", "imagenet-a", "imagenet-v2")

LAYOUTS = {
    "aircraft": "<root>/fgvc-aircraft-2013b/data/{images/<id>.jpg, variants.txt, "
                "images_variant_trainval.txt, images_variant_test.txt}",
    "cub": "<root>/CUB_200_2011/{images/<class>/<file>.jpg, images.txt, train_test_split.txt, "
           "image_class_labels.txt, classes.txt}",
    "cars": "<root>/stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_train/, "
            "cars_test_annos_withlabels.mat, cars_test/}",
    "dtd": "<root>/dtd/dtd/{images/<class>/<file>.jpg, labels/train1.txt, labels/val1.txt, labels/test1.txt}",
    "flowers": "<root>/flowers-102/{jpg/image_00001.jpg ..., imagelabels.mat, setid.mat}",
    "pets": "<root>/oxford-iiit-pet/{images/<id>.jpg, annotations/trainval.txt, annotations/test.txt}",
    "cifar10": "<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}",
    "imagenet": "<root>/{train,val}/<wnid>/<file>.JPEG (val sorted into wnid folders)",
    "imagenet-r": "<root>/<wnid>/<file> (200 wnids) and the 1000 ImageNet wnids in <root>/wnids.txt "
                  "or <root>/../imagenet/train/<wnid>/",
    "imagenet-a": "<root>/<wnid>/<file> (200 wnids) and the 1000 ImageNet wnids in <root>/wnids.txt "
                  "or <root>/../imagenet/train/<wnid>/",
    "imagenet-sketch": "<root>/<wnid>/<file> (1000 wnids, or fewer with <root>/wnids.txt)",
    "imagenet-v2": "<root>/<k>/<file> with k = 0..999 the ImageNet class index",
    "imagefolder": "<root>/train/<class>/<file> and <root>/test/<class>/<file> (or <root>/val/)",
    "digits": "(none: scikit-learn's load_digits, root is ignored)",
}


def _missing(name, root, detail=""):
    extra = f" ({detail})" if detail else ""
    return FileNotFoundError(
        f"dataset {name!r} not found under {str(root)!r}{extra}; expected layout: {LAYOUTS[name]}. "
        "Nothing is downloaded: put the official files there.")


def _describe(ds, targets, classes):
    """Attach the common attributes to ``ds`` and return it."""
    ds.targets = [int(t) for t in targets]
    ds.classes = [str(c) for c in classes]
    ds.num_classes = len(ds.classes)
    return ds


class _Concat(ConcatDataset):
    """Two official splits as one (train + val), with the common attributes."""

    def __init__(self, parts):
        super().__init__(parts)
        if any(p.classes != parts[0].classes for p in parts):
            raise ValueError("the concatenated splits disagree on the class list")
        _describe(self, [t for p in parts for t in p.targets], parts[0].classes)


class _ImageList(Dataset):
    """(image path, label) pairs in ``self.samples``, read with ``self.loader``, transformed lazily."""

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        image = self.loader(path)
        return (self.transform(image) if self.transform else image), label


class _FixedClassFolder(_ImageList):
    """An ``ImageFolder`` whose class -> index map is given instead of derived from the folders."""

    def __init__(self, directory, class_to_idx, transform=None):
        from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, make_dataset

        present = {c: i for c, i in class_to_idx.items() if (Path(directory) / c).is_dir()}
        self.samples = make_dataset(str(directory), present, extensions=IMG_EXTENSIONS)
        self.loader, self.transform = default_loader, transform


def _folder(directory, classes, transform, class_to_idx=None):
    class_to_idx = class_to_idx or {c: i for i, c in enumerate(classes)}
    ds = _FixedClassFolder(directory, class_to_idx, transform)
    return _describe(ds, [label for _, label in ds.samples], classes)


def _subfolders(directory):
    return sorted(e.name for e in os.scandir(directory) if e.is_dir())


def _torchvision(name, root, build):
    """Call a torchvision constructor with download=False; its "not found" becomes FileNotFoundError."""
    try:
        return build()
    except RuntimeError as err:
        if "not found" in str(err).lower():
            raise _missing(name, root, str(err)) from None
        raise
    except (FileNotFoundError, NotADirectoryError) as err:
        raise _missing(name, root, str(err)) from None


def _aircraft(root, split, transform):
    from torchvision.datasets import FGVCAircraft

    tv_split = "trainval" if split == "train" else "test"
    ds = _torchvision("aircraft", root, lambda: FGVCAircraft(
        root, split=tv_split, annotation_level="variant", transform=transform, download=False))
    return _describe(ds, ds._labels, ds.classes)


def _cars(root, split, transform):
    from torchvision.datasets import StanfordCars

    ds = _torchvision("cars", root, lambda: StanfordCars(root, split=split, transform=transform, download=False))
    return _describe(ds, [t for _, t in ds._samples], ds.classes)


def _dtd(root, split, transform):
    from torchvision.datasets import DTD

    def part(s):
        ds = _torchvision("dtd", root, lambda: DTD(root, split=s, partition=1, transform=transform, download=False))
        return _describe(ds, ds._labels, ds.classes)

    return _Concat([part("train"), part("val")]) if split == "train" else part("test")


def _flowers(root, split, transform):
    from scipy.io import loadmat
    from torchvision.datasets import Flowers102 as cls

    def part(s):
        ds = _torchvision("flowers", root, lambda: cls(root, split=s, transform=transform, download=False))
        labels = loadmat(ds._base_folder / "imagelabels.mat", squeeze_me=True)["labels"]
        num_classes = int(np.max(labels))  # 102 for the real dataset
        return _describe(ds, ds._labels, cls.classes[:num_classes])

    return _Concat([part("train"), part("val")]) if split == "train" else part("test")


def _pets(root, split, transform):
    from torchvision.datasets import OxfordIIITPet

    tv_split = "trainval" if split == "train" else "test"
    ds = _torchvision("pets", root, lambda: OxfordIIITPet(
        root, split=tv_split, target_types="category", transform=transform, download=False))
    return _describe(ds, ds._labels, ds.classes)


def _cifar10_class():
    from torchvision.datasets import CIFAR10

    from torchvision.datasets import cifar

    class AllowListCIFAR10(CIFAR10):
        """CIFAR10 whose meta file is unpickled by ``adarand.files.load_pickle`` (plain data only,
        nothing executed), after torchvision's md5 check."""

        def _load_meta(self):
            from adarand.files import load_pickle

            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            if not cifar.check_integrity(path, self.meta["md5"]):
                raise RuntimeError(f"CIFAR-10 meta file {path} not found or corrupted (md5)")
            meta = load_pickle(path, "CIFAR-10 meta file")
            self.classes = meta[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return AllowListCIFAR10


def _cifar10(root, split, transform):
    cls = _cifar10_class()
    ds = _torchvision("cifar10", root, lambda: cls(root, train=split == "train", transform=transform))
    return _describe(ds, ds.targets, ds.classes)


def _first_fields(path):
    """``[(line number, first field, rest of the line)]`` of the non-empty lines of a split or index file;
    a first field (an id) listed twice is an error naming the file, the id and both lines."""
    rows, seen = [], {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        if fields[0] in seen:
            raise ValueError(f"{path}, line {number}: id {fields[0]} is listed twice (first on line "
                             f"{seen[fields[0]]}); each id must appear once")
        seen[fields[0]] = number
        rows.append((number, fields[0], fields[1].strip() if len(fields) > 1 else ""))
    return rows


def _read_index(path):
    """``{id: (value, line number)}`` of a CUB index file (``<id> <value>`` per line, each id once)."""
    index = {}
    for number, key, value in _first_fields(path):
        if not value:
            raise ValueError(f"{path}, line {number}: expected '<id> <value>', got only {key!r}")
        index[key] = (value, number)
    return index


def _entry(index, image_id, path):
    """``(value, line number)`` of ``image_id``; an id absent from the index file ``path`` is an error naming both."""
    try:
        return index[image_id]
    except KeyError:
        raise ValueError(f"{path}: no line for image id {image_id} (listed in images.txt)") from None


def _cub_label(labels, image_id, path, num_classes, classes_path):
    """The 0-based class of ``image_id`` in image_class_labels.txt (``path``); a class id outside
    1..``num_classes`` (the classes of ``classes_path``) is an error naming the file, the line and the id."""
    value, number = _entry(labels, image_id, path)
    if not value.isdigit() or not 1 <= int(value) <= num_classes:
        raise ValueError(f"{path}, line {number}: class id {value!r} of image {image_id} is not one of "
                         f"1..{num_classes} (the classes of {classes_path})")
    return int(value) - 1


class _CUB(_ImageList):
    """CUB-200-2011 from its index files: images.txt, train_test_split.txt (1 = train),
    image_class_labels.txt (1-based class ids) and classes.txt."""

    FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")

    def __init__(self, root, split, transform=None):
        from torchvision.datasets.folder import default_loader

        base = Path(root) / "CUB_200_2011"
        absent = [f for f in self.FILES + ("images",) if not (base / f).exists()]
        if absent:
            raise _missing("cub", root, f"missing {absent} in {base}")
        files = {f: base / f for f in self.FILES}
        paths, is_train = _read_index(files["images.txt"]), _read_index(files["train_test_split.txt"])
        labels, names = _read_index(files["image_class_labels.txt"]), _read_index(files["classes.txt"])
        keep = "1" if split == "train" else "0"
        ids = sorted((i for i in paths if _entry(is_train, i, files["train_test_split.txt"])[0] == keep), key=int)
        classes = [names[k][0] for k in sorted(names, key=int)]
        self.samples = [(str(base / "images" / paths[i][0]),
                         _cub_label(labels, i, files["image_class_labels.txt"], len(classes), files["classes.txt"]))
                        for i in ids]
        self.loader, self.transform = default_loader, transform
        _describe(self, [y for _, y in self.samples], classes)


# dataset -> (its directory under DATASET.ROOT, the index files that list its images, relative to it).
# DTD's lines are split into exactly <class>/<file> under images/, so they cannot leave its tree.
INDEX_FILES = {
    "cub": ("CUB_200_2011", ("images.txt",)),
    "aircraft": ("fgvc-aircraft-2013b/data", ("images_variant_trainval.txt", "images_variant_test.txt")),
    "pets": ("oxford-iiit-pet", ("annotations/trainval.txt", "annotations/test.txt")),
    "cars": ("stanford_cars", ("devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat")),
}


def _listing_line(files, path):
    """(file, line number, line) of the index-file line whose first field appears in ``path``."""
    for file in files:
        if file.suffix == ".txt" and file.is_file():
            for number, line in enumerate(file.read_text().splitlines(), start=1):
                fields = line.split()
                if fields and fields[0] in path:
                    return file, number, line
    return None


def check_inside_root(ds: Any, name: str, root: str) -> None:
    """Every image a data set's own index files list lies inside its directory: an entry such as
    ``../../elsewhere.jpg``, an absolute path, or one whose symbolic link leads out is an error naming the
    index file and the line. Real paths on both sides: the data set's directory may itself be a link
    (e.g. to another disk), but a link inside it must stay inside it."""
    if name not in INDEX_FILES:
        return
    sub, names = INDEX_FILES[name]
    lexical_base = os.path.abspath(os.path.join(root, sub))
    base = os.path.realpath(lexical_base)
    for i in range(len(ds)):
        path = sample_path(ds, i)
        real = os.path.realpath(path)
        if os.path.commonpath([base, real]) != base:
            linked = os.path.commonpath([lexical_base, os.path.abspath(path)]) == lexical_base
            files = [Path(root) / sub / n for n in names]
            found = _listing_line(files, path)
            where = f"{found[0]}, line {found[1]} ({found[2].strip()!r})" if found else \
                f"one of {[str(f) for f in files]} (sample {i})"
            via = f" (through a symbolic link: it resolves to {real})" if linked else ""
            raise ValueError(f"{where}: the image {path} lies outside the data set's directory {base}{via}; "
                             "index-file paths must stay inside it (link the whole directory instead)")


# dataset -> its split files read by torchvision (relative to DATASET.ROOT), one image id per line
SPLIT_FILES = {
    "aircraft": ("fgvc-aircraft-2013b/data/images_variant_trainval.txt",
                 "fgvc-aircraft-2013b/data/images_variant_test.txt"),
    "pets": ("oxford-iiit-pet/annotations/trainval.txt", "oxford-iiit-pet/annotations/test.txt"),
    "dtd": tuple(f"dtd/dtd/labels/{split}1.txt" for split in ("train", "val", "test")),
}


def check_unique_ids(name: str, root: str) -> None:
    """No image id is listed twice in a split file torchvision reads for ``name`` (it would count twice);
    CUB's index files are checked as they are read."""
    for relative in SPLIT_FILES.get(name, ()):
        path = Path(root) / relative
        if path.is_file():
            _first_fields(path)


def _imagenet(root, split, transform):
    folders = {s: Path(root) / ("train" if s == "train" else "val") for s in SPLITS}
    if not folders["train"].is_dir() or not folders[split].is_dir():
        raise _missing("imagenet", root, "the class list is read from train/")
    return _folder(folders[split], _subfolders(folders["train"]), transform)


def imagenet_wnids(root: str) -> list[str]:
    """The 1000 ImageNet-1k wnids in model class-index order (sorted), for a dataset at ``root``:
    read from ``<root>/wnids.txt`` (one wnid a line) or from the folders of ``<root>/../imagenet/train``."""
    listed, tree = Path(root) / "wnids.txt", Path(root).resolve().parent / "imagenet" / "train"
    if listed.is_file():
        wnids = [w.strip() for w in listed.read_text().splitlines() if w.strip()]
    elif tree.is_dir():
        wnids = _subfolders(tree)
    else:
        raise FileNotFoundError(
            f"the ImageNet-1k wnid list is needed to map {str(root)!r} to ImageNet classes: "
            f"put the 1000 wnids in {listed} or an ImageNet train tree at {tree}")
    return wnids


def _imagenet_subset(name, root, transform):
    """ImageNet-R/-A/-Sketch: wnid folders; labels follow the dataset's own (sorted) class order."""
    if not Path(root).is_dir():
        raise _missing(name, root)
    classes = _subfolders(root)
    if not classes:
        raise _missing(name, root, "no class folders")
    ds = _folder(root, classes, transform)
    if name == "imagenet-sketch" and len(classes) == 1000 and not (Path(root) / "wnids.txt").is_file():
        reference = classes
    else:
        reference = imagenet_wnids(root)
    index = {w: i for i, w in enumerate(reference)}
    unknown = [w for w in classes if w not in index]
    if unknown:
        raise ValueError(f"{name}: class folder(s) {unknown[:5]} are not in the ImageNet wnid list")
    ds.imagenet_class_indices = [index[w] for w in classes]
    return ds


def _imagenet_v2(root, transform):
    """ImageNet-V2: folders named by the ImageNet class index (0..999); labels are that index."""
    if not Path(root).is_dir():
        raise _missing("imagenet-v2", root)
    folders = [c for c in _subfolders(root) if c.isdigit() and int(c) < 1000]
    if not folders:
        raise _missing("imagenet-v2", root, "no folders named 0..999")
    ds = _folder(root, [str(k) for k in range(1000)], transform, {c: int(c) for c in folders})
    ds.imagenet_class_indices = list(range(1000))
    return ds


def _imagefolder(root, split, transform):
    base = Path(root)
    folder = base / "train" if split == "train" else next(
        (base / s for s in ("test", "val") if (base / s).is_dir()), base / "test")
    if not (base / "train").is_dir() or not folder.is_dir():
        raise _missing("imagefolder", root)
    return _folder(folder, _subfolders(base / "train"), transform)


class Digits(Dataset):
    """scikit-learn's 1,797 8x8 handwritten digits as RGB PIL images of ``size`` pixels
    (grey levels 0..16 scaled to 0..255, bilinear upsampling). Train: the first 1,000; test: the rest."""

    NUM_TRAIN = 1000

    def __init__(self, split: str, transform: Callable[[Any], Any] | None = None, size: int = 32):
        from sklearn.datasets import load_digits

        digits = load_digits()
        rows = slice(0, self.NUM_TRAIN) if split == "train" else slice(self.NUM_TRAIN, None)
        self.images = (digits.images[rows] * (255.0 / 16.0)).round().astype(np.uint8)
        self.size, self.transform = size, transform
        _describe(self, digits.target[rows].tolist(), [str(d) for d in range(10)])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = Image.fromarray(self.images[index]).resize((self.size, self.size), Image.BILINEAR).convert("RGB")
        return (self.transform(image) if self.transform else image), self.targets[index]


def sample_path(ds: Any, index: int) -> str:
    """The image file of sample ``index`` of any dataset built here ("" when it has none, e.g. digits)."""
    if isinstance(ds, ConcatDataset):
        part = bisect.bisect_right(ds.cumulative_sizes, index)
        return sample_path(ds.datasets[part], index - (ds.cumulative_sizes[part - 1] if part else 0))
    for attr, pick in (("samples", 0), ("_samples", 0), ("_image_files", None), ("_images", None)):
        items = getattr(ds, attr, None)
        if items is not None:
            item = items[index]
            return str(item[pick] if pick is not None else item)
    return ""


class NamedErrors(Dataset):
    """``dataset`` whose unreadable samples (truncated or corrupt image files) raise an error naming the file.

    Every other attribute (targets, classes, ...) is the wrapped dataset's.
    """

    def __init__(self, dataset: Dataset, name: str):
        self.dataset, self.name = dataset, name

    def __getattr__(self, attr):
        if attr in ("dataset", "name"):  # not set yet (unpickling in a worker)
            raise AttributeError(attr)
        return getattr(self.dataset, attr)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except (OSError, SyntaxError, ValueError) as err:
            where = sample_path(self.dataset, index) or f"sample {index}"
            message = f"cannot read {where} ({self.name} sample {index}): {type(err).__name__}: {err}"
            raise (ValueError(message) if isinstance(err, ValueError) else OSError(message)) from err


def _named_errors(builder):
    """``builder(root, split, transform)`` whose read errors name the set; a set with index files is first
    checked to list images only inside ``root`` (:func:`check_inside_root`), each once (:func:`check_unique_ids`)."""
    def build(name, root, split, transform):
        ds = builder(root, split, transform)
        check_inside_root(ds, name, root)
        check_unique_ids(name, root)
        return NamedErrors(ds, name)
    return build


def _shifted_imagenet(name, root, split, transform):
    return NamedErrors(_imagenet_subset(name, root, transform), name)


def _imagenet_v2_set(name, root, split, transform):
    return NamedErrors(_imagenet_v2(root, transform), name)


def _digits(name, root, split, transform):
    return Digits(split, transform)


_REGISTRY = Registry("dataset", {
    "aircraft": _named_errors(_aircraft), "cub": _named_errors(_CUB), "cars": _named_errors(_cars),
    "dtd": _named_errors(_dtd), "flowers": _named_errors(_flowers), "pets": _named_errors(_pets),
    "cifar10": _named_errors(_cifar10), "imagenet": _named_errors(_imagenet), "imagenet-r": _shifted_imagenet,
    "imagenet-sketch": _shifted_imagenet, "imagenet-a": _shifted_imagenet, "imagenet-v2": _imagenet_v2_set,
    "imagefolder": _named_errors(_imagefolder), "digits": _digits,
})
DATASETS = tuple(_REGISTRY.names())


def build_dataset(name: str, root: str | os.PathLike[str], split: str,
                  transform: Callable[[Any], Any] | None = None) -> Dataset:
    """The ``split`` ("train" | "test") of dataset ``name`` (one of ``DATASETS``) read from ``root``."""
    builder = _REGISTRY.get(name)
    if split not in SPLITS:
        raise ValueError(f"dataset split {split!r}; expected one of {SPLITS}")
    if name in TEST_ONLY and split != "test":
        raise ValueError(f"dataset {name!r} is evaluation-only: it has no {split!r} split")
    return builder(name, os.path.expanduser(str(root)), split, transform)


def restrict_logits(logits: torch.Tensor, class_indices: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    """Keep the columns ``class_indices`` of 1000-way ImageNet logits (e.g. the 200 of ImageNet-R/-A),
    so ``argmax`` over the result is a label in the dataset's own class order."""
    index = torch.as_tensor(class_indices, dtype=torch.long, device=logits.device)
    return logits.index_select(-1, index)

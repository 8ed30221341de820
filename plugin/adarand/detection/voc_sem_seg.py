"""Pascal VOC 2012 semantic segmentation, with SBD's augmented labels, for Detectron2.

Registered names (root: ``$DETECTRON2_DATASETS``, default ``./datasets``, as :func:`register_voc`):

- ``voc_2012_sem_seg_{train,val}``: ``VOC2012/ImageSets/Segmentation/<split>.txt``, labels
  ``VOC2012/SegmentationClass/<id>.png``;
- ``voc_2012_sem_seg_train_aug``: (VOC train ∪ SBD train ∪ SBD val) minus VOC val, 10,582
  images with the full data: VOC's PNG for the images of VOC's train list, SBD's
  ``cls/<id>.mat`` (``GTcls.Segmentation``) for the others; images from ``VOC2012/JPEGImages``.
  SBD is looked for in ``<root>/SBD`` and then ``<root>/benchmark_RELEASE/dataset`` (the SBD
  archive unpacked as is): the first holding ``cls/`` is used, with its ``train.txt``/``val.txt``.

Labels are 0 = background, 1..20 = ``VOC_CLASSES``, 255 = ignore. Registration reads no file;
``DatasetCatalog.get`` checks every label once (size against its JPEG, values) and writes it as
a grey (L) index PNG to ``<root>/VOC2012/SegmentationClassIndex/<id>.png``, which the dicts'
``sem_seg_file_name`` names. Detectron2's ``DatasetMapper`` reads that file with
``read_image(..., "L")``: on VOC's own palette (P) PNGs this conversion goes through the
colours and gives luminance (aeroplane, index 1, would read 38), on an L PNG it keeps the
indices. A cached PNG newer than its source (and of its image's size) is used as is, so later
loads only read image headers.
"""
import logging
import os
from typing import Any

import numpy as np
from PIL import Image

from adarand.files import save_image

from .voc import VOC_CLASSES, VOID, _read_ids, _read_index_png, _register, datasets_root

STUFF_CLASSES = ["background", *VOC_CLASSES]
SEM_SEG_SPLITS = ("train", "val")
SBD_DIRS = ("SBD", os.path.join("benchmark_RELEASE", "dataset"))
CACHE_DIR = "SegmentationClassIndex"
logger = logging.getLogger(__name__)


def voc_palette() -> np.ndarray:
    """VOC's colour map (256 x 3 uint8): class k's RGB takes bit j of k (R, G, B) as bit 7-i of its byte, i = j // 3."""
    palette: np.ndarray = np.zeros((256, 3), dtype=np.uint8)
    for k in range(256):
        c, r, g, b = k, 0, 0, 0
        for i in range(8):
            r |= ((c >> 0) & 1) << (7 - i)
            g |= ((c >> 1) & 1) << (7 - i)
            b |= ((c >> 2) & 1) << (7 - i)
            c >>= 3
        palette[k] = (r, g, b)
    return palette


def checked_label(label: np.ndarray, path: str) -> np.ndarray:
    """``label`` as uint8; a value that is neither a class index (0..20) nor 255 is an error naming ``path``."""
    values = np.unique(label)
    bad = values[((values < 0) | (values >= len(STUFF_CLASSES))) & (values != VOID)]
    if bad.size:
        raise ValueError(f"{path}: label value(s) {bad[:8].tolist()} are neither a class index "
                         f"(0..{len(STUFF_CLASSES) - 1}) nor {VOID} (ignore)")
    return label.astype(np.uint8)


def image_shape(path: str) -> tuple[int, int]:
    """(height, width) of an image from its header; a missing or unreadable file is an error naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VOC image not found: {path}")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
    return height, width


def read_class_png(path: str, shape: tuple[int, int], image: str) -> np.ndarray:
    """Indices of a VOC ``SegmentationClass`` PNG (P or L mode), checked against ``image``'s ``shape``."""
    return checked_label(_read_index_png(path, shape, source=f"its image {image}'s"), path)


def read_sbd_mat(path: str, shape: tuple[int, int], image: str) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/*.mat``, checked against ``image``'s ``shape``."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"SBD label not found: {path}")
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError, NotImplementedError, MatReadError) as e:
        raise ValueError(f"cannot read SBD label {path}: {type(e).__name__}: {e}") from e
    label = getattr(mat.get("GTcls"), "Segmentation", None)
    if label is None:
        raise ValueError(f"{path}: no GTcls.Segmentation (SBD's cls/*.mat layout)")
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{path}: GTcls.Segmentation is {label.dtype} of shape {label.shape}; expected an "
                         "H x W array of integer class indices")
    if label.shape != shape:
        raise ValueError(f"{path}: size {label.shape} differs from its image {image}'s {shape}")
    return checked_label(label, path)


def _cached(target, source, shape):
    """Whether ``target`` was written from the current ``source`` (newer than it, grey, of ``shape``)."""
    if not (os.path.isfile(target) and os.path.isfile(source)
            and os.stat(target).st_mtime_ns > os.stat(source).st_mtime_ns):
        return False
    try:
        with Image.open(target) as im:
            return im.mode == "L" and im.size == shape[::-1]
    except (OSError, SyntaxError):
        return False


def _label_dict(voc, image_id, source, read, cache_dir, converted):
    image = os.path.join(voc, "JPEGImages", image_id + ".jpg")
    shape = image_shape(image)
    target = os.path.join(cache_dir, image_id + ".png")
    if not _cached(target, source, shape):
        label = read(source, shape, image)
        try:
            os.makedirs(cache_dir, exist_ok=True)
            save_image(Image.fromarray(label, mode="L"), target)
        except OSError as e:
            raise OSError(f"cannot write the label cache {target} ({e}); give register_voc_sem_seg another "
                          "cache_dir") from e
        converted.append(image_id)
    return {"file_name": image, "sem_seg_file_name": target, "height": shape[0], "width": shape[1],
            "image_id": image_id}


def _log_converted(converted, what, cache_dir):
    if converted:
        logger.info("%s: checked %d label(s) and wrote them as index PNGs to %s", what, len(converted), cache_dir)


def load_voc_sem_seg(voc: str, split: str, cache_dir: str | None = None) -> list[dict[str, Any]]:
    """Dicts of ``ImageSets/Segmentation/<split>.txt`` under ``voc`` (.../VOC2012), labels from ``SegmentationClass``."""
    cache_dir = cache_dir or os.path.join(voc, CACHE_DIR)
    converted: list[str] = []
    dicts = [_label_dict(voc, i, os.path.join(voc, "SegmentationClass", i + ".png"), read_class_png, cache_dir,
                         converted)
             for i in _read_ids(os.path.join(voc, "ImageSets", "Segmentation", split + ".txt"))]
    _log_converted(converted, f"VOC {voc} sem-seg {split!r}", cache_dir)
    return dicts


def train_aug_ids(voc: str, sbd: str) -> tuple[list[str], set[str]]:
    """(sorted train_aug ids, VOC train ids): (VOC train ∪ SBD train ∪ SBD val) minus VOC val."""
    seg = os.path.join(voc, "ImageSets", "Segmentation")
    voc_train = set(_read_ids(os.path.join(seg, "train.txt")))
    voc_val = set(_read_ids(os.path.join(seg, "val.txt")))
    sbd_ids = set(_read_ids(os.path.join(sbd, "train.txt"))) | set(_read_ids(os.path.join(sbd, "val.txt")))
    return sorted((voc_train | sbd_ids) - voc_val), voc_train


def load_voc_sem_seg_train_aug(voc: str, sbd: str, cache_dir: str | None = None) -> list[dict[str, Any]]:
    """Dicts of train_aug (:func:`train_aug_ids`): VOC's label for VOC train images, else ``<sbd>/cls/<id>.mat``."""
    cache_dir = cache_dir or os.path.join(voc, CACHE_DIR)
    ids, voc_train = train_aug_ids(voc, sbd)
    converted: list[str] = []
    dicts: list[dict[str, Any]] = []
    for i in ids:
        if i in voc_train:
            source, read = os.path.join(voc, "SegmentationClass", i + ".png"), read_class_png
        else:
            source, read = os.path.join(sbd, "cls", i + ".mat"), read_sbd_mat
        dicts.append(_label_dict(voc, i, source, read, cache_dir, converted))
    _log_converted(converted, f"VOC {voc} + SBD {sbd} sem-seg 'train_aug'", cache_dir)
    return dicts


def find_sbd(root: str) -> str:
    """The SBD directory under ``root``: the first of ``SBD_DIRS`` that holds ``cls/``."""
    candidates = [os.path.join(root, d) for d in SBD_DIRS]
    for candidate in candidates:
        if os.path.isdir(os.path.join(candidate, "cls")):
            return candidate
    raise FileNotFoundError("SBD's augmented labels (needed by voc_2012_sem_seg_train_aug) not found: no cls/ in "
                            + " or ".join(candidates))


def register_voc_sem_seg(root: str | None = None, cache_dir: str | None = None) -> list[str]:
    """Register the semantic-segmentation splits above; nothing is read until ``DatasetCatalog.get``.

    ``cache_dir``: where the checked index PNGs go (default ``<root>/VOC2012/SegmentationClassIndex``).
    Calling it again re-points the names. Returns the registered names.
    """
    root = datasets_root(root)
    voc = os.path.join(root, "VOC2012")
    metadata = dict(stuff_classes=list(STUFF_CLASSES), stuff_colors=voc_palette()[:len(STUFF_CLASSES)].tolist(),
                    ignore_label=VOID, evaluator_type="sem_seg", dirname=voc, year=2012)
    names = []
    for split in SEM_SEG_SPLITS:
        name = f"voc_2012_sem_seg_{split}"
        _register(name, lambda s=split: load_voc_sem_seg(voc, s, cache_dir), split=split, **metadata)
        names.append(name)
    name = "voc_2012_sem_seg_train_aug"
    _register(name, lambda: load_voc_sem_seg_train_aug(voc, find_sbd(root), cache_dir), split="train_aug",
              **metadata)
    return names + [name]

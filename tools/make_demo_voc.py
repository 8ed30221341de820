"""Generate a small detection/segmentation set in Pascal VOC's real on-disk layout.

    python tools/make_demo_voc.py --root datasets/demo_voc --num-train 120 --num-val 40 --seed 0

Every image holds 1-3 instances of ONE category, pasted at random scale, flip and
position onto a random crop of a real background photo. Boxes and instance masks are
exact: they are the visible pixels of each paste mask. Sources (all shipped offline by
scikit-image / scikit-learn; see docs/demo_detection.md for what each one is):

- ``cat``: the cat's head from ``skimage.data.chelsea()``, cut with a hand-placed ellipse;
- ``person``: the astronaut from ``skimage.data.astronaut()``, cut with a hand-placed
  head ellipse + torso polygon;
- ``horse``: the binary horse silhouette ``skimage.data.horse()``, filled with the wooden
  table texture of ``skimage.data.coffee()``;
- backgrounds: ``china.jpg`` and ``flower.jpg`` (``sklearn.datasets.load_sample_images``)
  and ``skimage.data.rocket()``.

Written: ``<root>/VOC2012/{JPEGImages, Annotations, SegmentationObject, SegmentationClass,
ImageSets/Main, ImageSets/Segmentation}``; PNGs use VOC's palette, 255 marks a void
border around objects (as in VOC). Re-running with the same arguments does nothing.
"""
import argparse
import json
import os
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image
from scipy import ndimage

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
DEMO_CLASSES = ("cat", "horse", "person")
VOID = 255
MANIFEST = "demo_manifest.json"


def voc_palette():
    """VOC colour map: class k's RGB takes bit j of k (R, G, B) as bit 7-i of its byte, i = j // 3."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for k in range(256):
        c, r, g, b = k, 0, 0, 0
        for i in range(8):
            r |= ((c >> 0) & 1) << (7 - i)
            g |= ((c >> 1) & 1) << (7 - i)
            b |= ((c >> 2) & 1) << (7 - i)
            c >>= 3
        palette[k] = (r, g, b)
    return palette


def _ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _polygon(shape, points):
    from skimage.draw import polygon

    mask = np.zeros(shape, dtype=bool)
    rows, cols = polygon([p[1] for p in points], [p[0] for p in points], shape)
    mask[rows, cols] = True
    return mask


def _crop_to_mask(image, mask):
    rows, cols = np.nonzero(mask)
    sl = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    return image[sl], mask[sl]


def object_sources():
    """{category: (RGB uint8 H x W x 3, bool mask H x W)} cut from real photos."""
    import skimage.data as data

    cat = data.chelsea()  # 300 x 451
    cat_mask = _ellipse(cat.shape[:2], cy=165, cx=200, ry=150, rx=185)

    person = data.astronaut()  # 512 x 512
    head = _ellipse(person.shape[:2], cy=100, cx=222, ry=100, rx=78)
    torso = _polygon(person.shape[:2], [(115, 160), (320, 160), (360, 260), (372, 511), (20, 511), (30, 270)])

    horse_mask = ~data.horse()  # True = background in skimage's silhouette
    wood = data.coffee()[:250, 450:]  # wooden table above and right of the cup and saucer
    texture = np.array(Image.fromarray(wood).resize(horse_mask.shape[::-1], Image.BILINEAR))

    return {
        "cat": _crop_to_mask(cat, cat_mask),
        "person": _crop_to_mask(person, head | torso),
        "horse": _crop_to_mask(texture, horse_mask),
    }


def background_sources():
    """Real RGB photos used as backgrounds."""
    import skimage.data as data
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images) + [data.rocket()]


def _background(rng, photos, size):
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    scale = size / min(h, w) * rng.uniform(1.0, 1.6)
    resized = np.array(Image.fromarray(photo).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
    y = rng.integers(resized.shape[0] - size + 1)
    x = rng.integers(resized.shape[1] - size + 1)
    crop = resized[y : y + size, x : x + size]
    return crop[:, ::-1].copy() if rng.random() < 0.5 else crop.copy()


def _scaled_object(rng, image, mask, size):
    longest = rng.uniform(0.3, 0.6) * size
    scale = longest / max(mask.shape)
    wh = (max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale)))
    obj = np.array(Image.fromarray(image).resize(wh, Image.BILINEAR))
    m = np.array(Image.fromarray(mask.astype(np.uint8) * 255).resize(wh, Image.BILINEAR)) >= 128
    if rng.random() < 0.5:
        obj, m = obj[:, ::-1], m[:, ::-1]
    return obj, m


def compose(rng, category, objects, photos, size, max_instances=3, max_overlap=0.2, tries=20):
    """One image: returns (RGB H x W x 3, instance map H x W with ids 1..n, 0 background)."""
    canvas = _background(rng, photos, size)
    ids = np.zeros((size, size), dtype=np.uint8)
    image, mask = objects[category]
    for _ in range(int(rng.integers(1, max_instances + 1))):
        obj, m = _scaled_object(rng, image, mask, size)
        for _ in range(tries):
            y = int(rng.integers(size - m.shape[0] + 1))
            x = int(rng.integers(size - m.shape[1] + 1))
            full = np.zeros_like(ids, dtype=bool)
            full[y : y + m.shape[0], x : x + m.shape[1]] = m
            if (full & (ids > 0)).sum() <= max_overlap * min(full.sum(), max(1, (ids > 0).sum())):
                break
        else:
            continue  # no free spot: fewer instances in this image
        region = canvas[y : y + m.shape[0], x : x + m.shape[1]]
        region[m] = obj[m]
        ids[full] = ids.max() + 1
    return canvas, _drop_hidden(ids)


def _drop_hidden(ids, min_pixels=64):
    """Renumber visible instances 1..n, dropping those left with fewer than min_pixels."""
    out = np.zeros_like(ids)
    n = 0
    for k in range(1, int(ids.max()) + 1):
        visible = ids == k
        if visible.sum() >= min_pixels:
            n += 1
            out[visible] = n
    return out


def _void_border(ids, width):
    """Background pixels within ``width`` px of an object (VOC marks such a border 255)."""
    objects = ids > 0
    if width <= 0 or not objects.any():
        return np.zeros(ids.shape, dtype=bool)
    return ndimage.binary_dilation(objects, iterations=width) & ~objects


def annotation_xml(file_id, size, category, ids):
    """VOC XML; boxes are 1-based inclusive pixel extents of each instance mask."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{file_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "AdaRand offline demo (generated by tools/make_demo_voc.py)"
    sz = ET.SubElement(root, "size")
    for tag, v in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(v)
    ET.SubElement(root, "segmented").text = "1"
    for k in range(1, int(ids.max()) + 1):
        rows, cols = np.nonzero(ids == k)
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = category
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, v in (("xmin", cols.min()), ("ymin", rows.min()), ("xmax", cols.max()), ("ymax", rows.max())):
            ET.SubElement(box, tag).text = str(int(v) + 1)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _save_palette_png(array, path, palette):
    img = Image.fromarray(array.astype(np.uint8), mode="P")
    img.putpalette(palette.reshape(-1).tolist())
    img.save(path)


def _dirs(voc):
    return {
        "jpg": os.path.join(voc, "JPEGImages"),
        "xml": os.path.join(voc, "Annotations"),
        "obj": os.path.join(voc, "SegmentationObject"),
        "cls": os.path.join(voc, "SegmentationClass"),
        "main": os.path.join(voc, "ImageSets", "Main"),
        "seg": os.path.join(voc, "ImageSets", "Segmentation"),
    }


def split_ids(num_train, num_val):
    ids = [f"2026_{i:06d}" for i in range(1, num_train + num_val + 1)]
    return {"train": ids[:num_train], "val": ids[num_train:]}


def _is_complete(voc, settings):
    path = os.path.join(voc, MANIFEST)
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        if json.load(f) != settings:
            return False
    d = _dirs(voc)
    ids = sum(split_ids(settings["num_train"], settings["num_val"]).values(), [])
    return all(
        os.path.isfile(os.path.join(d[k], f"{i}.{ext}"))
        for i in ids
        for k, ext in (("jpg", "jpg"), ("xml", "xml"), ("obj", "png"), ("cls", "png"))
    )


def make_demo_voc(root, num_train=120, num_val=40, seed=0, size=256, void_border=2, progress=True):
    """Write the tree under ``root/VOC2012``; return that directory. Skips if already complete."""
    if num_train < 1 or num_val < 1:
        raise ValueError(f"--num-train {num_train} / --num-val {num_val}: both must be >= 1")
    if size < 64:
        raise ValueError(f"--size {size}: must be >= 64")
    voc = os.path.join(root, "VOC2012")
    settings = {"num_train": num_train, "num_val": num_val, "seed": seed, "size": size,
                "void_border": void_border, "classes": list(DEMO_CLASSES)}
    if _is_complete(voc, settings):
        if progress:
            print(f"{voc} is complete; nothing to do")
        return voc
    d = _dirs(voc)
    for path in d.values():
        os.makedirs(path, exist_ok=True)
    objects, photos, palette = object_sources(), background_sources(), voc_palette()
    rng = np.random.default_rng(seed)
    splits = split_ids(num_train, num_val)
    all_ids = splits["train"] + splits["val"]
    try:
        from tqdm import tqdm

        iterator = tqdm(all_ids, desc="demo VOC", disable=not progress)
    except ImportError:
        iterator = all_ids
    for n, file_id in enumerate(iterator):
        category = DEMO_CLASSES[n % len(DEMO_CLASSES)]
        ids = np.zeros((1, 1), dtype=np.uint8)
        while ids.max() == 0:
            image, ids = compose(rng, category, objects, photos, size)
        void = _void_border(ids, void_border)
        cls = np.where(ids > 0, VOC_CLASSES.index(category) + 1, 0).astype(np.uint8)
        obj = ids.copy()
        cls[void] = VOID
        obj[void] = VOID
        Image.fromarray(image).save(os.path.join(d["jpg"], f"{file_id}.jpg"), quality=95)
        with open(os.path.join(d["xml"], f"{file_id}.xml"), "w") as f:
            f.write(annotation_xml(file_id, size, category, ids))
        _save_palette_png(obj, os.path.join(d["obj"], f"{file_id}.png"), palette)
        _save_palette_png(cls, os.path.join(d["cls"], f"{file_id}.png"), palette)
    for sub in ("main", "seg"):
        for split, ids_ in (("train", splits["train"]), ("val", splits["val"]), ("trainval", all_ids)):
            with open(os.path.join(d[sub], f"{split}.txt"), "w") as f:
                f.write("\n".join(ids_) + "\n")
    with open(os.path.join(voc, MANIFEST), "w") as f:
        json.dump(settings, f, indent=1)
    return voc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="datasets/demo_voc", help="output root; the tree goes to <root>/VOC2012")
    p.add_argument("--num-train", type=int, default=120)
    p.add_argument("--num-val", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="square image side in pixels")
    p.add_argument("--void-border", type=int, default=2, help="width of the 255 border around objects (0: none)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    voc = make_demo_voc(a.root, a.num_train, a.num_val, a.seed, a.size, a.void_border, progress=not a.quiet)
    print(voc)


if __name__ == "__main__":
    main()

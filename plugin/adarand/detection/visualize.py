"""Ground truth and predictions drawn with Detectron2's Visualizer, runs side by side.

A run's predictions are read from what ``COCOEvaluator`` writes to its output folder:

- ``instances_predictions.pth``: a ``torch.save``d list of ``{"image_id": id, "instances":
  [COCO json dicts]}``, one per evaluated image (images without detections included), with
  contiguous class ids. It holds only lists, dicts, strings and numbers, so it loads with
  ``torch.load(weights_only=True)``: nothing in it can execute code. (A proposal-only model
  also stores ``Instances`` objects under ``"proposals"``; such a file is refused.)
- ``coco_instances_results.json``: the same detections as a flat JSON list, with the
  dataset's class ids (mapped back through ``thing_dataset_id_to_contiguous_id`` when the
  metadata has it); images without detections are absent from it.

Semantic segmentation (a dataset whose ``evaluator_type`` is "sem_seg", or runs given as
``sem_seg_predictions.json``) is drawn with ``Visualizer.draw_sem_seg``: the ground truth from
each dict's ``sem_seg_file_name`` (an index PNG; ``ignore_label`` pixels are not drawn), a run's
predictions from what ``SemSegEvaluator`` writes, ``sem_seg_predictions.json``: a JSON list of
``{"file_name", "category_id", "segmentation": RLE}``, one per image and predicted class, with
the dataset's class ids (mapped back through ``stuff_dataset_id_to_contiguous_id`` when the
metadata has it).

Each class keeps one colour in every panel, so ground truth and runs compare at a glance.
"""
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog, detection_utils
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer
from PIL import Image
from tqdm.auto import tqdm

from adarand.files import UnsafeFileError, load_torch, save_image

from .voc import _read_index_png

TITLE_HEIGHT = 20  # pixels of the white strip holding a panel's title
GAP = 4  # white pixels between panels and between grid rows
_REQUIRED = ("category_id", "bbox", "score")
SEM_SEG_FILE = "sem_seg_predictions.json"  # what SemSegEvaluator writes to <OUTPUT_DIR>/inference/
_SEM_SEG_REQUIRED = ("file_name", "category_id", "segmentation")


def _check_records(records, path, num_classes, required=_REQUIRED, key="image_id"):
    for r in records:
        missing = [k for k in required if k not in r]
        if missing:
            raise ValueError(f"{path}: a prediction of image {r.get(key)!r} lacks {missing}")
        if not 0 <= r["category_id"] < num_classes:
            raise ValueError(f"{path}: class id {r['category_id']} of image {r.get(key)!r} is outside "
                             f"[0, {num_classes})")


def _load_pth(path):
    try:
        saved = load_torch(path, what="predictions file")
    except UnsafeFileError as e:
        raise UnsafeFileError(f"{e}; for a proposal-only model's file, draw coco_instances_results.json "
                              "instead") from None
    if not isinstance(saved, list) or not all(isinstance(p, dict) and "image_id" in p for p in saved):
        raise ValueError(f"{path} is not COCOEvaluator's instances_predictions.pth "
                         f"(a list of dicts with 'image_id' and 'instances')")
    return {p["image_id"]: list(p.get("instances", [])) for p in saved}


def _load_json(path, what, key, to_contiguous):
    """{record[key]: [records]} of a JSON list of dicts (``what``), class ids mapped through ``to_contiguous``."""
    try:
        with open(path) as f:
            records = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed predictions file {path}: {e}") from e
    if not isinstance(records, list) or not all(isinstance(r, dict) and key in r for r in records):
        raise ValueError(f"{path} is not {what}")
    by_image = {}
    for r in records:
        if to_contiguous is not None:
            if r.get("category_id") not in to_contiguous:
                raise ValueError(f"{path}: class id {r.get('category_id')!r} is not one of the dataset's")
            r = {**r, "category_id": to_contiguous[r["category_id"]]}
        by_image.setdefault(r[key], []).append(r)
    return by_image


def draws_sem_seg(metadata: Any, paths: Iterable[str] = ()) -> bool:
    """Whether semantic segmentation is drawn: the dataset is evaluated as such, or a run's file is
    ``sem_seg_predictions.json`` (e.g. the semantic branch of a panoptic dataset)."""
    return metadata.get("evaluator_type") == "sem_seg" or any(os.path.basename(p) == SEM_SEG_FILE for p in paths)


def _load_sem_seg(path, metadata):
    if not metadata.get("stuff_classes"):
        raise ValueError(f"{path}: dataset {metadata.name} has no stuff_classes, so no semantic segmentation "
                         "to draw")
    by_image = _load_json(path, f"SemSegEvaluator's {SEM_SEG_FILE} (a list of dicts with 'file_name', "
                                "'category_id' and an RLE 'segmentation')",
                          "file_name", metadata.get("stuff_dataset_id_to_contiguous_id"))
    for file_name, records in by_image.items():
        _check_records(records, path, len(metadata.stuff_classes), _SEM_SEG_REQUIRED, key="file_name")
        if not all(isinstance(r["segmentation"], dict) and {"size", "counts"} <= set(r["segmentation"])
                   for r in records):
            raise ValueError(f"{path}: a segmentation of image {file_name!r} is not an RLE "
                             "({'size': [height, width], 'counts': ...})")
    return by_image


def load_predictions(path: str, metadata: Any, sem_seg: bool = False) -> dict[Any, list[dict[str, Any]]]:
    """One run's predictions (see the module doc): {image_id: [COCO json detections, contiguous class
    ids]}, or with ``sem_seg`` {image file_name: [sem_seg_predictions.json records]}."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"predictions file not found: {path}")
    if sem_seg:
        return _load_sem_seg(path, metadata)
    if path.endswith(".json"):
        by_image = _load_json(path, "a COCO results list (dicts with 'image_id', 'category_id', 'bbox', 'score')",
                              "image_id", metadata.get("thing_dataset_id_to_contiguous_id"))
    else:
        by_image = _load_pth(path)
    for records in by_image.values():
        _check_records(records, path, len(metadata.thing_classes))
    return by_image


def check_predictions_belong(predictions: Mapping[Any, Any], dicts: Sequence[dict[str, Any]], where: str,
                             dataset_name: str, key: str = "image_id") -> None:
    """Predictions of another data set are refused: every image (``key`` of its dict: the image id, or
    the file name for semantic segmentation) must be one of ``dicts``, every mask's size (RLE ``size``)
    that image's, and no box may reach past it (Detectron2 clips its boxes to the image), since ids
    alone coincide across data sets (e.g. the demo's sizes)."""
    by_id = {d[key]: d for d in dicts}
    foreign = [i for i in predictions if i not in by_id]
    if foreign:
        raise ValueError(f"{where} has predictions for {len(foreign)} image(s) not in "
                         f"{dataset_name}, e.g. {foreign[0]!r}: predictions of another dataset"
                         + (f" or root (its images are like {dicts[0][key]!r})?" if key == "file_name" and dicts
                            else "?"))
    for image_id, records in predictions.items():
        height, width = by_id[image_id]["height"], by_id[image_id]["width"]
        for r in records:
            mask = r.get("segmentation")
            size: Any = mask.get("size") if isinstance(mask, dict) else None
            other_size = size is not None and list(size) != [height, width]
            x, y, w, h = r.get("bbox", (0, 0, 0, 0))  # COCO XYWH; a semantic segment has none
            if other_size or x + w > width + 1 or y + h > height + 1:
                shown = f"a mask of {size[0]} x {size[1]}" if other_size \
                    else f"a box (x, y, w, h) = {tuple(round(v, 1) for v in r['bbox'])}"
                raise ValueError(f"{where}: image {image_id!r} has {shown} but is {height} x {width} (height x "
                                 f"width) in {dataset_name}: predictions of another dataset, or of other image "
                                 "sizes?")


def class_colors(metadata: Any) -> list[tuple[float, ...]]:
    """One fixed RGB colour (floats in [0, 1]) per class: the metadata's ``thing_colors`` (0-255)
    when it has them, else Detectron2's colormap without its greys (which vanish on photos), cycled."""
    if metadata.get("thing_colors"):
        return [tuple(v / 255 for v in color) for color in metadata.thing_colors]
    palette = [c for c in colormap(rgb=True, maximum=1) if c.max() - c.min() > 0.2]
    return [tuple(palette[c % len(palette)]) for c in range(len(metadata.thing_classes))]


def _draw_note(visualizer, image, note):
    """``note`` in the top left corner: two lines, shrunk to fit a narrow image (a character is about 0.8
    font sizes wide)."""
    text = note.replace(" (", "\n(")
    size = min(visualizer._default_font_size, (image.shape[1] - 8) / (0.8 * max(map(len, text.split("\n")))))
    visualizer.draw_text(text, (3, 3), font_size=size, color="w", horizontal_alignment="left")


def _overlay(image, boxes, classes, masks, labels, metadata, scale, empty_note=""):
    visualizer = Visualizer(image, metadata, scale=scale)
    if not len(classes):
        if empty_note:
            _draw_note(visualizer, image, empty_note)
        return visualizer.output.get_image()
    colors = class_colors(metadata)
    drawn = visualizer.overlay_instances(boxes=boxes, labels=labels, masks=masks,
                                         assigned_colors=[colors[c] for c in classes])
    return drawn.get_image()


def draw_ground_truth(image: np.ndarray, record: Mapping[str, Any], metadata: Any, scale: float = 1.0) -> np.ndarray:
    """The dataset dict's boxes, masks and class names drawn on ``image`` (H x W x 3 RGB uint8)."""
    annotations = record.get("annotations", [])
    boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations],
                     dtype=np.float64).reshape(-1, 4)
    classes = [a["category_id"] for a in annotations]
    with_masks = bool(annotations) and all("segmentation" in a for a in annotations)
    masks = [a["segmentation"] for a in annotations] if with_masks else None
    labels = [metadata.thing_classes[c] for c in classes]
    return _overlay(image, boxes, classes, masks, labels, metadata, scale)


def empty_panel_note(records: Sequence[Mapping[str, Any]], score_threshold: float) -> str:
    """What a prediction panel without a detection to draw says: the best score below the threshold."""
    if not records:
        return "no detection"
    return f"no detection ≥ {score_threshold:g} (best score {max(r['score'] for r in records):.2f})"


def draw_predictions(image: np.ndarray, records: Sequence[Mapping[str, Any]], metadata: Any,
                     score_threshold: float = 0.5, top_k: int = 0, scale: float = 1.0) -> np.ndarray:
    """COCO json detections scoring at least ``score_threshold`` (at most the ``top_k`` best when
    ``top_k`` > 0), drawn as "class score%"; with none, :func:`empty_panel_note` in the corner."""
    kept = sorted((r for r in records if r["score"] >= score_threshold), key=lambda r: -r["score"])
    kept = kept[:top_k] if top_k > 0 else kept
    boxes = BoxMode.convert(np.array([r["bbox"] for r in kept], dtype=np.float64).reshape(-1, 4),
                            BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    classes = [r["category_id"] for r in kept]
    masks = [r["segmentation"] for r in kept] if kept and all("segmentation" in r for r in kept) else None
    labels = [f"{metadata.thing_classes[r['category_id']]} {r['score']:.0%}" for r in kept]
    return _overlay(image, boxes, classes, masks, labels, metadata, scale, empty_panel_note(records, score_threshold))


def hidden_classes(metadata: Any, names: Sequence[str] | None = None) -> tuple[int, ...]:
    """Indices of the classes a semantic segmentation panel leaves undrawn: ``names`` (the dataset's
    ``stuff_classes``), by default "background" where the dataset has one: VOC colours it black, which
    blended over the photo at ``draw_sem_seg``'s alpha (0.8) would hide most of it."""
    classes = metadata.stuff_classes
    if names is None:
        names = [n for n in ("background",) if n in classes]
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise ValueError(f"hidden classes {unknown} are not among dataset {metadata.name}'s {list(classes)}")
    return tuple(classes.index(n) for n in names)


def _draw_label(image, label, metadata, hidden, scale):
    """``draw_sem_seg`` of an H x W label map; the ``hidden`` classes and values past the classes
    (``ignore_label``, 255) are left undrawn."""
    label = np.where(np.isin(label, hidden), len(metadata.stuff_classes), label)
    return Visualizer(image, metadata, scale=scale).draw_sem_seg(label).get_image()


def draw_sem_seg_ground_truth(image: np.ndarray, record: Mapping[str, Any], metadata: Any, hidden: Sequence[int] = (),
                              scale: float = 1.0) -> np.ndarray:
    """The dict's ``sem_seg_file_name`` (an index PNG of the image's size) drawn on ``image``: class
    colours and names (see :func:`_draw_label`)."""
    if "sem_seg_file_name" not in record:
        raise ValueError(f"image {record['file_name']} of dataset {metadata.name} has no sem_seg_file_name")
    label = _read_index_png(record["sem_seg_file_name"], (record["height"], record["width"]),
                            source=f"its image {record['file_name']}'s")
    return _draw_label(image, label, metadata, hidden, scale)


def sem_seg_label_map(records: Iterable[Mapping[str, Any]], height: int, width: int, num_classes: int) -> np.ndarray:
    """H x W class indices of one image's ``sem_seg_predictions.json`` records (RLE per class); pixels of
    no record get ``num_classes``, which ``draw_sem_seg`` leaves undrawn."""
    label: np.ndarray = np.full((height, width), num_classes, np.int64)
    for r in records:
        label[mask_util.decode(r["segmentation"]).astype(bool)] = r["category_id"]
    return label


def draw_sem_seg_predictions(image: np.ndarray, records: Sequence[Mapping[str, Any]], metadata: Any,
                             hidden: Sequence[int] = (), scale: float = 1.0) -> np.ndarray:
    """One image's predicted segments drawn as the ground truth is; none: a note saying so."""
    if not records:
        visualizer = Visualizer(image, metadata, scale=scale)
        _draw_note(visualizer, image, "no prediction for this image")
        return visualizer.output.get_image()
    label = sem_seg_label_map(records, image.shape[0], image.shape[1], len(metadata.stuff_classes))
    return _draw_label(image, label, metadata, hidden, scale)


def _with_title(panel, title):
    strip = np.full((TITLE_HEIGHT, panel.shape[1], 3), 255, np.uint8)
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    width = cv2.getTextSize(title, font, size, 1)[0][0]
    size *= min(1.0, (panel.shape[1] - 6) / max(width, 1))  # shrink long titles to the panel's width
    cv2.putText(strip, title, (3, TITLE_HEIGHT - 6), font, size, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, panel])


def _pad(image, height, width):
    out = np.full((height, width, 3), 255, np.uint8)
    out[: image.shape[0], : image.shape[1]] = image
    return out


def side_by_side(panels: Sequence[np.ndarray], titles: Sequence[str]) -> np.ndarray:
    """Panels left to right, each under its title, ``GAP`` white pixels apart."""
    titled = [_with_title(p, t) for p, t in zip(panels, titles, strict=True)]
    height = max(p.shape[0] for p in titled)
    gap = np.full((height, GAP, 3), 255, np.uint8)
    row = [gap] * (2 * len(titled) - 1)
    row[0::2] = [_pad(p, height, p.shape[1]) for p in titled]
    return np.concatenate(row, axis=1)


def stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Rows top to bottom, ``GAP`` white pixels apart, padded on the right to the widest."""
    width = max(r.shape[1] for r in rows)
    gap = np.full((GAP, width, 3), 255, np.uint8)
    out = [gap] * (2 * len(rows) - 1)
    out[0::2] = [_pad(r, r.shape[0], width) for r in rows]
    return np.concatenate(out)


def draw_comparison(record: Mapping[str, Any], metadata: Any, runs: Sequence[tuple[str, Any]] = (),
                    score_threshold: float = 0.5, top_k: int = 0, ground_truth: bool = True, scale: float = 1.0,
                    sem_seg: bool = False, hidden: Sequence[int] = ()) -> np.ndarray:
    """One row for one dataset dict: [ground truth |] run 1 | run 2 ..., runs = [(name, predictions)]
    (as :func:`load_predictions` gives them; ``sem_seg``: semantic segmentations without the
    ``hidden`` classes, no score cut).

    Panels are titled; the first title starts with the image id.
    """
    image = detection_utils.read_image(record["file_name"], format="RGB")
    detection_utils.check_image_size(record, image)
    panels, titles = [], []
    if ground_truth:
        panels.append(draw_sem_seg_ground_truth(image, record, metadata, hidden, scale) if sem_seg
                      else draw_ground_truth(image, record, metadata, scale))
        titles.append("ground truth")
    for name, predictions in runs:
        if sem_seg:
            panels.append(draw_sem_seg_predictions(image, predictions.get(record["file_name"], []), metadata, hidden,
                                                   scale))
            titles.append(name)
            continue
        panels.append(draw_predictions(image, predictions.get(record["image_id"], []), metadata,
                                       score_threshold, top_k, scale))
        titles.append(f"{name} ({f'top {top_k}, ' if top_k > 0 else ''}score >= {score_threshold:g})")
    titles[0] = f"{record['image_id']}: {titles[0]}"
    return side_by_side(panels, titles)


def save_png(image: np.ndarray, path: str, colors: int = 0) -> None:
    """RGB PNG; ``colors`` > 0: a palette PNG of that many colours (dithered), several times smaller."""
    picture = Image.fromarray(image)
    if colors > 0:
        picture = picture.quantize(colors=colors)
    save_image(picture, path, optimize=True)


def visualize_dataset(dataset_name: str, runs: Sequence[tuple[str, str]] = (), out_dir: str | None = None,
                      grid_file: str | None = None, score_threshold: float = 0.5, top_k: int = 0, num_images: int = 0,
                      ground_truth: bool = True, scale: float = 1.0, colors: int = 0, progress: bool = True,
                      hide_classes: Sequence[str] | None = None) -> list[str]:
    """Draw the first ``num_images`` images (0 = all) of a registered dataset.

    ``runs``: [(name, path of instances_predictions.pth or coco_instances_results.json, or
    sem_seg_predictions.json: see :func:`draws_sem_seg`)], drawn right of the ground truth.
    Semantic segmentations leave the ``hide_classes`` undrawn (names; default: see :func:`hidden_classes`).
    Writes one ``<out_dir>/<image name>.png`` per image and/or one ``grid_file`` (a row per
    image), palette PNGs when ``colors`` > 0. Returns the paths written.
    """
    if out_dir is None and grid_file is None:
        raise ValueError("nothing to write: give out_dir and/or grid_file")
    if not ground_truth and not runs:
        raise ValueError("nothing to draw: no ground truth and no predictions")
    metadata = MetadataCatalog.get(dataset_name)
    sem_seg = draws_sem_seg(metadata, [path for _, path in runs])
    dicts = DatasetCatalog.get(dataset_name)
    loaded = [(name, load_predictions(path, metadata, sem_seg)) for name, path in runs]
    hidden = hidden_classes(metadata, hide_classes) if sem_seg else ()
    for (name, predictions), (_, path) in zip(loaded, runs):
        check_predictions_belong(predictions, dicts, f"{path} ({name})", dataset_name,
                                 "file_name" if sem_seg else "image_id")
    selected = dicts[:num_images] if num_images > 0 else dicts
    if not selected:
        raise ValueError(f"dataset {dataset_name} has no images")
    written, rows = [], []
    for record in tqdm(selected, desc=f"drawing {dataset_name}", disable=not progress):
        row = draw_comparison(record, metadata, loaded, score_threshold, top_k, ground_truth, scale, sem_seg, hidden)
        if out_dir is not None:
            path = os.path.join(out_dir, os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png")
            save_png(row, path, colors)
            written.append(path)
        if grid_file is not None:
            rows.append(row)
    if grid_file is not None:
        save_png(stack_rows(rows), grid_file, colors)
        written.append(grid_file)
    return written


class PredictionDrawer(DatasetEvaluator):
    """During inference, draws ground truth | predictions of the first ``num_images`` images.

    Main process only (with several processes: the first images of its shard, which are
    the dataset's first images). One PNG per image in ``out_dir``; nothing is evaluated.
    """

    def __init__(self, dataset_name: str, out_dir: str, num_images: int, score_threshold: float = 0.5,
                 scale: float = 1.0):
        self._dataset_name = dataset_name
        self._out_dir = out_dir
        self._num_images = num_images
        self._score_threshold = score_threshold
        self._scale = scale
        self._records = None
        self._drawn = 0

    def reset(self) -> None:
        self._drawn = 0

    def _record(self, inp):
        if self._records is None:
            self._records = {d["image_id"]: d for d in DatasetCatalog.get(self._dataset_name)}
        return self._records.get(inp["image_id"], inp)

    def process(self, inputs: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
        if not comm.is_main_process():
            return
        metadata = MetadataCatalog.get(self._dataset_name)
        for inp, out in zip(inputs, outputs):
            if self._drawn >= self._num_images:
                return
            record = self._record(inp)
            detections = instances_to_coco_json(out["instances"].to("cpu"), inp["image_id"])
            row = draw_comparison(record, metadata, [("predictions", {inp["image_id"]: detections})],
                                  self._score_threshold, ground_truth="annotations" in record, scale=self._scale)
            name = os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png"
            save_png(row, os.path.join(self._out_dir, name))
            self._drawn += 1

    def evaluate(self) -> dict[str, Any]:
        return {}

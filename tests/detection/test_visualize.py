"""OpenCV in the environment; ground truth and predictions of a tiny run drawn to PNG files."""
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, Metadata, MetadataCatalog, detection_utils
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer
from PIL import Image
from tiny import BASE_CONFIG, REPO, tiny_cfg, tiny_opts

from adarand.detection import AdaRandTrainer
from adarand.detection.visualize import (GAP, TITLE_HEIGHT, class_colors, draw_predictions, load_predictions,
                                         save_png, visualize_dataset)


def test_opencv_and_the_detectron2_visualizer_work():
    import cv2
    from detectron2.utils.visualizer import GenericMask, Visualizer

    image = np.zeros((40, 60, 3), np.uint8)
    ok, png = cv2.imencode(".png", image)
    assert ok and cv2.imdecode(png, cv2.IMREAD_COLOR).shape == (40, 60, 3)
    mask = np.zeros((40, 60), np.uint8)
    mask[5:25, 10:50] = 1
    # The Visualizer outlines masks through cv2.findContours: one polygon through the rectangle's
    # corner pixels (their centres: detectron2 adds 0.5).
    polygons = GenericMask(mask, 40, 60).polygons
    assert len(polygons) == 1
    xs, ys = polygons[0][0::2], polygons[0][1::2]
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10.5, 49.5, 5.5, 24.5)
    drawn = Visualizer(image).overlay_instances(masks=[mask], assigned_colors=[(1.0, 0.0, 0.0)]).get_image()
    assert drawn.shape == (40, 60, 3)
    assert drawn[15, 30, 0] > 0 and drawn[35, 5].max() == 0  # inside tinted red, outside untouched


VAL = "voc_2012_seg_val"


@pytest.fixture(scope="module")
def evaluated(fake_voc, tmp_path_factory):
    """A 1-iteration FT run, evaluated on the val split at its end; it draws its first 2 images."""
    out = tmp_path_factory.mktemp("vis_run")
    cfg = tiny_cfg(out, max_iter=1, **{"MODEL.ADARAND.METHOD": "none", "DATASETS.TEST": (VAL,),
                                       "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0, "TEST.VIS_NUM_IMAGES": 2,
                                       "TEST.VIS_SCORE_THRESH": 0.0})
    cfg.freeze()
    trainer = AdaRandTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return out, out / "inference" / "instances_predictions.pth"


def _read_png(path):
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def _raw(record):
    return detection_utils.read_image(record["file_name"], format="RGB")


def _border_pixels(box):
    """(rows, cols) of the four sides of an XYXY box, one pixel inside it."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    rows = [y0 + 1] * (x1 - x0 - 2) + [y1 - 2] * (x1 - x0 - 2) + list(range(y0 + 1, y1 - 1)) * 2
    cols = list(range(x0 + 1, x1 - 1)) * 2 + [x0 + 1] * (y1 - y0 - 2) + [x1 - 2] * (y1 - y0 - 2)
    return np.array(rows), np.array(cols)


def test_predictions_file_loads_with_weights_only(evaluated):
    _, path = evaluated
    saved = torch.load(path, map_location="cpu", weights_only=True)
    val_ids = [d["image_id"] for d in DatasetCatalog.get(VAL)]
    assert [p["image_id"] for p in saved] == val_ids
    predictions = load_predictions(str(path), MetadataCatalog.get(VAL))
    assert set(predictions) == set(val_ids)
    record = predictions[val_ids[0]][0]
    assert set(record) >= {"category_id", "bbox", "score", "segmentation"} and 0 <= record["category_id"] < 20
    # The JSON COCOEvaluator writes beside it holds the same detections.
    from_json = load_predictions(str(path.parent / "coco_instances_results.json"), MetadataCatalog.get(VAL))
    assert from_json == {i: r for i, r in predictions.items() if r}


def test_ground_truth_is_drawn_on_its_boxes_only(evaluated, tmp_path):
    written = visualize_dataset(VAL, out_dir=str(tmp_path), progress=False)
    dicts = DatasetCatalog.get(VAL)
    assert len(written) == len(dicts)
    for record, path in zip(dicts, written):
        raw = _raw(record)
        png = _read_png(path)
        assert png.shape == (TITLE_HEIGHT + raw.shape[0], raw.shape[1], 3)
        image = png[TITLE_HEIGHT:].astype(int)
        changed = np.abs(image - raw).sum(-1) > 30
        for ann in record["annotations"]:
            rows, cols = _border_pixels(ann["bbox"])
            assert changed[rows, cols].mean() > 0.5, (path, ann["bbox"])
        # Far from every box and its label (above or below a small box, left-aligned) the photo is untouched.
        far = np.ones(raw.shape[:2], bool)
        for ann in record["annotations"]:
            x0, y0, x1, y1 = (int(v) for v in ann["bbox"])
            far[max(y0 - 20, 0):y1 + 20, max(x0 - 8, 0):x1 + 60] = False
        assert far.any() and not changed[far].any(), path


@pytest.mark.slow
def test_runs_side_by_side_with_ground_truth_in_a_grid(evaluated, tmp_path):
    _, path = evaluated
    grid = tmp_path / "grid.png"
    visualize_dataset(VAL, runs=[("FT", str(path)), ("AdaRand", str(path))], grid_file=str(grid),
                      score_threshold=0.0, num_images=3, progress=False)
    dicts = DatasetCatalog.get(VAL)[:3]
    height, width = dicts[0]["height"], dicts[0]["width"]
    png = _read_png(grid)
    row = TITLE_HEIGHT + height
    assert png.shape == (3 * row + 2 * GAP, 3 * width + 2 * GAP, 3)
    predictions = load_predictions(str(path), MetadataCatalog.get(VAL))
    for i, record in enumerate(dicts):
        raw = _raw(record).astype(int)
        top = i * (row + GAP) + TITLE_HEIGHT
        panels = [png[top:top + height, k * (width + GAP):k * (width + GAP) + width].astype(int) for k in range(3)]
        # The same file under two names draws two identical panels, different from the ground truth's.
        assert np.array_equal(panels[1], panels[2])
        best = max(predictions[record["image_id"]], key=lambda r: r["score"])
        x, y, w, h = best["bbox"]
        rows, cols = _border_pixels([x, y, x + w, y + h])
        assert (np.abs(panels[1] - raw).sum(-1)[rows, cols] > 30).mean() > 0.5
        assert not np.array_equal(panels[0], panels[1])


def test_score_threshold_and_top_k_drop_detections(evaluated):
    _, path = evaluated
    record = DatasetCatalog.get(VAL)[0]
    metadata = MetadataCatalog.get(VAL)
    detections = load_predictions(str(path), metadata)[record["image_id"]]
    above_all = max(r["score"] for r in detections) + 1e-6
    raw = _raw(record)
    with mock.patch.object(Visualizer, "draw_text", autospec=True) as draw_text:  # only the empty panel's note
        assert np.array_equal(draw_predictions(raw, detections, metadata, score_threshold=above_all), raw)
    assert draw_text.call_args.args[1].startswith("no detection")
    assert not np.array_equal(draw_predictions(raw, detections, metadata, score_threshold=0.0), raw)
    best = max(detections, key=lambda r: r["score"])
    assert np.array_equal(draw_predictions(raw, detections, metadata, score_threshold=0.0, top_k=1),
                          draw_predictions(raw, [best], metadata, score_threshold=0.0))


def test_empty_prediction_panel_says_why(tmp_path):
    """Issue 30, item 8: an empty panel looked like a failed drawing; it names the threshold and the best score
    under it, or that there was no detection at all (the note is checked as the text drawn, then looked at)."""
    image = np.full((90, 160, 3), 120, np.uint8)
    metadata = Metadata(thing_classes=["cat", "dog"])
    below = [{"category_id": 0, "bbox": [10, 10, 40, 30], "score": 0.31},
             {"category_id": 1, "bbox": [50, 20, 40, 30], "score": 0.12}]
    cases = [(below, 0.5, "no detection ≥ 0.5 (best score 0.31)"), ([], 0.5, "no detection"),
             (below, 0.3, None)]
    for records, threshold, note in cases:
        with mock.patch.object(Visualizer, "draw_text", autospec=True, side_effect=Visualizer.draw_text) as spy:
            panel = draw_predictions(image, records, metadata, score_threshold=threshold)
        notes = [c.args[1].replace("\n", " ") for c in spy.call_args_list if c.args[1].startswith("no detection")]
        assert notes == ([note] if note else []), notes
        if note:
            assert not np.array_equal(panel, image)  # drawn
            save_png(panel, str(tmp_path / f"empty_{threshold}_{len(records)}.png"))


def test_eval_draws_the_first_images(evaluated):
    out, _ = evaluated
    drawn = sorted(os.listdir(out / "inference" / "vis" / VAL))
    first = DatasetCatalog.get(VAL)[:2]
    assert drawn == sorted(d["image_id"] + ".png" for d in first)
    png = _read_png(out / "inference" / "vis" / VAL / drawn[0])
    assert png.shape == (TITLE_HEIGHT + first[0]["height"], 2 * first[0]["width"] + GAP, 3)


@pytest.mark.slow
def test_cli_draws_predictions_and_ground_truth(evaluated, fake_voc, tmp_path):
    _, path = evaluated
    env = dict(os.environ, DETECTRON2_DATASETS=fake_voc[0])
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "visualize.py"), "--config-file", BASE_CONFIG,
                           "--predictions", f"FT={path}", "--num-images", "2", "--score-threshold", "0.3",
                           "--output-dir", str(tmp_path / "vis"), "--grid", str(tmp_path / "grid.png"),
                           "DATASETS.TEST", f"('{VAL}',)"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    first = DatasetCatalog.get(VAL)[:2]  # the overridden DATASETS.TEST
    assert sorted(os.listdir(tmp_path / "vis")) == sorted(d["image_id"] + ".png" for d in first)
    assert _read_png(tmp_path / "grid.png").shape[0] == 2 * (TITLE_HEIGHT + first[0]["height"]) + GAP


def test_bad_predictions_are_clear_errors(evaluated, tmp_path):
    _, path = evaluated
    metadata = MetadataCatalog.get(VAL)
    with pytest.raises(FileNotFoundError, match="none.pth"):
        load_predictions(str(tmp_path / "none.pth"), metadata)
    unsafe = tmp_path / "unsafe.pth"
    torch.save([{"image_id": "x", "proposals": Instances((2, 2))}], unsafe)
    with pytest.raises(ValueError, match="unsafe.pth"):
        load_predictions(str(unsafe), metadata)
    with pytest.raises(ValueError, match=r"voc_2012_seg_train.*another dataset"):
        visualize_dataset("voc_2012_seg_train", runs=[("FT", str(path))], grid_file=str(tmp_path / "g.png"))
    bad_class = tmp_path / "bad.json"
    bad_class.write_text('[{"image_id": "a", "category_id": 20, "bbox": [0, 0, 1, 1], "score": 1.0}]')
    with pytest.raises(ValueError, match="bad.json.*class id 20"):
        load_predictions(str(bad_class), metadata)


@pytest.mark.parametrize("change", ["mask size", "box"])
def test_predictions_of_other_image_sizes_are_refused(evaluated, tmp_path, change):
    """Issue 20, item 9: same image ids, other images (the demo reuses ids across sizes)."""
    _, path = evaluated
    saved = torch.load(path, map_location="cpu", weights_only=True)
    first = next(p for p in saved if p["instances"])
    detection = first["instances"][0]
    if change == "mask size":
        detection["segmentation"]["size"] = [2 * s for s in detection["segmentation"]["size"]]
        message = "has a mask of"
    else:
        detection.pop("segmentation")
        detection["bbox"] = [10.0, 10.0, 400.0, 300.0]
        message = r"has a box \(x, y, w, h\) = \(10.0, 10.0, 400.0, 300.0\)"
    torch.save(saved, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=f"other.pth \\(FT\\): image '{first['image_id']}' {message}.* "
                                         f"but is 96 x 128 .*in {VAL}"):
        visualize_dataset(VAL, runs=[("FT", str(tmp_path / "other.pth"))], grid_file=str(tmp_path / "g.png"),
                          progress=False)


@pytest.mark.slow
def test_cli_eval_only_writes_prediction_images(evaluated, fake_voc, tmp_path):
    out, _ = evaluated
    env = dict(os.environ, DETECTRON2_DATASETS=fake_voc[0])
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", BASE_CONFIG,
                           "--eval-only", *tiny_opts(tmp_path), "MODEL.WEIGHTS", str(out / "model_final.pth"),
                           "MODEL.ADARAND.METHOD", "none", "DATASETS.TEST", f"('{VAL}',)",
                           "TEST.VIS_NUM_IMAGES", "1"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    first = DatasetCatalog.get(VAL)[0]
    assert os.listdir(tmp_path / "inference" / "vis" / VAL) == [first["image_id"] + ".png"]


def test_palette_png_keeps_the_size_and_shrinks_the_file(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    save_png(image, str(tmp_path / "full.png"))
    save_png(image, str(tmp_path / "palette.png"), colors=16)
    assert np.array_equal(_read_png(tmp_path / "full.png"), image)
    with Image.open(tmp_path / "palette.png") as im:
        assert im.mode == "P" and im.size == (64, 48) and len(im.getcolors()) <= 16
    assert os.path.getsize(tmp_path / "palette.png") < os.path.getsize(tmp_path / "full.png")


def test_class_colours_are_fixed_saturated_or_the_datasets_own(fake_voc):
    colors = class_colors(MetadataCatalog.get(VAL))
    assert len(colors) == 20 and len(set(colors)) == 20  # one per VOC class, all distinct
    assert all(max(c) - min(c) > 0.2 for c in colors)  # no greys: they vanish on photos
    assert colors == class_colors(MetadataCatalog.get(VAL))
    own = Metadata(thing_classes=["a", "b"], thing_colors=[(255, 0, 0), (0, 51, 255)])
    assert class_colors(own) == [(1.0, 0.0, 0.0), (0.0, 0.2, 1.0)]

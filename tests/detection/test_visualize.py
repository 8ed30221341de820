"""OpenCV in the environment; ground truth and predictions of a tiny run drawn to PNG files; semantic
segmentations (VOC 2012) of SemSegEvaluator's prediction files."""
import importlib.util
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, Metadata, MetadataCatalog, detection_utils
from detectron2.evaluation import SemSegEvaluator
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer
from PIL import Image
from tiny import BASE_CONFIG, REPO, tiny_cfg, tiny_opts

from adarand.detection import AdaRandDetectionTrainer, register_voc_sem_seg
from adarand.detection.visualize import (GAP, TITLE_HEIGHT, class_colors, draw_predictions,
                                         draw_sem_seg_ground_truth, draw_sem_seg_predictions, hidden_classes,
                                         load_predictions, save_png, visualize_dataset)


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
    trainer = AdaRandDetectionTrainer(cfg)
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


SEM_VAL = "voc_2012_sem_seg_val"
PERSON = 15  # VOC's index of "person" (stuff_classes: background first)


def _visualize_tool():
    spec = importlib.util.spec_from_file_location("visualize_tool", os.path.join(REPO, "tools", "visualize.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sem_seg_label(record):
    with Image.open(record["sem_seg_file_name"]) as im:
        return np.asarray(im).astype(np.int64)


def _evaluate(out_dir, predict):
    """SemSegEvaluator's own sem_seg_predictions.json for ``predict(ground truth label) -> label`` per image."""
    # Detectron2's default label reader passes copy=False to np.array, which NumPy 2 refuses.
    evaluator = SemSegEvaluator(SEM_VAL, distributed=False, output_dir=str(out_dir),
                                sem_seg_loading_fn=lambda path, dtype: np.asarray(Image.open(path), dtype=dtype))
    evaluator.reset()
    for record in DatasetCatalog.get(SEM_VAL):
        logits = F.one_hot(torch.from_numpy(predict(_sem_seg_label(record))), 21).permute(2, 0, 1).float()
        evaluator.process([{"file_name": record["file_name"]}], [{"sem_seg": logits}])
    evaluator.evaluate()
    return out_dir / "sem_seg_predictions.json"


def _drawn(label, hidden=(0,)):
    """The label map as draw_sem_seg is given it: the hidden classes (background) past the 21 classes."""
    return np.where(np.isin(label, hidden), 21, label)


def _perfect(label):
    return np.where(label == 255, 0, label)


def _left_half_person(label):
    predicted = np.zeros_like(label)
    predicted[:, : label.shape[1] // 2] = PERSON
    return predicted


@pytest.fixture
def sem_seg_runs(fake_voc, tmp_path):
    """VOC 2012 segmentation val (4 images, 96 x 128) of the fake tree; an FT run predicting its ground truth
    (ignore pixels as background) and an AdaRand run predicting "person" on every image's left half."""
    register_voc_sem_seg(fake_voc[0])  # test_voc_sem_seg points the names at its own trees
    (tmp_path / "ft").mkdir()
    (tmp_path / "adarand").mkdir()
    return _evaluate(tmp_path / "ft", _perfect), _evaluate(tmp_path / "adarand", _left_half_person)


def test_sem_seg_ground_truth_and_runs_side_by_side(sem_seg_runs, tmp_path):
    """Issue 29, item 4: ground truth | FT | AdaRand semantic segmentations drawn with draw_sem_seg, through the
    tool's main, one PNG per image and a grid."""
    ft, adarand = sem_seg_runs
    _visualize_tool().main(["--dataset", SEM_VAL, "--predictions", f"FT={ft}", "--predictions", f"AdaRand={adarand}",
                       "--num-images", "2", "--output-dir", str(tmp_path / "vis"), "--grid", str(tmp_path / "grid.png")])
    dicts = DatasetCatalog.get(SEM_VAL)[:2]
    assert sorted(os.listdir(tmp_path / "vis")) == sorted(d["image_id"] + ".png" for d in dicts)
    height, width = dicts[0]["height"], dicts[0]["width"]
    row = TITLE_HEIGHT + height
    grid = _read_png(tmp_path / "grid.png")
    assert grid.shape == (2 * row + GAP, 3 * width + 2 * GAP, 3)
    metadata = MetadataCatalog.get(SEM_VAL)
    for i, record in enumerate(dicts):
        raw = _raw(record)
        label = _sem_seg_label(record)
        assert np.array_equal(_read_png(tmp_path / "vis" / (record["image_id"] + ".png")),
                              grid[i * (row + GAP):i * (row + GAP) + row, :3 * width + 2 * GAP])
        top = i * (row + GAP) + TITLE_HEIGHT
        gt, ft_panel, adarand_panel = (grid[top:top + height, k * (width + GAP):k * (width + GAP) + width]
                                       for k in range(3))
        # Each panel is draw_sem_seg of its label map, background hidden; the ground truth's 255 (object
        # borders) is left undrawn by draw_sem_seg itself.
        assert np.array_equal(gt, Visualizer(raw, metadata).draw_sem_seg(_drawn(label)).get_image())
        assert np.array_equal(ft_panel, Visualizer(raw, metadata).draw_sem_seg(_drawn(_perfect(label))).get_image())
        assert np.array_equal(adarand_panel,
                              Visualizer(raw, metadata).draw_sem_seg(_drawn(_left_half_person(label))).get_image())
        # The class colour, blended over the photo at draw_sem_seg's alpha (0.8), at a pixel clear of edges and
        # names: an object's corner (3 pixels inside its box) in the ground truth, the top left corner (person)
        # in AdaRand's panel; background pixels show the photo itself.
        ys, xs = np.nonzero((label > 0) & (label < 255))
        y, x = ys.min() + 3, xs.min() + 3
        color = np.array(metadata.stuff_colors[label[y, x]])
        assert np.abs(gt[y, x].astype(int) - (0.8 * color + 0.2 * raw[y, x])).max() < 16
        person = np.array(metadata.stuff_colors[PERSON])
        assert np.abs(adarand_panel[3, 3].astype(int) - (0.8 * person + 0.2 * raw[3, 3])).max() < 16
        assert np.array_equal(adarand_panel[3, -4], raw[3, -4]) and np.array_equal(gt[3, 3], raw[3, 3])


@pytest.mark.parametrize("hide, shown", [(None, ["person"]), ([], ["background", "person"]),
                                         (["person"], ["background"])])
def test_sem_seg_classes_are_named_in_their_colours(sem_seg_runs, hide, shown):
    """What draw_sem_seg is asked to draw: each shown class's pixels, colour and name; background hidden by
    default (VOC's is black: blended over the photo it would hide it), any classes on request."""
    _, adarand = sem_seg_runs
    record = DatasetCatalog.get(SEM_VAL)[0]
    metadata = MetadataCatalog.get(SEM_VAL)
    with mock.patch.object(Visualizer, "draw_binary_mask", autospec=True,
                           side_effect=Visualizer.draw_binary_mask) as spy:
        draw_sem_seg_predictions(_raw(record), load_predictions(str(adarand), metadata, sem_seg=True)
                                 [record["file_name"]], metadata, hidden_classes(metadata, hide))
    drawn = {c.kwargs["text"]: (c.args[1], c.kwargs["color"]) for c in spy.call_args_list}
    predicted = _left_half_person(_sem_seg_label(record))
    assert sorted(drawn) == shown
    for name in shown:
        mask, color = drawn[name]
        k = metadata.stuff_classes.index(name)
        assert np.array_equal(mask, predicted == k)
        assert list(color) == [v / 255 for v in metadata.stuff_colors[k]]


def test_image_without_sem_seg_prediction_says_so(sem_seg_runs):
    record = DatasetCatalog.get(SEM_VAL)[0]
    raw = _raw(record)
    with mock.patch.object(Visualizer, "draw_text", autospec=True, side_effect=Visualizer.draw_text) as spy:
        panel = draw_sem_seg_predictions(raw, [], MetadataCatalog.get(SEM_VAL))
    assert [c.args[1] for c in spy.call_args_list] == ["no prediction for this image"]
    assert not np.array_equal(panel, raw)


@pytest.mark.parametrize("given, names", [([], None), (["--hide-classes", ""], []),
                                         (["--hide-classes", "background,person"], ["background", "person"])])
def test_hide_classes_option(given, names):
    assert _visualize_tool().parse_args(["--dataset", SEM_VAL, "--grid", "g.png", *given]).hide_classes == names


def test_unknown_hidden_class_is_named(sem_seg_runs, tmp_path):
    with pytest.raises(ValueError, match=r"\['kitten'\] are not among dataset voc_2012_sem_seg_val's"):
        visualize_dataset(SEM_VAL, grid_file=str(tmp_path / "g.png"), hide_classes=["kitten"], progress=False)


def _write_json(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_bad_sem_seg_predictions_are_clear_errors(sem_seg_runs, tmp_path):
    ft, _ = sem_seg_runs
    records = json.loads(ft.read_text())
    first = records[0]
    grid = str(tmp_path / "g.png")

    def refused(path, message, dataset=SEM_VAL):
        with pytest.raises(ValueError, match=message) as err:
            visualize_dataset(dataset, runs=[("FT", path)], grid_file=grid, progress=False)
        assert path in str(err.value)

    refused(_write_json(tmp_path / "dict.json", {"predictions": records}), "is not SemSegEvaluator's")
    refused(_write_json(tmp_path / "coco.json", [{"image_id": "a", "category_id": 1, "bbox": [0, 0, 1, 1],
                                                  "score": 1.0}]), "is not SemSegEvaluator's")
    refused(_write_json(tmp_path / "lacks.json", [{"file_name": first["file_name"], "category_id": 0}]),
            r"lacks \['segmentation'\]")
    refused(_write_json(tmp_path / "class.json", [{**first, "category_id": 21}]), r"class id 21 .*\[0, 21\)")
    refused(_write_json(tmp_path / "rle.json", [{**first, "segmentation": [[0, 0, 4, 0, 4, 4]]}]), "not an RLE")
    refused(_write_json(tmp_path / "other.json", [{**first, "file_name": "/elsewhere/x.jpg"}]),
            f"'/elsewhere/x.jpg': predictions of another dataset or root \\(its images are like '.*\\.jpg'\\)")
    small = np.zeros((48, 64), np.uint8, order="F")
    rle = mask_util.encode(small[:, :, None])[0]
    rle["counts"] = rle["counts"].decode()
    refused(_write_json(tmp_path / "size.json", [{**first, "segmentation": rle}]),
            f"image '{first['file_name']}' has a mask of 48 x 64 but is 96 x 128")
    torch.save([{"image_id": "x", "instances": []}], tmp_path / "instances_predictions.pth")
    refused(str(tmp_path / "instances_predictions.pth"), "malformed predictions file")
    # SemSegEvaluator's file on a detection dataset (named by the file, not by the dataset's evaluator_type).
    refused(str(ft), "voc_2012_seg_val has no stuff_classes", dataset=VAL)


def test_sem_seg_ground_truth_of_another_size_is_named(sem_seg_runs, tmp_path):
    record = DatasetCatalog.get(SEM_VAL)[0]
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((48, 64), np.uint8), mode="L").save(small)
    with pytest.raises(ValueError, match=f"{small}: size \\(48, 64\\) differs from its image {record['file_name']}'s"):
        draw_sem_seg_ground_truth(_raw(record), {**record, "sem_seg_file_name": str(small)},
                                  MetadataCatalog.get(SEM_VAL))

"""Bad inputs and faults on the detection side (issue 10, items 1-4, 9 and 10): safe weights and
checkpoints, divergence, statistics identity, one run per directory, named files, VOC boxes and
MODEL.ADARAND values."""
import logging
import math
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from tiny import BASE_CONFIG, REPO, tiny_cfg, tiny_opts

from adarand.detection import (
    SafeDetectionCheckpointer, box_regularizations, compute_box_head_stats, prior_init, setup_cfg,
)
from adarand.detection.voc import load_voc_detection
from adarand.files import UnsafeFileError
from adarand.runs.output_dir import OutputDirInUse

from faults import Payload, hold_lock, write_payload_checkpoint  # noqa: E402


def _cli(args, fake_voc):
    env = dict(os.environ, DETECTRON2_DATASETS=fake_voc[0], OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", BASE_CONFIG,
                           *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg)


# ------------------------------------------------------------------ 1. nothing loaded executes

def test_payload_weights_are_refused_pth_and_pkl(fake_voc, tmp_path):
    marker = tmp_path / "marker"
    write_payload_checkpoint(tmp_path / "w.pth", marker)
    with open(tmp_path / "w.pkl", "wb") as f:
        pickle.dump({"model": {"x": Payload(marker)}, "__author__": "x"}, f)
    model = _model(tiny_cfg(tmp_path))
    for name in ("w.pth", "w.pkl"):
        with pytest.raises(UnsafeFileError, match=name):
            SafeDetectionCheckpointer(model).load(str(tmp_path / name))
    assert not marker.exists()


@pytest.mark.slow
def test_payload_weights_are_refused_by_eval_only(fake_voc, tmp_path):
    marker = tmp_path / "marker"
    write_payload_checkpoint(tmp_path / "file.pth", marker)
    code, log = _cli(["--eval-only", *tiny_opts(tmp_path / "eval"), "MODEL.WEIGHTS", str(tmp_path / "file.pth")],
                     fake_voc)
    assert code != 0 and "refusing to load" in log and "file.pth" in log, log[-3000:]
    assert not marker.exists()


def test_payload_last_checkpoint_is_refused_on_resume(fake_voc, tmp_path):
    from adarand.detection import AdaRandDetectionTrainer

    marker = tmp_path / "marker"
    write_payload_checkpoint(tmp_path / "model_0000001.pth", marker)
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    cfg = tiny_cfg(tmp_path)
    cfg.freeze()
    with pytest.raises(UnsafeFileError, match="model_0000001.pth"):
        AdaRandDetectionTrainer(cfg).resume_or_load(resume=True)
    assert not marker.exists()


def test_non_finite_prior_in_the_checkpoint_is_refused_on_resume(fake_voc, tmp_path):
    """Issue 28, item 12: a checkpoint whose prior holds NaN is refused by --resume, naming the file."""
    from adarand.detection import AdaRandDetectionTrainer
    from adarand.prior import NonFinitePriorError

    cfg = tiny_cfg(tmp_path)
    state = _model(cfg).state_dict()
    mu = next(k for k in state if k.startswith("roi_heads.adarand.") and k.endswith(".regularizer.prior.mu"))
    state[mu][3, 1] = math.nan
    torch.save({"model": state, "iteration": 1}, tmp_path / "model_0000001.pth")
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    cfg.freeze()
    with pytest.raises(NonFinitePriorError, match=f"model_0000001.pth: the prior state {mu} holds 1 NaN/Inf"):
        AdaRandDetectionTrainer(cfg).resume_or_load(resume=True)


# ------------------------------------------------------------------ 2. divergence

@pytest.mark.slow
def test_divergence_exits_non_zero_without_non_finite_checkpoints(fake_voc, tmp_path):
    code, log = _cli(tiny_opts(tmp_path, max_iter=6, **{"SOLVER.BASE_LR": 1e6, "SOLVER.CHECKPOINT_PERIOD": 1}),
                     fake_voc)
    assert code != 0 and "FloatingPointError" in log, log[-3000:]
    assert not (tmp_path / "model_final.pth").exists()
    for name in os.listdir(tmp_path):
        if name.endswith(".pth"):
            state = torch.load(tmp_path / name, weights_only=True)["model"]
            assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), name


def test_non_finite_model_is_never_saved(fake_voc, tmp_path):
    model = _model(tiny_cfg(tmp_path))
    with torch.no_grad():
        next(model.parameters())[0] = math.nan
    with pytest.raises(FloatingPointError, match="before saving checkpoint model_0000003"):
        SafeDetectionCheckpointer(model, str(tmp_path)).save("model_0000003")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ 3. statistics identity

@pytest.fixture(scope="module")
def seed0_stats(fake_voc, tmp_path_factory):
    """OUTPUT_DIR/adarand_stats.pt of the tiny model built with seed 0."""
    out = tmp_path_factory.mktemp("stats0")
    cfg = tiny_cfg(out)
    prior_init.init_prior(cfg, _model(cfg, seed=0))
    return out / "adarand_stats.pt"


def test_explicit_statistics_of_other_weights_are_refused(seed0_stats, tmp_path):
    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.STATS_FILE": str(seed0_stats)})
    prior_init.init_prior(cfg, _model(cfg, seed=0))  # same weights: accepted
    with pytest.raises(ValueError, match="adarand_stats.pt was produced by another set-up .*weights_sha256"):
        prior_init.init_prior(cfg, _model(cfg, seed=1))
    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.STATS_FILE": str(seed0_stats), "MODEL.ADARAND.STATS_MAX_IMAGES": 5})
    with pytest.raises(ValueError, match="max_images"):
        prior_init.init_prior(cfg, _model(cfg, seed=0))


def test_statistics_with_missing_classes_are_refused_unless_allowed(seed0_stats, tmp_path):
    """Issue 28, item 11: a file with classes of no sample (made with ALLOW_MISSING_CLASSES True) is refused by a
    run that forbids missing classes, as computed statistics are; its identity does not record the key."""
    data = torch.load(seed0_stats, weights_only=True)
    for name in ("mean", "std"):
        data[name][[2, 7]] = 0.0
    data["count"][[2, 7]] = 0
    torch.save(data, tmp_path / "partial.pt")
    for explicit in (True, False):  # the user's STATS_FILE, and the run's own cache
        out = tmp_path / f"explicit_{explicit}"
        out.mkdir()
        path = tmp_path / "partial.pt" if explicit else out / "adarand_stats.pt"
        if not explicit:
            shutil.copy(tmp_path / "partial.pt", path)
        stats_file = {"MODEL.ADARAND.STATS_FILE": str(path)} if explicit else {}
        cfg = tiny_cfg(out, **stats_file)
        with pytest.raises(ValueError, match=r"partial.pt|adarand_stats.pt") as err:
            prior_init.init_prior(cfg, _model(cfg, seed=0))
        assert "no sample of class(es) [2, 7]" in str(err.value) and "ALLOW_MISSING_CLASSES" in str(err.value)
        cfg = tiny_cfg(out, **stats_file, **{"MODEL.ADARAND.ALLOW_MISSING_CLASSES": True})
        (stats,) = prior_init.init_prior(cfg, _model(cfg, seed=0))
        assert stats.count[2] == 0


def test_statistics_computed_ahead_are_accepted_by_the_trainer(fake_voc, tmp_path):
    """compute_prior.py's workflow: statistics of MODEL.WEIGHTS, then training with STATS_FILE."""
    from adarand.detection import AdaRandDetectionTrainer

    cfg = tiny_cfg(tmp_path)
    SafeDetectionCheckpointer(_model(cfg, seed=5), str(tmp_path)).save("pretrained")
    weights = str(tmp_path / "pretrained.pth")
    cfg = tiny_cfg(tmp_path / "prior", **{"MODEL.WEIGHTS": weights})
    model = _model(cfg, seed=0)
    SafeDetectionCheckpointer(model).load(weights)
    (stats,) = compute_box_head_stats(cfg, model)
    stats.save(tmp_path / "stats.pt")
    cfg = tiny_cfg(tmp_path / "train", **{"MODEL.WEIGHTS": weights, "MODEL.ADARAND.STATS_FILE": str(tmp_path / "stats.pt")})
    cfg.freeze()
    trainer = AdaRandDetectionTrainer(cfg)
    trainer.resume_or_load(resume=False)
    expected = torch.load(tmp_path / "stats.pt", weights_only=True)["mean"]
    torch.testing.assert_close(box_regularizations(trainer.model)[0].regularizer.prior.mu, expected)


@pytest.mark.parametrize("change", [{"SEED": 1}, {"MODEL.ADARAND.STATS_MAX_IMAGES": 20},
                                    {"MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.05]},  # issue 20, item 4: ROI sampler
                                    {"MODEL.ROI_HEADS.POSITIVE_FRACTION": 0.5},
                                    {"MODEL.RPN.POST_NMS_TOPK_TRAIN": 32},
                                    {"DATASETS.TRAIN": ("voc_2012_seg_train",),
                                     "MODEL.ADARAND.ALLOW_MISSING_CLASSES": True}])
def test_cached_statistics_of_another_setup_are_recomputed(seed0_stats, tmp_path, caplog, change):
    shutil.copy(seed0_stats, tmp_path / "adarand_stats.pt")
    cfg = tiny_cfg(tmp_path, **change)
    with caplog.at_level(logging.INFO, logger="adarand.runs.stats_cache"):
        (stats,) = prior_init.init_prior(cfg, _model(cfg, seed=cfg.SEED))
    assert "produced by another set-up" in caplog.text and "recomputing" in caplog.text
    old = torch.load(seed0_stats, weights_only=True)
    assert stats.meta["identity"] != old["meta"]["identity"]
    assert torch.load(tmp_path / "adarand_stats.pt", weights_only=True)["meta"]["identity"] == stats.meta["identity"]


# ------------------------------------------------------------------ 4. one output directory, one run

@pytest.mark.slow
def test_new_run_refuses_a_directory_holding_another_run(fake_voc, tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_final.pth")
    code, log = _cli(tiny_opts(tmp_path, max_iter=1), fake_voc)
    assert code != 0 and "already holds a run (last_checkpoint): pass --resume" in log, log[-3000:]
    assert not (tmp_path / "config.yaml").exists()


@pytest.mark.slow
def test_locked_directory_keeps_a_second_run_out(fake_voc, tmp_path):
    holder = hold_lock(tmp_path)
    try:
        args = default_argument_parser().parse_args(["--config-file", BASE_CONFIG, *tiny_opts(tmp_path)])
        with pytest.raises(OutputDirInUse, match="in use by another process"):
            setup_cfg(args, claim_output=True)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


# ------------------------------------------------------------------ 9. errors name files

def test_truncated_checkpoint_and_statistics_are_named(seed0_stats, fake_voc, tmp_path):
    cfg = tiny_cfg(tmp_path)
    model = _model(cfg)
    SafeDetectionCheckpointer(model, str(tmp_path)).save("model_final")
    for name in ("model_final.pth", "adarand_stats.pt"):
        source = tmp_path / name if name.endswith(".pth") else seed0_stats
        data = source.read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut_model_final.pth: truncated or corrupt"):
        SafeDetectionCheckpointer(model).load(str(tmp_path / "cut_model_final.pth"))
    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.STATS_FILE": str(tmp_path / "cut_adarand_stats.pt")})
    with pytest.raises(ValueError, match="cut_adarand_stats.pt: truncated or corrupt"):
        prior_init.init_prior(cfg, model)


def test_truncated_voc_image_is_named(fake_voc, tmp_path):
    root = tmp_path / "VOC2007"
    shutil.copytree(os.path.join(fake_voc[0], "VOC2007"), root)
    image_id = open(root / "ImageSets" / "Main" / "trainval.txt").readline().strip()
    jpg = root / "JPEGImages" / f"{image_id}.jpg"
    jpg.write_bytes(jpg.read_bytes()[:200])
    DatasetCatalog.register("voc_truncated_trainval", lambda: load_voc_detection(str(root), "trainval"))
    MetadataCatalog.get("voc_truncated_trainval").set(thing_classes=MetadataCatalog.get("voc_2007_det_trainval")
                                                      .thing_classes)
    try:
        cfg = tiny_cfg(tmp_path, **{"DATASETS.TRAIN": ("voc_truncated_trainval",), "MODEL.MASK_ON": False,
                                    "MODEL.ADARAND.ALLOW_MISSING_CLASSES": True})
        with pytest.raises(OSError, match=f"cannot read .*{image_id}.jpg"):
            compute_box_head_stats(cfg, _model(cfg))
    finally:
        DatasetCatalog.remove("voc_truncated_trainval")
        MetadataCatalog.remove("voc_truncated_trainval")


# ------------------------------------------------------------------ 10. detection inputs

@pytest.mark.parametrize("key,value", [("LAMBDA", "-1.0"), ("LAMBDA", ".nan"), ("LAMBDA", "1e400"),
                                       ("PRIOR_LR", "0.0"), ("ALPHA", "1.5"),
                                       ("PRIOR_UPDATE_PERIOD", "-1"), ("STATS_MAX_IMAGES", "-5"),  # issue 28, 10
                                       ("SCALE_LOG_PERIOD", "-2"), ("PTR_EPOCH_ITERS", "-1")])
def test_bad_adarand_values_are_refused_at_config_time(fake_voc, tmp_path, key, value):
    """Through a YAML file (the only way to write NaN) that names the base config."""
    config = tmp_path / "bad.yaml"
    config.write_text(f'_BASE_: "{BASE_CONFIG}"\nMODEL:\n  ADARAND:\n    {key}: {value}\n')
    args = default_argument_parser().parse_args(["--config-file", str(config), *tiny_opts(tmp_path)])
    with pytest.raises(ValueError, match=f"MODEL.ADARAND.{key} = "):
        setup_cfg(args)
    assert not (tmp_path / "config.yaml").exists()


def _voc_with_box(tmp_path, fake_voc, box):
    """A one-image VOC detection split whose first object's <bndbox> is ``box`` (xmin, ymin, xmax, ymax)."""
    src = os.path.join(fake_voc[0], "VOC2007")
    image_id = open(os.path.join(src, "ImageSets", "Main", "trainval.txt")).readline().strip()
    os.makedirs(tmp_path / "Annotations")
    os.makedirs(tmp_path / "ImageSets" / "Main")
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text(image_id + "\n")
    xml = open(os.path.join(src, "Annotations", image_id + ".xml")).read()
    start, end = xml.index("<bndbox>"), xml.index("</bndbox>") + len("</bndbox>")
    values = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    (tmp_path / "Annotations" / f"{image_id}.xml").write_text(xml[:start] + f"<bndbox>{values}</bndbox>" + xml[end:])
    return image_id


BAD_BOXES = {  # the fake images are 128 x 96 (width x height)
    "inverted": ((50, 10, 20, 40), "is inverted"),
    "zero width": ((30, 10, 29, 40), "has zero area"),
    "outside": ((200, 10, 220, 40), "lies outside the 128 x 96 image"),
    "nan": ((10, 10, "nan", 40), "has <xmax>nan</xmax>: box coordinates must be finite"),  # issue 20, item 5
    "inf": (("-inf", 10, 20, 40), "has <xmin>-inf</xmin>: box coordinates must be finite"),
    "not a number": ((10, "ten", 20, 40), "has <ymin>ten</ymin>: box coordinates must be finite"),
}


@pytest.mark.parametrize("case", sorted(BAD_BOXES))
def test_bad_voc_boxes_name_file_and_object(fake_voc, tmp_path, case):
    box, message = BAD_BOXES[case]
    image_id = _voc_with_box(tmp_path, fake_voc, box)
    with pytest.raises(ValueError, match=f"{image_id}.xml: object 1 .* {message}"):
        load_voc_detection(str(tmp_path), "train")


def test_box_past_the_border_is_clipped_and_counted(fake_voc, tmp_path, caplog):
    _voc_with_box(tmp_path, fake_voc, (100, 0, 140, 40))
    with caplog.at_level(logging.WARNING, logger="adarand.detection.voc"):
        dicts = load_voc_detection(str(tmp_path), "train")
    assert dicts[0]["annotations"][0]["bbox"] == [99.0, 0.0, 128.0, 40.0]
    assert "1 box(es) extended past their image and were clipped" in caplog.text


# ------------------------------------------------------------------ issue 28, item 16: --eval-only weights named

def _tool(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_only_weights_of_another_class_count_name_the_file_and_the_shapes(fake_voc, tmp_path):
    """Detectron2 skipped the differently shaped head with a warning and evaluated it untrained."""
    from adarand.runs.resume import DET_SAFE_RESUME_KEYS, add_resume_arguments

    SafeDetectionCheckpointer(_model(tiny_cfg(tmp_path, **{"MODEL.ROI_HEADS.NUM_CLASSES": 5})),
                              str(tmp_path)).save("five")
    args = add_resume_arguments(default_argument_parser(), DET_SAFE_RESUME_KEYS, "iteration").parse_args(
        ["--config-file", BASE_CONFIG, "--eval-only",
         *[str(x) for x in tiny_opts(tmp_path / "eval", **{"MODEL.WEIGHTS": str(tmp_path / "five.pth")})]])
    with pytest.raises(ValueError, match=r"five.pth does not fit the model: roi_heads.box_predictor.cls_score.weight "
                                         r"\(6, 64\) in the file vs \(21, 64\) in the model; .*another class count"):
        _tool("train_net").main(args)


def test_compute_prior_refuses_to_overwrite_an_existing_statistics_file(fake_voc, tmp_path):
    (tmp_path / "stats.pt").write_bytes(b"earlier statistics")
    tool = _tool("compute_prior")
    args = tool.argument_parser().parse_args(["--config-file", BASE_CONFIG, "--output", str(tmp_path / "stats.pt"),
                                              *[str(x) for x in tiny_opts(tmp_path / "out")]])
    with pytest.raises(FileExistsError, match=r"refusing to overwrite the statistics file\(s\) .*stats.pt: pass "
                                              "--overwrite"):
        tool.main(args)
    assert (tmp_path / "stats.pt").read_bytes() == b"earlier statistics"

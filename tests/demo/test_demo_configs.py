"""A very short run of every demo config, through the same entry points `make demo` uses."""
import json
import os
import subprocess
import sys

import pytest
import torch

from adarand import ClassStats
from adarand.classification.config import load_cfg
from adarand.classification.cli import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLS_METHODS = ["ft", "fnp", "randreg-normal", "randreg-cp", "adarand"]


@pytest.mark.parametrize("method", CLS_METHODS)
def test_classification_demo_config_runs(method, tmp_path):
    config = os.path.join(REPO, "configs", "classification", f"digits_mobilenetv2_{method}.yaml")
    cfg = load_cfg(config, ["SOLVER.EPOCHS", "1", "DATASET.FRACTION", "0.05", "INPUT.SIZE", "32",
                            "DIAGNOSTICS", str(method == "adarand"), "OUTPUT_DIR", str(tmp_path)])
    results = train(cfg, progress=False)
    assert results["method"] == method and 0.0 <= results["test_top1"] <= 1.0
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["test_top1"] == results["test_top1"]
    needs_stats = method in ("randreg-cp", "adarand")
    assert (tmp_path / "class_stats.pt").is_file() == needs_stats
    if method == "adarand":  # the prior started at the class means of the real ImageNet features and moved
        stats = ClassStats.load(tmp_path / "class_stats.pt", num_classes=10, feat_dim=1280)
        assert stats.mean.abs().sum() > 0
        mu = torch.load(tmp_path / "last.pth", map_location="cpu", weights_only=False)["regularizer"]["prior.mu"]
        assert not torch.equal(mu, stats.mean)


@pytest.fixture(scope="module")
def demo_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    weights, voc = root / "mobilenet_v2_d2.pth", root / "demo_voc"
    for cmd in (["convert_mobilenet_weights.py", "--out", str(weights)],
                ["make_demo_voc.py", "--root", str(voc), "--num-train", "4", "--num-val", "2"]):
        subprocess.run([sys.executable, os.path.join(REPO, "tools", cmd[0]), *cmd[1:]], check=True, cwd=REPO)
    return weights, voc


@pytest.mark.parametrize("method", ["ft", "adarand"])
@pytest.mark.slow
def test_detection_demo_config_runs(method, demo_assets, tmp_path):
    weights, voc = demo_assets
    config = os.path.join(REPO, "configs", "detection", "demo", f"mask_rcnn_mobilenetv2_fpn_demo_{method}.yaml")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", config,
         "MODEL.WEIGHTS", str(weights), "SOLVER.MAX_ITER", "1", "SOLVER.WARMUP_ITERS", "1",
         "MODEL.ADARAND.STATS_MAX_IMAGES", "2", "OUTPUT_DIR", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=600, env=dict(os.environ, DETECTRON2_DATASETS=str(voc)))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert (tmp_path / "model_final.pth").is_file()
    assert "Evaluation results for bbox" in log and "Evaluation results for segm" in log
    assert "loss_adarand" in log
    assert (tmp_path / "adarand_stats.pt").is_file() == (method == "adarand")


@pytest.mark.parametrize("method", ["ft", "adarand"])
def test_segmentation_demo_configs_load_and_build(method):
    from detectron2.modeling import build_model

    from adarand.detection import load_detection_cfg, regularizations

    config = os.path.join(REPO, "configs", "segmentation", "demo", f"semantic_mobilenetv2_fpn_demo_{method}.yaml")
    cfg = load_detection_cfg(config)
    assert cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor" and cfg.MODEL.DEVICE == "cpu"
    assert cfg.MODEL.BACKBONE.NAME == "build_mobilenetv2_fpn_backbone"
    assert cfg.MODEL.SEM_SEG_HEAD.NAME == "AdaRandSemSegFPNHead" and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 21
    assert cfg.DATASETS.TRAIN == ("voc_2012_sem_seg_train",) and cfg.DATASETS.TEST == ("voc_2012_sem_seg_val",)
    assert cfg.MODEL.ADARAND.METHOD == ("none" if method == "ft" else "adarand")
    model = build_model(cfg)
    assert [b.name for b in regularizations(model)] == ["sem_seg"]  # the head carries its branch in both

"""End to end on the fake VOC tree: train, prior moves, checkpoints, resume, eval, CLI, stats."""
import os
import subprocess
import sys
from unittest import mock

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from fake_voc import TRAIN_LAYOUTS
from tiny import BASE_CONFIG, REPO, tiny_cfg, tiny_opts

import adarand
from adarand.detection import AdaRandDetectionTrainer, box_regularizations, compute_box_head_stats, prior_init
from adarand.detection.voc import VOC_CLASSES

pytestmark = pytest.mark.slow

PREFIX = "roi_heads.adarand.0.regularizer."
PRIOR_KEYS = ("prior.mu", "prior.running_mean", "prior.sigma", "prior.optimizer.exp_avg",
              "prior.optimizer.exp_avg_sq", "prior.optimizer.num_steps")


def _train(cfg, resume=False):
    cfg.freeze()
    trainer = AdaRandDetectionTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    start_mu = _reg(trainer.model).prior.mu.detach().clone()
    trainer.train()
    return trainer, start_mu


def _reg(model):
    return box_regularizations(model)[-1].regularizer


def _prior_state(state_dict):
    return {k: state_dict[PREFIX + k] for k in PRIOR_KEYS}


@pytest.fixture(scope="module")
def run(fake_voc, tmp_path_factory):
    """4 iterations of AdaRand on the single-category split, checkpoints every 2."""
    out = tmp_path_factory.mktemp("run")
    trainer, start_mu = _train(tiny_cfg(out, max_iter=4, **{"MODEL.ADARAND.SCALE_LOG_PERIOD": 2}))
    return out, trainer, start_mu


def test_training_adds_finite_loss_and_moves_the_prior(run):
    out, trainer, start_mu = run
    history = trainer.storage.history("loss_adarand").values()
    assert len(history) == 4 and all(torch.isfinite(torch.tensor(v)) for v, _ in history)
    assert all(v > 0 for v, _ in history)
    # The scale, logged every SCALE_LOG_PERIOD = 2 iterations (iterations 1 and 3).
    storage = trainer.storage
    for key in ("adarand/prior_loss", "adarand/loss_ratio", "adarand/feature_norm", "adarand/prior_norm",
                "adarand/num_rois"):
        assert [it for _, it in storage.history(key).values()] == [1, 3], key
    def at(key, it):
        return {i: v for v, i in storage.history(key).values()}[it]

    for ratio, it in storage.history("adarand/loss_ratio").values():
        others = sum(at(k, it) for k in storage.histories() if k.startswith("loss_") and k != "loss_adarand")
        assert ratio == pytest.approx(at("loss_adarand", it) / others)
    assert all(v > 0 for v, _ in storage.history("adarand/prior_norm").values())
    reg = _reg(trainer.model)
    assert not torch.equal(reg.prior.mu, start_mu)
    assert int(reg.prior.optimizer.num_steps) == 4
    stats = adarand.ClassStats.load(os.path.join(out, "adarand_stats.pt"), num_classes=20, feat_dim=64)
    torch.testing.assert_close(start_mu, stats.mean)  # the prior started from the cached statistics


def test_checkpoints_hold_the_prior(run):
    out, trainer, _ = run
    saved = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    live = trainer.model.state_dict()
    for key, value in _prior_state(saved).items():
        torch.testing.assert_close(value, live[PREFIX + key], msg=key)
    assert int(saved[PREFIX + "prior.optimizer.num_steps"]) == 4
    # Round trip into a fresh model through DetectionCheckpointer.
    cfg = tiny_cfg(out)
    fresh = build_model(cfg)
    DetectionCheckpointer(fresh).load(os.path.join(out, "model_final.pth"))
    for key, value in _prior_state(fresh.state_dict()).items():
        torch.testing.assert_close(value, live[PREFIX + key], msg=key)
    mid = torch.load(os.path.join(out, "model_0000001.pth"), map_location="cpu", weights_only=False)
    assert mid["iteration"] == 1 and int(mid["model"][PREFIX + "prior.optimizer.num_steps"]) == 2


def test_resume_continues_the_run(run):
    out, trainer, _ = run
    final = _prior_state(trainer.model.state_dict())
    with mock.patch.object(prior_init, "compute_box_head_stats", side_effect=AssertionError("recomputed")):
        resumed, start_mu = _train(tiny_cfg(out, max_iter=6), resume=True)
    assert resumed.start_iter == 4 and resumed.iter == 6  # iterations 4 and 5 ran
    torch.testing.assert_close(start_mu, final["prior.mu"])  # restored, not re-initialised
    assert int(_reg(resumed.model).prior.optimizer.num_steps) == 6


def test_multi_category_images_train_with_background(fake_voc, tmp_path):
    cfg = tiny_cfg(tmp_path, max_iter=2, **{"DATASETS.TRAIN": ("voc_2012_seg_train",),
                                           "MODEL.ADARAND.REGULARIZE_BACKGROUND": True})
    trainer, start_mu = _train(cfg)
    assert start_mu.shape == (21, 64)
    assert all(torch.isfinite(torch.tensor(v)) for v, _ in trainer.storage.history("loss_adarand").values())
    assert not torch.equal(_reg(trainer.model).prior.mu, start_mu)


def test_stats_count_every_gt_box_and_name_missing_classes(fake_voc, tmp_path):
    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.STATS_ROIS": "gt"})
    model = build_model(cfg)
    (stats,) = compute_box_head_stats(cfg, model)
    expected = torch.zeros(20, dtype=torch.long)
    for names in TRAIN_LAYOUTS:
        if len(set(names)) == 1:
            for name in names:
                expected[VOC_CLASSES.index(name)] += 1
    assert torch.equal(stats.count, expected)
    assert model.training  # mode restored
    cfg.merge_from_list(["MODEL.ADARAND.STATS_MAX_IMAGES", "3"])
    with pytest.raises(ValueError, match="'boat'"):
        compute_box_head_stats(cfg, model)


def test_missing_weights_and_stats_files_are_clear_errors(fake_voc, tmp_path):
    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.STATS_FILE": str(tmp_path / "none.pt")})
    model = build_model(cfg)
    with pytest.raises(FileNotFoundError, match="none.pt"):
        prior_init.init_prior(cfg, model)
    from adarand.detection.trainer import check_weights
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS not found"):
        check_weights(str(tmp_path / "w.pkl"))
    with pytest.raises(RuntimeError, match="could not fetch MODEL.WEIGHTS"):
        check_weights("http://127.0.0.1:9/model.pkl")


def _cli(args, fake_voc):
    env = dict(os.environ, DETECTRON2_DATASETS=fake_voc[0])
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", BASE_CONFIG,
                           *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_cli_eval_only_prints_bbox_and_mask_ap(run, fake_voc):
    out, _, _ = run
    proc = _cli(["--eval-only", *tiny_opts(out / "eval"), "MODEL.WEIGHTS", str(out / "model_final.pth"),
                 "DATASETS.TEST", "('voc_2012_seg_val',)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"], fake_voc)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    (out / "cli_eval.log").write_text(log)  # kept for debugging
    assert "Evaluation results for bbox" in log and "Evaluation results for segm" in log


def test_cli_trains_with_overrides(fake_voc, tmp_path):
    proc = _cli([*tiny_opts(tmp_path, max_iter=1), "MODEL.ADARAND.METHOD", "fnp",
                 "DATASETS.TRAIN", "('voc_2007_det_trainval',)", "MODEL.MASK_ON", "False"], fake_voc)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "loss_adarand" in log and os.path.isfile(tmp_path / "model_final.pth")
    assert not os.path.exists(tmp_path / "adarand_stats.pt")  # fnp needs no statistics


def test_cli_compute_prior_writes_the_statistics(run, fake_voc, tmp_path):
    out, _, _ = run
    env = dict(os.environ, DETECTRON2_DATASETS=fake_voc[0])
    (tmp_path / "stats.pt").write_bytes(b"earlier statistics")  # replaced: --overwrite
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "compute_prior.py"), "--config-file",
                           BASE_CONFIG, "--output", str(tmp_path / "stats.pt"), "--overwrite", *tiny_opts(tmp_path),
                           "MODEL.WEIGHTS", str(out / "model_final.pth"), "MODEL.ADARAND.STATS_ROIS", "gt"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    stats = adarand.ClassStats.load(str(tmp_path / "stats.pt"), num_classes=20, feat_dim=64)
    assert stats.meta["stats_rois"] == "gt"
    expected = torch.zeros(20, dtype=torch.long)
    for names in TRAIN_LAYOUTS:
        if len(set(names)) == 1:
            for name in names:
                expected[VOC_CLASSES.index(name)] += 1
    assert torch.equal(stats.count, expected)  # every ground-truth box of the training split, once


CASCADE_CONFIG = os.path.join(REPO, "configs", "detection", "cascade_mask_rcnn_R_50_FPN_voc2012_single_adarand.yaml")


@pytest.mark.parametrize("stages", ["all", "last"])
def test_cascade_trains_steps_every_prior_checkpoints_and_evaluates(fake_voc, tmp_path, stages):
    """Tiny Cascade Mask R-CNN: priors initialised per stage, stepped, saved; --eval-only gives bbox + mask AP."""
    cfg = tiny_cfg(tmp_path, config_file=CASCADE_CONFIG, max_iter=3, **{"MODEL.ADARAND.CASCADE_STAGES": stages})
    trainer, _ = _train(cfg)
    branches = box_regularizations(trainer.model)
    assert [b.stage for b in branches] == ([0, 1, 2] if stages == "all" else [2])
    saved = torch.load(os.path.join(tmp_path, "model_final.pth"), map_location="cpu", weights_only=True)["model"]
    for b in branches:
        key = f"roi_heads.adarand.{b.stage}.regularizer."
        assert int(b.regularizer.prior.optimizer.num_steps) == 3
        torch.testing.assert_close(saved[key + "prior.mu"], b.regularizer.prior.mu)
        stats_file = os.path.join(tmp_path, f"adarand_stats_stage{b.stage}.pt")
        assert adarand.ClassStats.load(stats_file, num_classes=20, feat_dim=64).count.sum() > 0
        assert len(trainer.storage.history(f"loss_adarand_stage{b.stage}").values()) == 3
    if stages == "last":
        return
    proc = _cli(["--eval-only", *tiny_opts(tmp_path / "eval"), "MODEL.WEIGHTS", str(tmp_path / "model_final.pth"),
                 "DATASETS.TEST", "('voc_2012_seg_val',)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                 "MODEL.ROI_HEADS.NAME", "AdaRandCascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True",
                 "MODEL.ADARAND.CASCADE_STAGES", "all"], fake_voc)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Evaluation results for bbox" in log and "Evaluation results for segm" in log


def test_proposal_statistics_are_those_of_the_sampled_foreground_rois(fake_voc, tmp_path):
    """STATS_ROIS proposals: per-class mean/std of the ROIs training would regularize (same sampler draws)."""
    from detectron2.layers import cat
    from detectron2.utils.events import EventStorage

    cfg = tiny_cfg(tmp_path, **{"MODEL.ADARAND.STATS_ROIS": "proposals", "MODEL.ADARAND.STATS_MAX_IMAGES": 4,
                                "MODEL.ADARAND.ALLOW_MISSING_CLASSES": True})
    model = build_model(cfg)
    torch.manual_seed(0)
    (stats,) = compute_box_head_stats(cfg, model)
    assert stats.meta["stats_rois"] == "proposals"

    torch.manual_seed(0)
    sums, sq_sums, counts = torch.zeros(20, 64, dtype=torch.float64), torch.zeros(20, 64, dtype=torch.float64), torch.zeros(20)
    heads, gt_boxes = model.roi_heads, 0
    model.eval()
    with torch.no_grad(), EventStorage():
        for batch in prior_init.build_stats_loader(cfg):
            images = model.preprocess_image(batch)
            features = model.backbone(images.tensor)
            targets = [x["instances"] for x in batch]
            gt_boxes += sum(len(t) for t in targets)
            model.proposal_generator.train()
            proposals, _ = model.proposal_generator(images, features, targets)
            model.proposal_generator.eval()
            sampled = heads.label_and_sample_proposals(proposals, targets)
            f = heads.box_head(heads.box_pooler([features[k] for k in heads.box_in_features],
                                                [p.proposal_boxes for p in sampled])).flatten(1).double()
            y = cat([p.gt_classes for p in sampled])
            for c in y[y < 20].unique().tolist():
                sums[c] += f[y == c].sum(0)
                sq_sums[c] += f[y == c].pow(2).sum(0)
                counts[c] += (y == c).sum()
    assert torch.equal(stats.count.float(), counts)
    assert counts.sum() >= gt_boxes  # the GT boxes are among the proposals, plus the overlapping ones
    seen = counts > 0
    mean = sums[seen] / counts[seen, None]
    torch.testing.assert_close(stats.mean[seen].double(), mean, rtol=1e-4, atol=1e-5)
    std = (sq_sums[seen] / counts[seen, None] - mean.pow(2)).clamp(min=0).sqrt()
    torch.testing.assert_close(stats.std[seen].double(), std, rtol=1e-3, atol=1e-4)


def test_image_labels_train_end_to_end(fake_voc, tmp_path):
    """LABELS image: statistics from every sampled ROI under its image's category, then training."""
    cfg = tiny_cfg(tmp_path, max_iter=2, **{"MODEL.ADARAND.LABELS": "image", "MODEL.ADARAND.ALLOW_MISSING_CLASSES": True})
    trainer, start_mu = _train(cfg)
    stats = adarand.ClassStats.load(os.path.join(tmp_path, "adarand_stats.pt"))
    assert stats.meta["labels"] == "image"
    # Every sampled ROI counts (foreground and background): far more rows than ground-truth boxes.
    assert int(stats.count.sum()) > 2 * sum(len(names) for names in TRAIN_LAYOUTS)
    assert all(torch.isfinite(torch.tensor(v)) for v, _ in trainer.storage.history("loss_adarand").values())
    assert not torch.equal(_reg(trainer.model).prior.mu, start_mu)


def test_trainer_without_prior_initialisation_refuses_before_the_first_step(fake_voc, tmp_path):
    cfg = tiny_cfg(tmp_path, max_iter=2)
    cfg.freeze()
    trainer = AdaRandDetectionTrainer(cfg)  # resume_or_load (which initialises the prior) never called
    with pytest.raises(RuntimeError, match="not initialised.*compute_prior.py.*init_prior"):
        trainer.train()
    assert trainer.iter == 0 and not os.path.exists(tmp_path / "model_final.pth")


def test_resume_from_a_checkpoint_without_prior_does_not_advise_stats_file(fake_voc, tmp_path):
    """Issue 20, item 10: on --resume the statistics are not read, so the error must not point at STATS_FILE."""
    cfg = tiny_cfg(tmp_path, max_iter=2)
    cfg.freeze()
    model = AdaRandDetectionTrainer.build_model(cfg)
    state = {k: v for k, v in model.state_dict().items() if ".adarand." not in k}  # e.g. a FT run's checkpoint
    torch.save({"model": state, "iteration": 0}, tmp_path / "model_0000000.pth")
    (tmp_path / "last_checkpoint").write_text("model_0000000.pth")
    with pytest.raises(RuntimeError, match=r"not initialised: the checkpoint .*model_0000000.pth that --resume "
                                           r"continues holds no prior.*run without --resume") as err:
        AdaRandDetectionTrainer(cfg).resume_or_load(resume=True)
    assert "pass them as MODEL.ADARAND.STATS_FILE" not in str(err.value)

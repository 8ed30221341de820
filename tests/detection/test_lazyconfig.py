"""LazyConfig support: the shipped Python configs load; a tiny one trains, steps the prior, checkpoints, evaluates."""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.config import LazyConfig
from tiny import LAZY_SEM_SEG_CONFIG, REPO, write_tiny_lazy_config, write_tiny_lazy_sem_seg_config

import adarand
from adarand.detection import AdaRandROIHeads, AdaRandSemSegFPNHead

PREFIX = "roi_heads.adarand.0.regularizer."


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "detection", "*_*.py"))))
def test_shipped_lazy_configs_load(path):
    cfg = LazyConfig.load(path)
    assert {"model", "dataloader", "optimizer", "lr_multiplier", "train"} <= set(cfg)
    assert cfg.model.roi_heads._target_ is AdaRandROIHeads and cfg.model.roi_heads.num_classes == 20
    a = cfg.model.roi_heads.adarand
    assert a.METHOD == ("none" if path.endswith("_ft.py") else "adarand")
    assert cfg.model.roi_heads.prior_total_steps == cfg.train.max_iter  # interpolated
    single = "_single_" in os.path.basename(path)
    assert cfg.dataloader.train.dataset.names.endswith("_single") == single
    assert cfg.dataloader.stats.dataset_names == cfg.dataloader.train.dataset.names
    assert cfg.dataloader.stats.max_images == a.STATS_MAX_IMAGES


def _run(config, fake_voc, *extra):
    env = dict(os.environ, DETECTRON2_DATASETS=fake_voc[0])
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "lazyconfig_train_net.py"), "--config-file",
                           config, *extra], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    return log


@pytest.mark.slow
def test_tiny_lazy_run_trains_steps_the_prior_checkpoints_and_evaluates(fake_voc, tmp_path):
    out = tmp_path / "out"
    config = write_tiny_lazy_config(tmp_path / "tiny.py", out)
    _run(config, fake_voc)
    stats = adarand.ClassStats.load(str(out / "adarand_stats.pt"), num_classes=20, feat_dim=64)
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    assert int(final[PREFIX + "prior.optimizer.num_steps"]) == 4  # stepped after each of the 4 iterations
    assert not torch.equal(final[PREFIX + "prior.mu"], stats.mean)  # moved away from its initial statistics
    mid = torch.load(out / "model_0000001.pth", map_location="cpu", weights_only=True)["model"]
    assert int(mid[PREFIX + "prior.optimizer.num_steps"]) == 2
    with open(out / "metrics.json") as f:
        metrics = [json.loads(line) for line in f]
    assert all(m["loss_adarand"] > 0 for m in metrics if "loss_adarand" in m)
    assert sum("adarand/prior_loss" in m for m in metrics) == 2  # SCALE_LOG_PERIOD 2 of 4 iterations
    assert any("adarand/loss_ratio" in m for m in metrics)

    log = _run(config, fake_voc, "--eval-only", f"train.init_checkpoint={out / 'model_final.pth'}")
    assert "copypaste: Task: bbox" in log and "copypaste: Task: segm" in log


@pytest.mark.slow
def test_lazy_adarand_settings_on_a_plain_head_are_an_error(fake_voc, tmp_path):
    """The AdaRand keys on a head that cannot apply them fail at build time, never train silently."""
    config = write_tiny_lazy_config(tmp_path / "tiny.py", tmp_path / "out")
    env = dict(os.environ, DETECTRON2_DATASETS=fake_voc[0])
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "lazyconfig_train_net.py"), "--config-file",
                           config, "model.roi_heads._target_=detectron2.modeling.roi_heads.StandardROIHeads"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode != 0 and "unexpected keyword argument" in proc.stderr
    assert not os.path.exists(tmp_path / "out" / "model_final.pth")


# ------------------------------------------- issue 20, item 6: one run per directory, as train_net.py

def _refused(config, fake_voc, *extra):
    env = dict(os.environ, DETECTRON2_DATASETS=fake_voc[0], OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "lazyconfig_train_net.py"), "--config-file",
                           config, *extra], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_lazy_run_refuses_a_directory_holding_another_run_or_locked(fake_voc, tmp_path):
    from faults import hold_lock

    out = tmp_path / "out"
    out.mkdir()
    (out / "last_checkpoint").write_text("model_final.pth")
    config = write_tiny_lazy_config(tmp_path / "tiny.py", out)
    code, log = _refused(config, fake_voc)
    assert code != 0 and "already holds a run (last_checkpoint): pass --resume" in log, log[-3000:]
    assert sorted(os.listdir(out)) == [".lock", "last_checkpoint"]  # nothing written

    (out / "last_checkpoint").unlink()
    holder = hold_lock(out)
    try:
        code, log = _refused(config, fake_voc)
    finally:
        holder.stdin.close()
        holder.wait()
    assert code != 0 and "is in use by another process" in log, log[-3000:]
    assert sorted(os.listdir(out)) == [".lock"]


def test_lazy_statistics_identity_includes_the_roi_sampler(tmp_path):
    """Issue 20, item 4, LazyConfig side: the matcher's IoU threshold changes the statistics' identity."""
    from adarand.detection.prior_init import lazy_roi_sampler_identity

    cfg = LazyConfig.load(write_tiny_lazy_config(tmp_path / "tiny.py", tmp_path / "out"))
    before = lazy_roi_sampler_identity(cfg)
    cfg.model.roi_heads.proposal_matcher.thresholds = [0.05]
    assert before["roi_sampler"] and lazy_roi_sampler_identity(cfg) != before
    cfg.model.roi_heads.adarand.STATS_ROIS = "gt"
    assert lazy_roi_sampler_identity(cfg) == {}


@pytest.mark.slow
def test_lazy_resume_with_another_experiment_is_refused_before_writing(fake_voc, tmp_path):
    """Issue 20, item 2, LazyConfig side: a changed LAMBDA on --resume is refused, naming both values."""
    out = tmp_path / "out"
    config = write_tiny_lazy_config(tmp_path / "tiny.py", out)
    out.mkdir()
    LazyConfig.save(LazyConfig.load(config), str(out / "config.yaml"))  # what the interrupted run recorded
    (out / "last_checkpoint").write_text("model_0000001.pth")
    before = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out)}
    code, log = _refused(config, fake_voc, "--resume", "model.roi_heads.adarand.LAMBDA=2.0", "train.max_iter=8")
    assert code != 0 and "model.roi_heads.adarand.LAMBDA: 1.0 -> 2.0" in log and "--allow-config-change" in log, \
        log[-3000:]
    assert "train.max_iter" not in log.split("refusing to resume")[1].split("A resume may change")[0]  # safe
    assert {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n != ".lock"} == before


# ------------------------------------------- issue 29: a semantic-segmentation LazyConfig

SEM_SEG_PRIOR = "sem_seg_head.adarand.regularizer.prior."


def test_shipped_semantic_fpn_lazy_config_loads():
    cfg = LazyConfig.load(LAZY_SEM_SEG_CONFIG)
    assert cfg.model.sem_seg_head._target_ is AdaRandSemSegFPNHead and cfg.model.sem_seg_head.num_classes == 21
    assert cfg.model.sem_seg_head.adarand.METHOD == "adarand"
    assert cfg.model.sem_seg_head.prior_total_steps == cfg.train.max_iter
    assert cfg.dataloader.train.dataset.names == "voc_2012_sem_seg_train"
    assert cfg.dataloader.stats.dataset_names == cfg.dataloader.train.dataset.names


@pytest.mark.slow
def test_tiny_semantic_fpn_lazy_run_trains_steps_the_prior_and_evaluates(fake_voc, tmp_path):
    out = tmp_path / "out"
    config = write_tiny_lazy_sem_seg_config(tmp_path / "tiny_sem_seg.py", out)
    _run(config, fake_voc)
    stats = adarand.ClassStats.load(str(out / "adarand_stats_sem_seg.pt"), num_classes=21, feat_dim=32)
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    assert int(final[SEM_SEG_PRIOR + "optimizer.num_steps"]) == 4  # stepped after each of the 4 iterations
    assert stats.count.sum() > 0 and not torch.equal(final[SEM_SEG_PRIOR + "mu"], stats.mean)
    with open(out / "metrics.json") as f:
        metrics = [json.loads(line) for line in f]
    assert all(m["loss_adarand_sem_seg"] > 0 for m in metrics if "loss_adarand_sem_seg" in m)
    assert sum("adarand/sem_seg/prior_loss" in m for m in metrics) == 2  # SCALE_LOG_PERIOD 2 of 4 iterations

    log = _run(config, fake_voc, "--eval-only", f"train.init_checkpoint={out / 'model_final.pth'}")
    assert "copypaste: Task: sem_seg" in log and "mIoU" in log

"""Semantic segmentation end to end on the fake VOC tree: tools/train_net.py trains FT and AdaRand and writes
mIoU, fwIoU, mACC and pACC to metrics.json; the prior moves and a resume restores it exactly; --eval-only."""
import json
import os
import subprocess
import sys

import pytest
import torch
from tiny import REPO, SEM_SEG_CONFIG, TINY_SEM_SEG, tiny_opts, tiny_sem_seg_cfg

import adarand
from adarand.detection import AdaRandDetectionTrainer, regularizations

pytestmark = pytest.mark.slow

METRICS = ("sem_seg/mIoU", "sem_seg/fwIoU", "sem_seg/mACC", "sem_seg/pACC")
PRIOR = "sem_seg_head.adarand.regularizer.prior."


def _cli(fake_voc, *args):
    env = dict(os.environ, DETECTRON2_DATASETS=fake_voc[0])
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
                           SEM_SEG_CONFIG, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


def _opts(out, method):
    return tiny_opts(out, max_iter=4, **TINY_SEM_SEG, **{"MODEL.ADARAND.METHOD": method,
                                                        "DATASETS.TEST": ("voc_2012_sem_seg_val",),
                                                        "MODEL.ADARAND.ALLOW_MISSING_CLASSES": True})


@pytest.fixture(scope="module")
def runs(fake_voc, tmp_path_factory):
    """FT and AdaRand, 4 iterations each through tools/train_net.py, checkpoints every 2."""
    out = {m: tmp_path_factory.mktemp(m) for m in ("none", "adarand")}
    for method, folder in out.items():
        _cli(fake_voc, *_opts(folder, method))
    return out


def _evaluation(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if "sem_seg/mIoU" in r][-1]


@pytest.mark.parametrize("method", ["none", "adarand"])
def test_train_net_writes_the_segmentation_metrics(runs, method):
    evaluation = _evaluation(runs[method])
    assert all(0.0 <= evaluation[k] <= 100.0 for k in METRICS)


def test_adarand_run_moves_the_prior_from_the_cached_statistics(runs):
    folder = runs["adarand"]
    stats = adarand.ClassStats.load(os.path.join(folder, "adarand_stats_sem_seg.pt"), num_classes=21, feat_dim=32)
    state = torch.load(os.path.join(folder, "model_final.pth"), weights_only=False)["model"]
    mu = state[PRIOR + "mu"]
    assert mu.shape == (21, 32) and int(state[PRIOR + "optimizer.num_steps"]) == 4
    assert stats.count.sum() > 0 and not torch.equal(mu, stats.mean)  # initialised from them, then stepped
    ft = torch.load(os.path.join(runs["none"], "model_final.pth"), weights_only=False)["model"]
    assert not any(k.startswith(PRIOR) for k in ft)  # plain fine-tuning has no prior


def test_resume_restores_the_prior_exactly(runs, fake_voc):
    folder = runs["adarand"]
    saved = torch.load(os.path.join(folder, "model_0000001.pth"), weights_only=False)["model"]
    with open(os.path.join(folder, "last_checkpoint"), "w") as f:
        f.write("model_0000001.pth")
    cfg = tiny_sem_seg_cfg(folder, max_iter=4, **{"MODEL.ADARAND.ALLOW_MISSING_CLASSES": True})
    cfg.freeze()
    trainer = AdaRandDetectionTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    prior = dict(regularizations(trainer.model)[0].regularizer.prior.state_dict())
    for key, value in prior.items():
        assert torch.equal(value, saved["sem_seg_head.adarand.regularizer.prior." + key]), key


def test_eval_only_prints_the_segmentation_metrics(runs, fake_voc, tmp_path):
    log = _cli(fake_voc, "--eval-only", *_opts(tmp_path, "adarand"), "MODEL.WEIGHTS",
               os.path.join(runs["adarand"], "model_final.pth"))
    assert "mIoU" in log and "fwIoU" in log


def test_compute_prior_writes_the_sem_seg_statistics(runs, fake_voc, tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=fake_voc[0])
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "compute_prior.py"), "--config-file",
                           SEM_SEG_CONFIG, "--output", str(tmp_path / "stats.pt"), *_opts(tmp_path, "adarand"),
                           "MODEL.WEIGHTS", os.path.join(runs["adarand"], "model_final.pth")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    stats = adarand.ClassStats.load(str(tmp_path / "stats_sem_seg.pt"), num_classes=21, feat_dim=32)
    assert stats.count.sum() > 0 and "pixels" in proc.stdout

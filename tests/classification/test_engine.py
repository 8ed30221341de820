"""End-to-end runs of the classification trainer on a tiny CNN and a fake ImageFolder tree."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import adarand
from adarand.classification import cli
from adarand_projects.paper import plots, summary
from adarand.classification.config import load_cfg
from adarand.classification.hooks import HookBase
from adarand.classification.trainer import ClassificationTrainer

from fake_trees import make_fake_imagefolder  # noqa: E402  (tests/classification is on sys.path under pytest)
from tiny_runs import NUM_CLASSES, PER_CLASS, tiny_opts  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOLS = os.path.join(ROOT, "tools")


def opts(data_root, out, **extra):
    """The tiny run over 2 epochs of 3 steps, lr x0.1 after epoch 1, a read-back every step."""
    return tiny_opts(data_root, out, **{"SOLVER.EPOCHS": 2, "SOLVER.MILESTONES": "[1]", "LOG_PERIOD": 1, **extra})


def run(data_root, out, resume=False, hooks=(), **extra):
    return cli.train(load_cfg("", opts(data_root, out, **extra)), resume=resume, progress=False,
                        extra_hooks=hooks)


METHODS = [(name, "") for name in adarand.available_regularizers()] + [("none", b) for b in ("l2sp", "delta", "bss")]


@pytest.fixture(scope="module")
def method_runs(data_root, tmp_path_factory):
    """One 2-epoch run per regularizer and baseline; {(reg, baseline): run dir}."""
    base = tmp_path_factory.mktemp("runs")
    dirs = {}
    for reg, baseline in METHODS:
        out = base / f"{reg}{baseline}"
        run(data_root, out, **{"MODEL.ADARAND.METHOD": reg, "BASELINE.METHOD": baseline})
        dirs[(reg, baseline)] = str(out)
    return dirs


@pytest.mark.parametrize("reg,baseline", METHODS)
def test_two_epoch_run_writes_everything(method_runs, reg, baseline):
    out = method_runs[(reg, baseline)]
    for name in ("config.yaml", "last.pth", "best.pth", "metrics.jsonl", "results.json", "features_test.pt"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tensorboard")))
    needs_stats = adarand.build_regularizer(reg, num_classes=NUM_CLASSES, feat_dim=4).needs_stats
    assert os.path.isfile(os.path.join(out, "class_stats.pt")) == needs_stats
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["lr"] == pytest.approx(0.1 * records[0]["lr"])  # x GAMMA at milestone 1
    for key in ("train_loss", "adarand/loss", "val_top1", "train_pairwise_entropy", "train_mean_feature_norm",
                "train_ce_weight_grad_norm", "val_sample_norm", "val_gaussian_mi", "val_ce_feature_grad_norm",
                "val_gaussian_entropy", "epoch_time_s"):
        assert key in records[0] and records[0][key] == records[0][key], key  # present, not NaN
    assert not [k for r in records for k in r if k.startswith("test")]
    assert (records[0]["train_baseline"] > 0) == bool(baseline)
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["dataset"] == "imagefolder" and results["seed"] == 0
    assert 0.0 <= results["test_top1"] <= 1.0 and 0.0 <= results["test_mean_class_acc"] <= 1.0
    assert results["best_epoch"] in (1, 2) and results["selection"] == "best_val_top1"
    assert results["val_top1"] == max(r["val_top1"] for r in records)
    saved = torch.load(os.path.join(out, "features_test.pt"))
    assert saved["features"].shape[0] == NUM_CLASSES * PER_CLASS // 2


class KillAfterFirstEpoch(HookBase):
    """Runs after the checkpointer: the process dies with epoch 1 saved."""

    def after_epoch(self):
        if self.trainer.epoch == 0:
            raise KeyboardInterrupt("simulated kill after epoch 1")


@pytest.mark.parametrize("reg,schedule", [("adarand", "multistep"), ("ptr", "multistep"), ("adarand", "cosine_7_16")])
def test_kill_and_resume_equals_uninterrupted(data_root, tmp_path, reg, schedule):
    extra = {"MODEL.ADARAND.METHOD": reg, "MODEL.ADARAND.PTR_THRESHOLD": 100.0,  # PtR switches on after epoch 1
             "SOLVER.LR_SCHEDULE": schedule, "SOLVER.WARMUP_ITERS": 2 if schedule == "cosine_7_16" else 0}
    _assert_resume_exact(data_root, tmp_path, extra)


@pytest.mark.parametrize("baseline,layers", [("l2sp", "[]"), ("delta", "['2', '5']")])
def test_kill_and_resume_with_a_baseline_equals_uninterrupted(data_root, tmp_path, baseline, layers):
    """L2-SP's starting point and DELTA's frozen network and attention are rebuilt identically on resume."""
    _assert_resume_exact(data_root, tmp_path, {"BASELINE.METHOD": baseline, "BASELINE.DELTA_LAYERS": layers,
                                               "BASELINE.DELTA_ATTENTION_IMAGES": 8})


def _assert_resume_exact(data_root, tmp_path, extra):
    """A run killed after epoch 1 and resumed ends with the weights, regularizer state and results
    of an uninterrupted run."""
    straight = run(data_root, tmp_path / "straight", **extra)
    with pytest.raises(KeyboardInterrupt):
        run(data_root, tmp_path / "resumed", hooks=[KillAfterFirstEpoch()], **extra)
    resumed = run(data_root, tmp_path / "resumed", resume=True, **extra)
    a = torch.load(tmp_path / "straight" / "last.pth", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "last.pth", weights_only=False)
    for part in ("model", "regularizer"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
    assert len(open(tmp_path / "resumed" / "metrics.jsonl").readlines()) == 2
    for key in ("test_top1", "val_top1", "best_epoch"):
        assert straight[key] == resumed[key]


def test_resume_reuses_cached_class_stats(data_root, tmp_path):
    run(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "randreg-cp", "SOLVER.EPOCHS": 1})
    path = tmp_path / "class_stats.pt"
    stats = torch.load(path, weights_only=False)
    os.utime(path, (0, 0))
    run(data_root, tmp_path, resume=True, **{"MODEL.ADARAND.METHOD": "randreg-cp", "SOLVER.EPOCHS": 1})
    assert os.stat(path).st_mtime == 0  # not recomputed
    assert torch.load(path, weights_only=False).keys() == stats.keys()


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_single_process(data_root, tmp_path):
    """2 ranks x 4 images per step == 1 process x 8 images (DistributedSampler, DDP mean gradients).

    BatchNorm is frozen: trainable BN normalises each rank's 4 images on their own (as torchvision's
    reference does without SyncBN), which no single-process run reproduces."""
    extra = {"MODEL.ADARAND.METHOD": "fnp", "INPUT.AUGMENT": False, "DIAGNOSTICS": False, "MODEL.FREEZE_BN": True}
    run(data_root, tmp_path / "single", **extra)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(TOOLS, "train_cls.py"), "--no-progress"] + opts(data_root, tmp_path / "ddp", **extra)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = torch.load(tmp_path / "single" / "last.pth", weights_only=False)
    ddp = torch.load(tmp_path / "ddp" / "last.pth", weights_only=False)
    assert len(ddp["rng"]) == 2
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    results = json.load(open(tmp_path / "ddp" / "results.json"))
    assert results["world_size"] == 2


def test_cli_eval_only_and_errors(method_runs, data_root, tmp_path, capsys):
    out = method_runs[("adarand", "")]
    cli.main(["--eval-only", "--no-progress"] + opts(data_root, out))
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["test_top1"] == json.load(open(os.path.join(out, "results.json")))["test_top1"]
    with pytest.raises(KeyError, match="SOLVER.EPOCHZ"):
        cli.main(opts(data_root, tmp_path) + ["SOLVER.EPOCHZ", "3"])
    missing = tmp_path / "no_such_dataset"
    with pytest.raises(FileNotFoundError, match="no_such_dataset"):
        run(missing, tmp_path / "out")


@pytest.mark.parametrize("flags", [[], ["--no-progress"]])
def test_no_progress_is_one_switch_for_every_bar(data_root, tmp_path, capfd, flags):
    """tools/train_cls.py draws the class-statistics and epoch bars, and --no-progress silences both."""
    cli.main(flags + opts(data_root, tmp_path, **{"SOLVER.EPOCHS": 1, "MODEL.ADARAND.METHOD": "adarand"}))
    err = capfd.readouterr().err
    drawn = [bar for bar in ("class statistics", "epoch 1/1") if bar in err]
    assert drawn == ([] if flags else ["class statistics", "epoch 1/1"])


def test_plots_and_summary_from_real_runs(method_runs, tmp_path):
    runs = [method_runs[("none", "")], method_runs[("adarand", "")], method_runs[("ptr", "")]]
    pngs = plots.main(runs + ["--out-dir", str(tmp_path), "--gaussian"])
    for png in pngs:
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    table = summary.main(list(method_runs.values()) + ["--out", str(tmp_path / "table.md")])
    lines = table.strip().splitlines()
    assert "imagefolder" in lines[0] and len(lines) == 2 + len(METHODS)
    ft = json.load(open(os.path.join(method_runs[("none", "")], "results.json")))["test_top1"]
    assert lines[2].startswith("| ft | ") and f"{100 * ft:.2f} ± 0.00 (1)" in lines[2]


def _tensorboard_tags(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(run_dir, "tensorboard"))
    events.Reload()
    return events.Tags()["scalars"]


def _count_test_evaluations(monkeypatch):
    """Wrap the trainer's ``test``; returns the list of evaluated splits ("val" | "test")."""
    seen, original = [], ClassificationTrainer.test

    def counting(cls, cfg, model, loader, *args, **kwargs):
        seen.append("test" if loader.dataset.__class__.__name__ != "TransformedSubset" else "val")
        return original(cfg, model, loader, *args, **kwargs)

    monkeypatch.setattr(ClassificationTrainer, "test", classmethod(counting))
    return seen


@pytest.mark.parametrize("val_fraction", [0.1, 0.0])
def test_small_subset_never_selects_on_the_test_split(tmp_path, monkeypatch, val_fraction):
    """4 classes x 4 images: 0.1 holds out round(1.6) = 2 images (per-class rounding gave none);
    no epoch record carries a test metric, and the test split is evaluated exactly once."""
    root = make_fake_imagefolder(tmp_path / "tree", num_classes=4, per_class=4, image_size=16)
    evaluated = _count_test_evaluations(monkeypatch)
    out = tmp_path / "run"
    results = run(root, out, **{"DATASET.VAL_FRACTION": val_fraction, "MODEL.ADARAND.METHOD": "adarand",
                                "SOLVER.EPOCHS": 3, "SOLVER.BATCH_SIZE": 4})
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert len(records) == 3 and evaluated.count("test") == 1 and evaluated[-1] == "test"
    keys = {k for r in records for k in r} | set(_tensorboard_tags(str(out)))
    assert not [k for k in keys if "test" in k], keys
    assert all("train_pairwise_entropy" in r for r in records)
    if val_fraction:
        assert evaluated.count("val") == 3 and all("val_top1" in r for r in records)
        assert results["selection"] == "best_val_top1" and results["val_top1"] is not None
    else:
        assert evaluated == ["test"] and not [k for k in keys if k.startswith("val")]
        assert results["selection"] == "last_epoch" and results["best_epoch"] == 3 and results["val_top1"] is None
    assert json.load(open(out / "results.json"))["selection"] == results["selection"]


def test_default_train_loader_drops_an_incomplete_last_batch():
    """The official loaders' drop_last=True is the default, the CPU demo's config included: a last
    batch of 3 images (11 = 2 x 4 + 3) is dropped, each epoch; DROP_LAST False keeps it."""
    config = os.path.join(ROOT, "configs", "classification", "digits_mobilenetv2_adarand.yaml")
    dataset = torch.utils.data.TensorDataset(torch.arange(11))
    for config_file, drop, sizes in (("", [], [4, 4]), (config, [], [4, 4]),
                                     (config, ["DATALOADER.DROP_LAST", "False"], [4, 4, 3])):
        cfg = load_cfg(config_file, ["SOLVER.BATCH_SIZE", "4", "DATALOADER.NUM_WORKERS", "0", *drop])
        loader = ClassificationTrainer.build_train_loader(cfg, dataset, torch.Generator().manual_seed(0))
        assert [len(images) for images, in loader] == sizes


def test_official_per_iteration_schedule_with_warmup(data_root, tmp_path):
    """cosine_7_16 steps every iteration: after 2 epochs of 3 steps with 2 warm-up steps the
    lr is base * cos(pi 7/16 (6 - 2) / (6 - 2)); the first epoch starts at 0 (warm-up)."""
    run(data_root, tmp_path, **{"SOLVER.LR_SCHEDULE": "cosine_7_16", "SOLVER.WARMUP_ITERS": 2,
                                "SOLVER.OPTIMIZER": "adamw", "SOLVER.BASE_LR": 1e-3, "DATALOADER.DROP_LAST": True})
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert records[0]["lr"] == 0.0  # lr of the first iteration: t / WARMUP_ITERS with t = 0
    ckpt = torch.load(tmp_path / "last.pth", weights_only=False)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * math.cos(math.pi * 7 / 16))
    with pytest.raises(ValueError, match="WARMUP_ITERS"):
        load_cfg("", ["SOLVER.WARMUP_ITERS", "5"])  # warm-up only with cosine_7_16

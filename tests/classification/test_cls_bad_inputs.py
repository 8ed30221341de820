"""Bad inputs and faults through tools/train_cls.py (issue 10, items 1-4 and 9): each case names
what it feeds in and what must come out."""
import errno
import logging
import os
import subprocess
import sys

import pytest
import torch

from adarand import files
from adarand.files import UnsafeFileError
from adarand.runs.output_dir import OutputDirInUse

from adarand.classification import cli as train_cls
from adarand.classification.trainer import ClassificationTrainer

from fake_trees import make_fake_imagefolder  # noqa: E402  (tests/classification is on sys.path under pytest)
from tiny_runs import NUM_CLASSES, PER_CLASS, tiny_opts  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TRAIN_CLS = os.path.join(ROOT, "tools", "train_cls.py")
from faults import hold_lock, write_payload_checkpoint  # noqa: E402


def opts(data_root, out, **extra):
    """The tiny run over 1 epoch without diagnostics or progress bars."""
    return ["--no-progress"] + tiny_opts(data_root, out, **{"SOLVER.EPOCHS": 1, "DIAGNOSTICS": False, **extra})


def cli(args):
    """tools/train_cls.py in its own process: (exit code, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, TRAIN_CLS, *args], env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def finished_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    train_cls.main(opts(data_root, out, **{"MODEL.ADARAND.METHOD": "adarand"}))
    return out


# ------------------------------------------------------------------ 1. nothing loaded executes

def test_payload_in_last_pth_is_refused_on_resume(data_root, tmp_path):
    marker = tmp_path / "marker"
    write_payload_checkpoint(tmp_path / "last.pth", marker)
    (tmp_path / "config.yaml").write_text(train_cls.load_cfg("", opts(data_root, tmp_path)[1:]).dump())  # the run's
    with pytest.raises(UnsafeFileError, match="last.pth"):
        train_cls.main(["--resume"] + opts(data_root, tmp_path))
    assert not marker.exists()


def test_payload_in_eval_weights_is_refused(data_root, tmp_path):
    marker = tmp_path / "marker"
    write_payload_checkpoint(tmp_path / "file.pth", marker)
    with pytest.raises(UnsafeFileError, match="file.pth"):
        train_cls.main(["--eval-only"] + opts(data_root, tmp_path / "out", **{"TEST.WEIGHTS": tmp_path / "file.pth"}))
    assert not marker.exists()


def test_checkpoint_rng_states_load_with_weights_only(finished_run):
    ckpt = torch.load(finished_run / "last.pth", weights_only=True)  # raises if anything needs unpickling code
    assert set(ckpt["rng"][0]) == {"python", "numpy", "torch", "cuda", "loader", "noise"}


# ------------------------------------------------------------------ 2. divergence stops the run

@pytest.mark.parametrize("batch_size", [24, 4])  # one step per epoch (the whole split), and six
@pytest.mark.slow
def test_divergence_exits_non_zero_and_saves_nothing_non_finite(data_root, tmp_path, batch_size):
    code, err = cli(opts(data_root, tmp_path, **{"SOLVER.BASE_LR": 1e12, "SOLVER.EPOCHS": 3,
                                                 "SOLVER.BATCH_SIZE": batch_size, "MODEL.ADARAND.METHOD": "adarand"}))
    assert code != 0 and "FloatingPointError: training diverged (epoch " in err, err[-2000:]
    assert not (tmp_path / "results.json").exists()
    for name in ("last.pth", "best.pth"):
        if (tmp_path / name).exists():
            state = torch.load(tmp_path / name, weights_only=True)["model"]
            assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), name


def test_non_finite_loss_term_is_named_with_its_iteration(data_root, tmp_path, monkeypatch):
    import adarand

    real_forward = adarand.AdaRand.forward
    calls = []

    def forward(self, *args, **kwargs):
        loss = real_forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # the regularizer's value of the second step overflows (a constant: finite gradients)
            loss = loss + torch.full_like(loss, float("inf"))
        return loss

    monkeypatch.setattr(adarand.AdaRand, "forward", forward)
    with pytest.raises(FloatingPointError, match="epoch 1.*regularizer first at iteration 1"):
        train_cls.main(opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "adarand", "LOG_PERIOD": 100}))
    assert not (tmp_path / "last.pth").exists() and not (tmp_path / "best.pth").exists()


def test_non_finite_prior_is_never_saved(data_root, tmp_path, monkeypatch):
    real_step = ClassificationTrainer.prior_step

    def step(self, *args):
        real_step(self, *args)
        with torch.no_grad():
            self.regularizer.prior.mu[0, 0] = float("nan")  # the prior update of the last step went wrong

    monkeypatch.setattr(ClassificationTrainer, "prior_step", step)
    with pytest.raises(FloatingPointError, match="epoch 1.*'prior.mu'"):
        train_cls.main(opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "adarand", "SOLVER.BATCH_SIZE": 24}))
    assert not (tmp_path / "last.pth").exists() and not (tmp_path / "best.pth").exists()


# ------------------------------------------------------------------ 3. statistics identity

@pytest.mark.parametrize("change", [{"SEED": 1}, {"DATASET.FRACTION": 0.5}, {"DATASET.SEED": 3},
                                    {"INPUT.SIZE": 12}])
def test_statistics_of_another_setup_are_recomputed(data_root, finished_run, tmp_path, caplog, change):
    first = torch.load(finished_run / "class_stats.pt", weights_only=True)
    (tmp_path / "class_stats.pt").write_bytes((finished_run / "class_stats.pt").read_bytes())
    with caplog.at_level(logging.INFO, logger="adarand.runs.stats_cache"):
        train_cls.main(opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "adarand", **change}))
    assert "produced by another set-up" in caplog.text and "recomputing" in caplog.text
    second = torch.load(tmp_path / "class_stats.pt", weights_only=True)
    assert second["meta"]["identity"] != first["meta"]["identity"]
    assert not torch.equal(second["mean"], first["mean"])


def test_statistics_of_the_same_setup_are_reused(data_root, finished_run, tmp_path, caplog):
    (tmp_path / "class_stats.pt").write_bytes((finished_run / "class_stats.pt").read_bytes())
    os.utime(tmp_path / "class_stats.pt", (0, 0))
    with caplog.at_level(logging.INFO, logger="adarand.runs.stats_cache"):
        train_cls.main(opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "adarand"}))
    assert "reusing" in caplog.text and os.stat(tmp_path / "class_stats.pt").st_mtime == 0


# ------------------------------------------------------------------ 4. one output directory, one run

def test_new_run_refuses_a_directory_holding_another_run(data_root, finished_run):
    before = (finished_run / "last.pth").read_bytes()
    with pytest.raises(OutputDirInUse, match="--resume.*new OUTPUT_DIR"):
        train_cls.main(opts(data_root, finished_run, **{"MODEL.ADARAND.METHOD": "adarand"}))
    assert (finished_run / "last.pth").read_bytes() == before


@pytest.mark.slow
def test_finished_run_gives_the_directory_back(finished_run):
    holder = hold_lock(finished_run)  # would fail if this process still held the lock
    holder.stdin.close()
    assert holder.wait(timeout=60) == 0


@pytest.mark.slow
def test_second_process_is_kept_out_of_a_locked_directory(data_root, tmp_path):
    holder = hold_lock(tmp_path)
    try:
        code, err = cli(opts(data_root, tmp_path))
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert code != 0 and "in use by another process" in err, err[-2000:]
    assert not (tmp_path / "config.yaml").exists()


# ------------------------------------------------------------------ 9. errors name files

def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_checkpoint_is_named_on_resume(data_root, finished_run, tmp_path):
    for name in ("last.pth", "class_stats.pt", "config.yaml"):
        (tmp_path / name).write_bytes((finished_run / name).read_bytes())
    _truncate(tmp_path / "last.pth")
    with pytest.raises(ValueError, match="cannot read checkpoint .*last.pth: truncated or corrupt"):
        train_cls.main(["--resume"] + opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "adarand"}))


def test_non_finite_prior_in_last_pth_is_named_on_resume(data_root, finished_run, tmp_path):
    """Issue 28, item 12: a prior with NaN in last.pth is refused on --resume, naming the file (it was accepted,
    and two steps later the run stopped blaming the features)."""
    from adarand.prior import NonFinitePriorError

    for name in ("class_stats.pt", "config.yaml"):
        (tmp_path / name).write_bytes((finished_run / name).read_bytes())
    ckpt = torch.load(finished_run / "last.pth", weights_only=True)
    ckpt["regularizer"]["prior.mu"][0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "last.pth")
    with pytest.raises(NonFinitePriorError, match=r"last.pth: the prior state prior.mu holds 1 NaN/Inf"):
        train_cls.main(["--resume"] + opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "adarand",
                                                                   "SOLVER.EPOCHS": 2}))


def test_truncated_statistics_cache_is_named(data_root, finished_run, tmp_path):
    (tmp_path / "class_stats.pt").write_bytes((finished_run / "class_stats.pt").read_bytes())
    _truncate(tmp_path / "class_stats.pt")
    with pytest.raises(ValueError, match="class statistics file .*class_stats.pt: truncated or corrupt"):
        train_cls.main(opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "adarand"}))


@pytest.mark.parametrize("split", ["train", "test"])
def test_truncated_image_is_named(data_root, tmp_path, split):
    tree = make_fake_imagefolder(tmp_path / "tree", NUM_CLASSES, PER_CLASS, image_size=16)
    broken = os.path.join(tree, split, "class_1", sorted(os.listdir(os.path.join(tree, split, "class_1")))[0])
    with open(broken, "r+b") as f:
        f.truncate(os.path.getsize(broken) // 2)
    with pytest.raises(OSError, match=f"cannot read {broken} "):
        train_cls.main(opts(tree, tmp_path / "out"))


@pytest.mark.parametrize("method,target", [("none", "best.pth"), ("adarand", "class_stats.pt")])
def test_full_disk_names_the_file_and_leaves_no_temporary(data_root, tmp_path, monkeypatch, method, target):
    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.torch, "save", full_disk)
    with pytest.raises(OSError, match=f"could not write .*{target}: No space left on device"):
        train_cls.main(opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": method}))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert not (tmp_path / target).exists()



# ------------------------------------------------------------------ issue 20, item 10: MODEL.WEIGHTS named

@pytest.mark.parametrize("content,message", [
    ({"conv.weight": torch.zeros(2)}, r"MODEL.WEIGHTS '.*w.pth' does not fit the mobilenet_v2 backbone: missing keys "
                                      r"\['features.0.0.weight'.*\(\d+\), unexpected keys \['conv.weight'\] \(1\)"),
    (b"not a torch file", r"cannot read weights file \(MODEL.WEIGHTS\) .*w.pth: truncated or corrupt"),
])
def test_unusable_model_weights_name_the_key_and_the_file(data_root, tmp_path, content, message):
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises((RuntimeError, ValueError), match=message):
        train_cls.main(opts(data_root, tmp_path / "out", **{"MODEL.BACKBONE": "mobilenet_v2", "MODEL.WEIGHTS": path}))


def test_huge_prior_lr_is_refused_naming_the_key(data_root, tmp_path):
    """Issue 20, item 10: PRIOR_LR 1e38 ended in "value cannot be converted to type float without overflow"."""
    with pytest.raises(ValueError, match=r"config key MODEL.ADARAND.PRIOR_LR = 1e\+38; expected in \(0, 1\]"):
        train_cls.main(opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "adarand", "MODEL.ADARAND.PRIOR_LR": 1e38}))


def test_lambda_driven_divergence_names_the_term_and_its_keys(data_root, tmp_path):
    """Issue 20, item 10: LAMBDA 1e30 makes the regularizer huge (finite) and the weights NaN a step
    later: the error points at MODEL.ADARAND.LAMBDA, not at the learning rate alone."""
    with pytest.raises(FloatingPointError, match=r"weight .* is NaN/Inf.*at iteration 0, the last one recorded "
                                                 r"\(ce [0-9.]+, regularizer [0-9.]+e\+\d+, baseline 0\), regularizer "
                                                 r"was the largest term, lower what scales it: MODEL.ADARAND.LAMBDA"):
        train_cls.main(opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "fnp", "MODEL.ADARAND.LAMBDA": 1e30}))


def test_first_non_finite_term_is_named_with_its_keys():
    """The term that went non-finite first gets the advice (the total, with no keys of its own, none)."""
    from adarand.classification.steps import new_guard

    guard = new_guard("cpu")
    one, inf = torch.tensor(1.0), torch.tensor(float("inf"))
    guard.update(0, one, one, one, one)
    guard.update(1, inf, one, inf, one)
    guard.update(2, inf, inf, inf, one)
    with pytest.raises(FloatingPointError, match=r"ce first at iteration 2, regularizer first at iteration 1\. .*; "
                                                 r"regularizer went non-finite first, lower what scales it: "
                                                 r"MODEL.ADARAND.LAMBDA \(its weight\), SOLVER.BASE_LR\.$"):
        guard.check("epoch 1")


def test_negative_std_in_statistics_file_names_the_file(data_root, finished_run, tmp_path):
    """Issue 20, item 10: the error came from the prior ("std must be non-negative"), naming no file."""
    data = torch.load(finished_run / "class_stats.pt", weights_only=True)
    data["std"][0, 0] = -1.0
    torch.save(data, tmp_path / "class_stats.pt")
    with pytest.raises(ValueError, match=r"class_stats.pt: class-statistics file with a negative std"):
        train_cls.main(opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "adarand"}))


# ------------------------------------------------------------------ issue 28, item 16: TEST.WEIGHTS named

def test_eval_weights_of_another_class_count_name_the_file_and_the_shapes(data_root, tmp_path):
    """torch's "size mismatch for ..." named neither the file nor the class counts."""
    cfg = train_cls.load_cfg("", opts(data_root, tmp_path)[1:])
    other = ClassificationTrainer.build_model(cfg, NUM_CLASSES + 2)
    torch.save({"model": other.state_dict()}, tmp_path / "other.pth")
    head = [k for k, v in other.state_dict().items() if v.shape[:1] == (NUM_CLASSES + 2,)]
    with pytest.raises(RuntimeError, match=rf"TEST.WEIGHTS '.*other.pth' does not fit the tiny_cnn model of "
                                           rf"imagefolder \({NUM_CLASSES} classes\): .*other shapes \['{head[0]} "
                                           rf"\({NUM_CLASSES + 2}, .*\) vs \({NUM_CLASSES}, .*this DATASET"):
        train_cls.main(["--eval-only"] + opts(data_root, tmp_path / "out", **{"TEST.WEIGHTS": tmp_path / "other.pth"}))

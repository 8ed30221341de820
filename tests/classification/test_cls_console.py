"""The classification CLI's console (issue 30, item 7): one line per epoch, log.txt, the progress bar's
running means, the statistics pass announced; a user error is one ``error:`` line and exit status 2, a bug
keeps its traceback."""
import logging
import os
import re
import subprocess
import sys

import pytest

from adarand.classification import cli
from adarand.classification.hooks import TrainingMetrics
from adarand.classification.trainer import ClassificationTrainer

from tiny_runs import tiny_opts  # noqa: E402  (tests/classification is on sys.path under pytest)

TRAIN_CLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "train_cls.py")
ADARAND = {"MODEL.ADARAND.METHOD": "adarand", "DIAGNOSTICS": False}


def argv(data_root, out, **values):
    return ["--no-progress"] + tiny_opts(data_root, out, **{"SOLVER.EPOCHS": 1, **ADARAND, **values})


def console(args, capsys):
    """``console_main(args)`` in this process: (exit status, stderr lines)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.console_main(args)
    return exit_info.value.code, capsys.readouterr().err.splitlines()


@pytest.mark.slow
def test_unknown_key_exits_2_with_one_line_and_no_traceback(data_root, tmp_path):
    """The acceptance line: tools/train_cls.py ... FOO.BAR 1; --debug shows the traceback."""
    command = [sys.executable, TRAIN_CLS, *argv(data_root, tmp_path), "FOO.BAR", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: command-line override: Non-existent key: FOO.BAR"], proc.stderr
    proc = subprocess.run(command[:2] + ["--debug"] + command[2:], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "KeyError" in proc.stderr


@pytest.fixture(scope="module")
def finished_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    cli.main(argv(data_root, out))
    return out


@pytest.mark.parametrize("case,message", [
    ("bad value", r"config key SOLVER.OPTIMIZER = 'adamz'; expected one of"),
    ("missing data", r"dataset 'imagefolder' not found under '.*no_data'"),
    ("missing weights", r"MODEL.WEIGHTS = '.*none.pth': no such file"),
    ("bad backbone", r"unknown backbone 'resnet7'"),
    ("directory in use", r"OUTPUT_DIR .* already holds a run \(last.pth, best.pth\): pass --resume"),
    ("changed config on resume", r"refusing to resume .* with a different experiment .*SEED: 0 -> 1"),
    ("option after the overrides", r"--resume after the KEY VALUE overrides is read as one of them: put options "
                                   r"before the KEY VALUE overrides"),
])
def test_user_error_is_one_line_and_status_2(data_root, finished_run, tmp_path, capsys, case, message):
    args = {
        "bad value": argv(data_root, tmp_path, **{"SOLVER.OPTIMIZER": "adamz"}),
        "missing data": argv(tmp_path / "no_data", tmp_path),
        "missing weights": argv(data_root, tmp_path, **{"MODEL.BACKBONE": "resnet18",
                                                        "MODEL.WEIGHTS": tmp_path / "none.pth"}),
        "bad backbone": argv(data_root, tmp_path, **{"MODEL.BACKBONE": "resnet7"}),
        "directory in use": argv(data_root, finished_run),
        "changed config on resume": ["--resume"] + argv(data_root, finished_run, SEED=1),
        "option after the overrides": argv(data_root, tmp_path) + ["--resume"],
    }[case]
    code, lines = console(args, capsys)
    assert code == 2
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), lines
    assert re.search(message, errors[0]), errors[0]
    assert not [line for line in lines if "Traceback" in line]


def test_debug_raises_the_user_error(data_root, tmp_path):
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        cli.console_main(["--debug"] + argv(data_root, tmp_path, **{"SOLVER.OPTIMIZER": "adamz"}))


def test_a_bug_keeps_its_traceback(data_root, tmp_path, monkeypatch):
    """A TypeError while setting up, and a ValueError once training runs, are not the user's input."""
    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(ClassificationTrainer, "build_optimizer", classmethod(broken))
    with pytest.raises(TypeError, match="a bug"):
        cli.console_main(argv(data_root, tmp_path / "a"))
    monkeypatch.undo()

    def step(self, *args):
        raise ValueError("a bug in a step")

    monkeypatch.setattr(ClassificationTrainer, "prior_step", step)
    with pytest.raises(ValueError, match="a bug in a step"):
        cli.console_main(argv(data_root, tmp_path / "b"))


def test_epoch_lines_and_log_txt(data_root, tmp_path, caplog, monkeypatch):
    """Each epoch is one line (train loss, its terms, val top-1, time), the statistics pass is announced;
    log.txt holds the same lines, continues on --resume and ends with the error that stopped a run."""
    with caplog.at_level(logging.INFO):
        cli.main(argv(data_root, tmp_path, **{"SOLVER.EPOCHS": 2}))
    console_lines = [r.getMessage() for r in caplog.records]
    stats = "class statistics of 24 training images (3 classes) from the pre-trained tiny_cnn"
    epoch = (r"epoch 2/2: train loss \d\.\d{4} \(ce \d\.\d{4}, regularizer [0-9.e-]+\), val top-1 \d+\.\d\d %, "
             r"lr [0-9.e-]+, \d+\.\d s")
    assert stats in console_lines
    assert [m for m in console_lines if re.fullmatch(epoch, m)], console_lines
    log = (tmp_path / "log.txt").read_text()
    for message in console_lines:
        if message.startswith(("class statistics", "epoch ", "test top-1")):
            assert f"INFO: {message}\n" in log
    assert log.index(stats) < log.index("epoch 1/2:") < log.index("epoch 2/2:") < log.index("test top-1")

    cli.main(["--resume"] + argv(data_root, tmp_path, **{"SOLVER.EPOCHS": 3}))
    log = (tmp_path / "log.txt").read_text()
    assert log.index("epoch 2/2:") < log.index("epoch 3/3:")

    def step(self, *args):
        raise RuntimeError("the step broke")

    monkeypatch.setattr(ClassificationTrainer, "prior_step", step)
    with pytest.raises(RuntimeError):
        cli.main(["--resume"] + argv(data_root, tmp_path, **{"SOLVER.EPOCHS": 4}))
    tail = (tmp_path / "log.txt").read_text().split("epoch 3/3:")[1]
    assert "ERROR: run stopped: RuntimeError: the step broke\nTraceback" in tail


def test_progress_bar_shows_the_running_means(data_root, tmp_path):
    """On the LOG_PERIOD read-backs only; at the last step of the epoch they are the epoch's means."""
    from adarand.classification.config import load_cfg

    cfg = load_cfg("", tiny_opts(data_root, tmp_path, **{**ADARAND, "SOLVER.EPOCHS": 1, "LOG_PERIOD": 1}))
    trainer = ClassificationTrainer(cfg, progress=True)
    trainer.resume_or_load(resume=False)
    trainer.train()
    bar = next(h for h in trainer._hooks if isinstance(h, TrainingMetrics)).bar
    record = trainer.storage.history[-1]
    assert bar.postfix == (f"loss={record['train_loss']:.3f}, ce={record['train_ce']:.3f}, "
                           f"reg={record['adarand/loss']:.4g}, acc={record['train_top1']:.3f}")
